#!/usr/bin/env bash
# The GPU path at the paper's settings on generated data (tools/gpu_check.py); prints JSON.
# Run `bash tools/setup.sh` once first. Arguments go to tools/gpu_check.py (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tools/gpu_check.py "$@"
