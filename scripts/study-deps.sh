#!/bin/sh
# Installs what `keel train` and `keel study` need, only what is missing: OpenBLAS (CBLAS) for the
# matrix products and gnuplot (no X) for the report's plots. Debian's apt-get, as root or via sudo.
# Usage: scripts/study-deps.sh
set -eu
missing=""
dpkg -s libopenblas-dev >/dev/null 2>&1 || missing="$missing libopenblas-dev"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
[ -z "$missing" ] && exit 0
echo "study-deps: installing:$missing"
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
