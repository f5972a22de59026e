#!/usr/bin/env bash
# The whole test suite; sets itself up first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q tests "$@"
