"""`python -m hf_lfi.recipe ...` = `hf-lfi train ...` (e.g. `accelerate launch -m hf_lfi.recipe --config tiny_smoke`)."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
