#!/bin/sh
# make bench: runs keel bench with one thread and with every core, and writes BENCHMARKS.md with
# the machine and the command. Usage: scripts/bench.sh BUILD_DIR
set -eu
build=${1:-build}
out=BENCHMARKS.md
cores=$(nproc)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "# keel benchmarks"
    echo
    echo "Written by \`make bench\` ($(date -u +%Y-%m-%d), keel $("$build/keel" --version | cut -d' ' -f2))."
    echo "Machine: ${cpu:-unknown CPU}, $cores cores, $(free -g | awk '/Mem:/{print $2}') GiB; path: $("$build/keel" info | sed -n 's/^kernels: \([a-z0-9]*\).*/\1/p')."
    echo
    echo "Float32. Bytes moved: forward reads x and writes y; backward reads x and dy and writes dx."
    echo "The floor is the faster of glibc memcpy and a streaming-store copy of the same bytes with the same"
    echo "threads, timed in the same run, interleaved with the op; 'fraction of floor' = floor time / keel time"
    echo "(1.00 means keel moves its bytes as fast as a copy). Medians."
    for t in 1 "$cores"; do
        echo
        echo "## $t thread(s): \`$build/keel bench --threads $t --markdown\`"
        echo
        "$build/keel" bench --threads "$t" --markdown | sed '1d'
    done
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
cat "$out"
