#!/usr/bin/env bash
# Sets up everything wsnn needs on a Debian machine, idempotently:
#   1. Debian data packages: WordNet 3.0 and Fashion-MNIST (apt-get; root or sudo);
#   2. a virtualenv in .venv with wsnn and its test tools (pip, editable install).
# Re-running it does only what is missing. PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

packages="wordnet-base wordnet-sense-index dataset-fashion-mnist"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing Debian packages:$missing" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.wsnn-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "setup: installing wsnn and its dependencies into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  touch "$stamp"
fi
