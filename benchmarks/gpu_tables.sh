#!/usr/bin/env bash
# Every accelerator table in one run (sized to stay under 8 minutes on one H100; not yet run on one): fit speed up to B = 65,536 in float32 and
# float64 with the convergence check, then the bootstrap timing. Results land in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/fit_speed.py --batches 1 1024 16384 65536 --check 16 --dtypes float32 float64
python benchmarks/bootstrap_speed.py --resamples 1000 --starts 8 --dtype float32
