#!/usr/bin/env bash
# Every data-diversity figure, one after another (~90 min on 2 idle cores; per-figure times are in
# each script's docstring). Resumable: a figure already saved with the same settings is skipped,
# so rerun this after a crash or Ctrl-C. Then: python table.py > table.md
set -euo pipefail
cd "$(dirname "$0")"
python parity.py                                  # all parity figures, 16 seeds, ~4 min
python icl.py --only fig1                         # d = 10, 8 seeds, ~25 min
python facts.py                                   # 8 seeds, ~15 min
python icl.py --only fig2,fig3,fig7               # d = 5, 8 seeds, ~25 min
python icl.py --only fig6,fig5,fig12              # d = 5, 8 seeds, ~20 min
python table.py > table.md
