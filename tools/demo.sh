#!/usr/bin/env bash
# The main job: train wsnn on the embedded FashionTags dataset, both protocols,
# on the CPU; sets itself up first. The small CNN's pretrained backbone
# (FashionTags' stand-in for ImageNet weights, docs/fashion_tags.md) is made
# first; it is cached, so a second demo run skips it. Extra arguments go to
# wsnn.train (they override flags/fashion_tags.cfg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/python -m wsnn.pretrain --out=runs/pretrained/small_cnn_fashion_mnist.npz
exec .venv/bin/python -m wsnn.train --flagfile=flags/fashion_tags.cfg "$@"
