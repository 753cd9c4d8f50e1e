#!/bin/sh
# keel and oneDNN 3.2 (PyPI wheels) LayerNorm timed in ONE process, in turns (interleaved_bench.c):
# the keel / oneDNN ratios come from medians of the same rounds, so a load that comes and goes
# (other builds on the machine) weighs on both libraries alike.
#
# Usage: sh bench/peers/interleaved.sh THREADS [--quick]
#   THREADS  keel's context and oneDNN's OpenMP runtime get this many threads (0 = all cores)
#   --quick  only 4096x768 and 256x1024
#
# Finds or installs oneDNN 3.2 as run.sh does (onednn3.sh), builds build-peers/interleaved_bench
# against it and keel's shared library ($KEEL_BUILD/libkeel.so, default build/: `make build`
# makes it), runs it and prints its Markdown table on stdout:
#   | op | dtype | rows x dim | threads | keel us | oneDNN 3.2 us | keel / oneDNN | keel check |
#   oneDNN check |
# If oneDNN 3.2 or libkeel.so is missing or the program does not build, the table has one row
# per op saying why, and the exit status is 0 (make bench goes on); 1 if the program failed.
# Environment: PYTHON (default python3), CC (default cc), KEEL_BUILD.
set -u

usage() {
    echo "usage: sh bench/peers/interleaved.sh THREADS [--quick]" >&2
    exit 2
}

# THREADS first, then --quick or nothing (as interleaved_bench takes them)
[ $# = 1 ] || [ $# = 2 ] || usage
threads=$1 quick=${2:-}
case "$threads" in *[!0-9]* | "") usage ;; esac
[ -z "$quick" ] || [ "$quick" = --quick ] || usage
[ "$threads" -gt 0 ] || threads=$(nproc)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
keel_build=$(cd "$root" && cd "${KEEL_BUILD:-build}" 2>/dev/null && pwd) || keel_build="${KEEL_BUILD:-build}"
bin="$root/build-peers/interleaved_bench"
py=${PYTHON:-python3}
cc=${CC:-cc}
export OMP_NUM_THREADS="$threads"
# libgomp's threads spin after each parallel region by default; with two libraries called in
# turns, oneDNN's spinning threads take the cores keel's threads (which sleep between calls)
# need, and on a loaded machine they stall oneDNN's own next region too (measured, 2 threads on
# 2 loaded cores: oneDNN's times stuck at 8 or 24 ms whatever the size). Passive waiting makes
# both libraries wait the same way; a caller may still set OMP_WAIT_POLICY itself.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

log() { echo "[interleaved] $*" >&2; }
# shellcheck source=bench/peers/onednn3.sh
. "$here/onednn3.sh"

# the table's rows when the program cannot run
not_run() {
    echo "| op | dtype | rows x dim | threads | keel us | oneDNN 3.2 us | keel / oneDNN | keel check | oneDNN check |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for op in "layernorm fwd" "layernorm bwd" "rmsnorm fwd" "rmsnorm bwd"; do
        echo "| $op | f32, bf16 | all | $threads | - | - | - | not run | not run: $1 |"
    done
    log "not run: $1"
    exit 0
}

[ -f "$keel_build/libkeel.so" ] || not_run "no libkeel.so in $keel_build (make build, or set KEEL_BUILD)"
dnnl3_setup || not_run "$dnnl3_missing"
dnnl3_build "$bin" -Wall -Wextra -I"$root/include" "$here/interleaved_bench.c" "$here/onednn_common.c" \
    -L"$keel_build" -lkeel -Wl,-rpath,"$keel_build" ||
    not_run "interleaved_bench.c did not build against libkeel and the oneDNN 3.x wheels in $dnnl3_prefix (see stderr)"
log "threads $threads${quick:+, quick}; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
# shellcheck disable=SC2086 # $quick is a word or nothing
exec "$bin" "$threads" $quick
