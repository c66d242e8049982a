"""`python -m hf_lfi.recipe ...` = `hf-lfi train ...` (e.g. `accelerate launch -m hf_lfi.recipe --config tiny_smoke`)."""

from .run import main

main()
