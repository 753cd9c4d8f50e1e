#!/bin/sh
# make bench: runs keel bench and the peers (bench/peers/run.sh) with one thread and with every
# core, and writes BENCHMARKS.md with the machine and the command. Usage: scripts/bench.sh BUILD_DIR
# (KEEL_BENCH_PEERS_QUICK=1: the peers on 4096x768 only).
set -eu
build=${1:-build}
out=BENCHMARKS.md
cores=$(nproc)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp".*' EXIT
peers_quick=${KEEL_BENCH_PEERS_QUICK:+--quick}
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
    echo
    echo "Peers (PyTorch and ONNX Runtime from PyPI, Debian's oneDNN 2.6) run on the same cases by"
    echo "\`sh bench/peers/run.sh THREADS\` right after keel, each checked against a float64 reference first;"
    echo "their fraction of the floor uses the floor keel bench measured. \`keel / peer\` > 1: keel is faster."
    for t in 1 "$cores"; do
        "$build/keel" bench --threads "$t" --markdown | sed '1d' > "$tmp.keel.$t"
        sh bench/peers/run.sh "$t" $peers_quick > "$tmp.peers.$t" 2>"$tmp.peers.log.$t" || true
        echo
        echo "## $t thread(s)"
        echo
        echo "### keel against its floor: \`$build/keel bench --threads $t --markdown\`"
        cat "$tmp.keel.$t"
        echo
        echo "### keel beside the peers"
        echo
        python3 scripts/bench_combine.py "$tmp.keel.$t" "$tmp.peers.$t"
        echo
        echo "### the peers' own table (with their accuracy check)"
        echo
        cat "$tmp.peers.$t"
    done
    echo
    echo "## The Python binding: \`KEEL_LIBRARY=$build/libkeel.so PYTHONPATH=python python3 bench/python_bench.py\`"
    echo
    echo "Per-call overhead of keel's NumPy API and keel.torch beside torch.nn (forward + backward)."
    echo
    KEEL_LIBRARY="$PWD/$build/libkeel.so" PYTHONPATH=python python3 bench/python_bench.py 2>&1 ||
        echo "(python_bench.py failed: see above)"
} > "$tmp"
mv "$tmp" "$out"
rm -f "$tmp".*
trap - EXIT
cat "$out"
