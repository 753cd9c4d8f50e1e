#!/bin/sh
# make bench: runs keel bench and the peers (bench/peers/run.sh) with one thread and with every
# core, and writes BENCHMARKS.md with the machine and the command: keel and oneDNN 3.2 timed in
# turns in one process (bench/peers/interleaved.sh), the float32 rows, then the low-precision rows
# (keel bench --dtype bf16,f16,i8 beside run.sh --lowp), then the AVX2 path forced (KEEL_ISA=avx2)
# on two shapes where the machine has a wider default, short rows in a call beyond L2 (65536x16),
# and every kernel of the kernel list on every path beside scalar (build/keel_kernel_bench, a short
# run: 3 loops of 10 ms per path). Usage: scripts/bench.sh BUILD_DIR (KEEL_BENCH_PEERS_QUICK=1: the
# peers on 4096x768 only, the interleaved run on 4096x768 and 256x1024).
set -eu
build=${1:-build}
out=BENCHMARKS.md
cores=$(nproc)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp".*' EXIT
peers_quick=${KEEL_BENCH_PEERS_QUICK:+--quick}
# the CPU features the peers' low-precision speed depends on (oneDNN, OpenVINO and PyTorch take
# their bf16 kernels from AVX512_BF16 / AMX where present)
cpuflags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2)
features=""
for f in avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16; do
    case " $cpuflags " in
    *" $f "*) features="$features $f yes," ;;
    *) features="$features $f no," ;;
    esac
