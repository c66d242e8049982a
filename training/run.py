#!/usr/bin/env python
"""`hf-lfi train` from a clone of the repository: `accelerate launch training/run.py --config tiny_smoke [flags]`.
The recipe is package code (`hf_lfi.recipe`); see `hf-lfi train --help`."""

import sys

from hf_lfi.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
