"""Reproduce the paper's comparisons (paper.md section 4) on image-classification datasets with masks: the transfer
study (benchmarks/transfer_study.py: its runs, budgets, seeds, records and report) restricted to the rows the paper's
tables have.

- Table 1: a ViT pretrained on other data (benchmarks/build_pretraining_set.py), fine-tuned, vs converted to an I-ViT
  trained with its backbone frozen (the paper's protocol).
- Table 2: ViT vs I-ViT from scratch, and both protocols on 10 % of the training data.
- Table 3: the frozen I-ViT without the alignment (interaction queries + gate), with the alignment on the original
  queries, without the gate, and full.
- Fig. 3 (validation accuracy against steps), Fig. 6 (closeness of C_VFM, C_AGT and the teacher to the masks per
  layer), Fig. 11 (gates per layer).

transfer_study.py runs these rows and more: the fair baselines (the frozen ViT + head, the I-ViT fine-tuned with
guidance), the alignment's weight and layers, the teacher-quality curve.

    python benchmarks/build_pretraining_set.py --emoji-root package --out data/emoji-pretrain \\
        --exclude-objects-of ../shared/data/emoji-shift ../shared/data/emoji-noshortcut    # once (see its docstring)
    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --out results/emoji-shift
    python benchmarks/reproduce.py --data ../shared/data/emoji-noshortcut ../shared/data/emoji-shift --out results/both
    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --teacher-maps PATH_OR_HUB_ID   # LLaVA maps
    python benchmarks/reproduce.py --data ../shared/data/emoji-shift --out /tmp/quick --quick        # a smoke test

Every flag of transfer_study.py applies (`--seeds`, `--ratios`, `--ladder`, `--pretrain-steps`, `--report-only`,
...); only the defaults differ: the paper's rows, emoji-shift, results/emoji-shift. The tables are the study's report
(transfer_report.py): `python benchmarks/reproduce.py --report-only` rebuilds them from the finished runs, and
`python benchmarks/transfer_report.py` gives the same tables from the full study's runs (results/transfer-study).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transfer_study  # noqa: E402

PAPER_ROWS = [
    "vit_finetune",
    "ivit",
    "ivit_no_alignment",
    "ivit_original_queries",
    "ivit_no_gate",
    "vit_scratch",
    "ivit_scratch",
]
DATA = str(transfer_study.ROOT.parent / "shared" / "data" / "emoji-shift")


def main(argv: list[str] | None = None) -> str | None:
    return transfer_study.main(argv, rows=PAPER_ROWS, data=[DATA], out="results/emoji-shift")


if __name__ == "__main__":
    main()