done
features=${features%,}
versions_done=""
{
    echo "# keel benchmarks"
    echo
    echo "Written by \`make bench\` ($(date -u +%Y-%m-%d), keel $("$build/keel" --version | cut -d' ' -f2))."
    echo "Machine: ${cpu:-unknown CPU}, $cores cores, $(free -g | awk '/Mem:/{print $2}') GiB; path: $("$build/keel" info | sed -n 's/^kernels: \([a-z0-9]*\).*/\1/p')."
    echo "CPU features (/proc/cpuinfo):$features."
    echo
    echo "Float32. Bytes moved: forward reads x and writes y; backward reads x and dy and writes dx."
    echo "Two floors, timed in the same run with the same threads, interleaved with the op, each from buffers"
    echo "of its own (read once a round, as the op's inputs). The copy floor: the faster of glibc memcpy and a"
    echo "streaming-store copy of the same bytes; 'fraction of copy floor' = copy time / keel time. A copy"
    echo "reads one stream and writes one, where an op may read three (x, r; dy, dh, h) and write two: such an"
    echo "op can beat a copy of its bytes, so this fraction can pass 1.00. The own floor: a kernel that reads"
    echo "and writes the op's own streams (each tensor its own buffer and element size, the per-row statistics"
    echo "and gamma/beta included, an in-place dx in place) with trivial arithmetic (the inputs xor-ed, as"
    echo "integers), once with ordinary and once with streaming stores, the faster taken ('own floor stores');"
    echo "'fraction of own floor' = its time / keel time: 1.00 means keel moves its streams as fast as they"
    echo "can be moved, and only noise puts it above. Medians. The peers' tables below use the own floor."
    echo
    echo "Interleaved, each op starts with its outputs out of cache (the copy before it wrote over them), as"
    echo "in a model where a layer's outputs are fresh buffers."
    echo
    echo "Peers (PyTorch, ONNX Runtime and OpenVINO from PyPI, Debian's oneDNN 2.6 and oneDNN 3.2 from the"
    echo "PyPI wheels onednn-cpu-gomp 2023.2.0) run on the same cases by \`sh bench/peers/run.sh THREADS\`"
    echo "right after keel, each checked against a float64 reference first (the versions that ran are below)."
    echo "Their benchmarks call the op back to back on the same buffers (outputs in cache where they fit), so"
    echo "keel is set beside them timed the same way, \`keel bench --hot --norms\` (back-to-back calls, and"
    echo "the floors back to back too); each fraction of the floor uses the own floor of that run."
    echo "\`keel / peer\` > 1: keel is faster."
    # keel and oneDNN 3.2 in one process, called in turns (bench/peers/interleaved.sh): the
    # ratios below this section come from separate processes, each meeting the machine's load of
    # its own moment; these come from the medians of the same rounds.
    echo
    echo "## keel and oneDNN 3.2 in one process, interleaved"
    echo
    echo "\`sh bench/peers/interleaved.sh THREADS\` (bench/peers/interleaved_bench.c): one process links"
    echo "libkeel.so and oneDNN 3.2 (the PyPI wheels) and calls them in turns on the same case, each on"
    echo "buffers of its own, the order alternating from round to round, rounds enough for the slower of"
    echo "the two to fill about 0.3 s (at least 7); medians. \`keel / oneDNN\` = oneDNN's median / keel's"
    echo "(> 1: keel is faster). A load that comes and goes (other work on the machine) weighs on both"
    echo "alike. Both outputs are checked against a float64 reference first; RMSNorm is keel's alone"
    echo "(oneDNN 3.2 has none). oneDNN's OpenMP threads wait passively between calls"
    echo "(OMP_WAIT_POLICY=passive, as keel's pool threads do): spinning, they take the cores from the"
    echo "library called next. With as many threads as cores on a loaded machine the times are still"
    echo "distorted (a descheduled thread stalls a parallel region), for both libraries."
    for t in 1 "$cores"; do
        # shellcheck disable=SC2086 # $peers_quick: --quick or nothing
        KEEL_BUILD="$build" sh bench/peers/interleaved.sh "$t" $peers_quick > "$tmp.inter.$t" \
            2>"$tmp.inter.log.$t" || true
        echo
        echo "### $t thread(s): \`sh bench/peers/interleaved.sh $t\`"
        echo
        cat "$tmp.inter.$t"
    done
    for t in 1 "$cores"; do
        "$build/keel" bench --all --threads "$t" --markdown | sed '1d' > "$tmp.keel.$t"
        "$build/keel" bench --all --threads "$t" --hot --norms --markdown | sed '1d' > "$tmp.hot.$t"
        sh bench/peers/run.sh "$t" $peers_quick > "$tmp.peers.$t" 2>"$tmp.peers.log.$t" || true
        if [ -z "$versions_done" ]; then
            # run.sh's stderr: oneDNN as dnnl_version() reports it, the Python packages' __version__
            v=$(sed -n 's/^\[peers\] versions: //p' "$tmp.peers.log.$t" | head -1)
            echo
            echo "Peer versions that ran: ${v:-unknown, see the stderr of bench/peers/run.sh}."
            versions_done=1
        fi
        echo
        echo "## $t thread(s)"
        echo
        echo "### keel against its floors: \`$build/keel bench --all --threads $t --markdown\`"
        cat "$tmp.keel.$t"
        echo
        echo "### keel beside the peers, every library timed back to back: \`$build/keel bench --all --threads $t --hot --norms\`"
        echo
        python3 scripts/bench_combine.py "$tmp.hot.$t" "$tmp.peers.$t"
        echo
        echo "### the peers' own table (with their accuracy check)"
        echo
        cat "$tmp.peers.$t"
    done
    echo
    echo "## Low precision: bf16, fp16, int8 output"
    echo
    echo "The same cases with the tensors in bf16 or fp16 (x, y, dy, dx; gamma, beta, the statistics and"
    echo "dgamma/dbeta float32), and the int8-output forwards (keel_layernorm_fwd_i8 / keel_rmsnorm_fwd_i8,"
    echo "x in float32 or bf16, 'dyn': per-row scale max|y|/127 written, 'static': a per-tensor scale; no"
    echo "mean/rstd). Bytes counted in the op's dtypes: bf16/fp16 forward 2 + 2 per element, backward"
    echo "2 + 2 + 2; int8 output 4 or 2 (x) + 1 (y) per element, + 4 per row for the dynamic scale. The"
    echo "floors: a copy of those bytes, and the op's own streams in their dtypes, as above. Peers: PyTorch"
    echo "(F.layer_norm / nn.RMSNorm on bf16/fp16 tensors with float32 parameters; the int8 rows as the"
    echo "norm then torch ops that quantize), oneDNN 2.6 (bf16"
    echo "layer normalization; it has no fp16 CPU implementation and no int8 output), oneDNN 3.2 (bf16 and"
    echo "fp16 layer normalization; int8 output not timed), ONNX Runtime (forward"
    echo "only, parameters in the tensors' dtype as the ONNX ops require; int8 as LayerNormalization then"
    echo "QuantizeLinear or a per-row-scale graph), OpenVINO (bf16 forwards: bf16 input and output, the CPU"
    echo "plugin's bf16 inference precision; the check column says the precision each kernel ran in)."
    echo "bf16 speed of the peers depends on the CPU features above (AVX512_BF16, AMX)."
    echo "docs/low-precision.md has the details."
    for t in 1 "$cores"; do
        "$build/keel" bench --all --threads "$t" --dtype bf16,f16,i8 --markdown | sed '1d' > "$tmp.lpkeel.$t"
        "$build/keel" bench --all --threads "$t" --dtype bf16,f16,i8 --hot --markdown | sed '1d' > "$tmp.lphot.$t"
        sh bench/peers/run.sh "$t" --lowp $peers_quick > "$tmp.lppeers.$t" 2>"$tmp.lppeers.log.$t" || true
        echo
        echo "### $t thread(s), low precision"
        echo
        echo "#### keel against its floors: \`$build/keel bench --all --threads $t --dtype bf16,f16,i8 --markdown\`"
        cat "$tmp.lpkeel.$t"
        echo
        echo "#### keel beside the peers, timed back to back: \`$build/keel bench --all --threads $t --dtype bf16,f16,i8 --hot\`"
        echo
        python3 scripts/bench_combine.py "$tmp.lphot.$t" "$tmp.lppeers.$t"
        echo
        echo "#### the peers' own table (with their accuracy check): \`sh bench/peers/run.sh $t --lowp\`"
        echo
        cat "$tmp.lppeers.$t"
    done
    # Short rows in a call beyond L2, a shape the table above does not list (its 4096x16 fits in
    # L2): the row plan there is not the same (docs/performance.md, short rows at every size).
    echo
    echo "## Short rows beyond L2: \`$build/keel bench --threads 1 --rows 65536 --dim 16 --markdown\`"
    echo
    "$build/keel" bench --threads 1 --rows 65536 --dim 16 --markdown | sed '1d'
    # The AVX2 path on this machine too, when it has a wider default (what a user without
    # AVX-512 gets): a short-row shape and a transformer width, 1 thread.
    if "$build/keel" info | grep -q 'avx2=yes' &&
        ! "$build/keel" info | grep -q '^kernels: avx2'; then
        echo
        echo "## The AVX2 path on this machine: \`KEEL_ISA=avx2 $build/keel bench --threads 1 --rows R --dim D --markdown\`"
        echo
        echo "What a processor without AVX-512 runs (the same bits), timed here with the path forced."
        KEEL_ISA=avx2 "$build/keel" bench --threads 1 --rows 4096 --dim 16 --markdown | sed '1d'
        KEEL_ISA=avx2 "$build/keel" bench --threads 1 --rows 4096 --dim 1024 --markdown | sed '1,4d'
    fi
    # Every kernel of the kernel list (KEEL_KERNEL_LIST, src/kernels/kernels.h) on every path
    # this build has and the CPU runs, beside scalar (bench/kernel_bench.c; its rows are
    # generated from the list). Short: 3 loops of 10 ms per path (the program's default is 5 of
    # 20 ms; `make bench-kernels` runs that).
    echo
    echo "## Each kernel of the kernel list on each path: \`$build/keel_kernel_bench --reps 3 --ms 10\`"
    echo
    echo "One row per kernel of the kernel list (KEEL_KERNEL_LIST in src/kernels/kernels.h) and shape:"
    echo "bench/kernel_bench.c generates its rows from that list (a kernel added there without a bench"
    echo "adapter does not compile), so any kernel's row is found by its name. Each kernel is called"
    echo "directly (no operator, one thread, back to back on the same buffers), on every ISA path side by"
    echo "side, the paths timed in turns; medians; GB/s of the byte model printed under the table; x: the"
    echo "path's speed over the scalar kernel. docs/performance.md describes it."
    echo
    echo '```'
    "$build/keel_kernel_bench" --reps 3 --ms 10 2>&1 || echo "(keel_kernel_bench failed: see above)"
    echo '```'
    # The before/after timings of the kernels rewritten as one body per op (issue 21), measured
    # once per rewrite with scripts/compare-kernels.sh (the "before" binary no longer builds
    # from this tree): copied in as recorded.
    if [ -f bench/one_body_before_after.md ]; then
        echo
        cat bench/one_body_before_after.md
    fi
    echo
    echo "## The Python binding: \`KEEL_LIBRARY=$build/libkeel.so PYTHONPATH=python python3 bench/python_bench.py\`"
    echo
    echo "Per-call overhead of keel's NumPy API and keel.torch beside torch.nn (forward + backward)."
    echo
    KEEL_LIBRARY="$PWD/$build/libkeel.so" PYTHONPATH=python python3 bench/python_bench.py 2>&1 ||
        echo "(python_bench.py failed: see above)"
} > "$tmp"
cat "$tmp" > "$out" # (not mv: the file gets the umask's mode, not mktemp's 0600)
rm -f "$tmp"
rm -f "$tmp".*
trap - EXIT
cat "$out"
