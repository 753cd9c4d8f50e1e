#!/bin/sh
# Installs the Python packages keel's Python tests need, only those that are missing:
# numpy, pytest, hypothesis, torch (the current release from PyPI: large, a few GB, installed
# once per machine and reused), ninja (keel.torch compiles its operators with it), transformers
# (model classes built from configs, random weights) and expecttest (PyTorch's OpInfo samples).
# Usage: scripts/ensure-python-deps.sh [python]
set -eu
py=${1:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv
    py=python3
fi
missing=""
for mod in numpy pytest hypothesis torch ninja transformers expecttest; do
    "$py" -c "import $mod" >/dev/null 2>&1 || missing="$missing $mod"
done
[ -z "$missing" ] && exit 0
echo "ensure-python-deps: installing:$missing"
# Debian's system Python refuses pip installs outside a venv unless told otherwise.
"$py" -m pip install --quiet $missing 2>/dev/null || "$py" -m pip install --quiet --break-system-packages $missing
