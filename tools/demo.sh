#!/usr/bin/env bash
# The main job on the embedded FashionTags dataset; sets itself up first.
# Extra arguments go to wsnn.prepare (e.g. --num_images=25000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m wsnn.prepare --source=fashion_tags --workdir=runs/fashion_tags "$@"
