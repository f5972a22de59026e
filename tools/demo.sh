#!/usr/bin/env bash
# The main job: train wsnn on the embedded FashionTags dataset, both protocols,
# on the CPU; sets itself up first. Extra arguments go to wsnn.train
# (they override flags/fashion_tags.cfg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m wsnn.train --flagfile=flags/fashion_tags.cfg "$@"
