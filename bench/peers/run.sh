#!/bin/sh
# Peer benchmark: PyTorch, ONNX Runtime and oneDNN LayerNorm / RMSNorm on the cases of `keel bench`.
#
# Usage: sh bench/peers/run.sh THREADS [--quick] [--lowp]
#   THREADS  threads every peer may use (0 = all cores)
#   --quick  only the 4096x768 case
#   --lowp   the low-precision rows instead of the float32 ones: bf16 and f16 tensors and the
#            int8-output forwards, named as `keel bench --dtype bf16,f16,i8` names them
#
# Installs what is missing (pip: torch onnxruntime onnx numpy, each only if it cannot be imported;
# apt: libdnnl-dev only if its header is missing; as root or through sudo), builds the oneDNN
# program into build-peers/, runs every peer and prints ONE Markdown table on stdout:
#   | peer | op | rows x dim | us | GB/s | check (max rel err) |
# Progress and install logs go to stderr. A peer that cannot be installed or run gives rows that
# say why. Environment: PYTHON (default python3), CC (default cc).
set -u

usage() {
    echo "usage: sh bench/peers/run.sh THREADS [--quick] [--lowp]" >&2
    exit 2
}

threads=""
quick=""
dtype_arg="--dtype f32"
for a in "$@"; do
    case "$a" in
    --quick) quick="--quick" ;;
    --lowp) dtype_arg="--dtype lowp" ;;
    -h | --help) usage ;;
    *[!0-9]* | "") echo "run.sh: bad argument '$a'" >&2; usage ;;
    *) threads=$a ;;
    esac
done
[ -n "$threads" ] || usage
[ "$threads" -gt 0 ] || threads=$(nproc)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build-peers"
py=${PYTHON:-python3}
cc=${CC:-cc}
export OMP_NUM_THREADS="$threads"

log() { echo "[peers] $*" >&2; }

if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    sudo="none"
fi

# ---- installs
pip_missing=""
if ! command -v "$py" >/dev/null 2>&1; then
    py_broken="$py not found"
else
    py_broken=""
    for m in numpy torch onnxruntime onnx; do
        "$py" -c "import $m" >/dev/null 2>&1 || pip_missing="$pip_missing $m"
    done
fi
if [ -z "$py_broken" ] && [ -n "$pip_missing" ]; then
    log "pip install$pip_missing (torch pulls several GB of CUDA libraries on first install)"
    if [ "$(id -u)" = 0 ]; then user_flag=""; else user_flag="--user"; fi
    # shellcheck disable=SC2086
    "$py" -m pip install $user_flag $pip_missing >&2 || log "pip install failed"
fi

dnnl_missing=""
if [ ! -f /usr/include/oneapi/dnnl/dnnl.h ]; then
    if [ "$sudo" = none ]; then
        dnnl_missing="libdnnl-dev is not installed and this user cannot run apt-get (not root, no sudo)"
    else
        log "apt-get install -y libdnnl-dev"
        $sudo apt-get install -y libdnnl-dev >&2 ||
            { $sudo apt-get update >&2 && $sudo apt-get install -y libdnnl-dev >&2; } ||
            log "apt-get install libdnnl-dev failed"
        [ -f /usr/include/oneapi/dnnl/dnnl.h ] || dnnl_missing="apt-get install libdnnl-dev failed"
    fi
fi

# ---- build the oneDNN program
onednn_bin="$build/onednn_bench"
if [ -z "$dnnl_missing" ]; then
    mkdir -p "$build"
    log "building $onednn_bin"
    if ! "$cc" -O2 -std=c11 -fopenmp "$here/onednn_bench.c" -o "$onednn_bin" -ldnnl -lm >&2; then
        dnnl_missing="the oneDNN program did not build (see stderr)"
    elif command -v ldd >/dev/null 2>&1; then
        log "libdnnl threading: $(ldd "$onednn_bin" | grep -o 'lib\(gomp\|iomp5\|tbb\)[^ ]*' | sort -u | tr '\n' ' ')"
    fi
fi

# ---- run
# CPU time others are using now: /proc/stat over one second, in cores
busy_cores() {
    # shellcheck disable=SC2046 # the fields of the cpu line, split on purpose
    set -- $(head -n 1 /proc/stat 2>/dev/null)
    [ $# -ge 8 ] || { echo "?"; return; }
    t1=$(($2 + $3 + $4 + $5 + $6 + $7 + $8)) i1=$(($5 + $6))
    sleep 1
    # shellcheck disable=SC2046
    set -- $(head -n 1 /proc/stat)
    t2=$(($2 + $3 + $4 + $5 + $6 + $7 + $8)) i2=$(($5 + $6))
    ncpu=$(nproc)
    echo $((((t2 - t1) - (i2 - i1)) * ncpu * 100 / (t2 - t1 > 0 ? t2 - t1 : 1)))
}
busy=$(busy_cores) # hundredths of a core
log "threads $threads${quick:+, quick}; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null);" \
    "other work now: $busy% of a core"
if [ "$busy" != "?" ] && [ "$busy" -gt 30 ]; then
    log "warning: other processes are using the CPUs; with as many threads as cores a descheduled" \
        "thread stalls each parallel region for a time slice, and timings will be distorted"
fi
echo "| peer | op | rows x dim | us | GB/s | check (max rel err) |"
echo "|---|---|---|---|---|---|"

not_run() { # peer, reason, ops...
    p=$1 why=$2
    shift 2
    for op in "$@"; do
        echo "| $p | $op | all | - | - | $why |"
    done
}

# the op names of the rows this run makes (for the rows of a peer that cannot run)
if [ "$dtype_arg" = "--dtype lowp" ]; then
    all_ops="layernorm fwd bf16|layernorm bwd bf16|rmsnorm fwd bf16|rmsnorm bwd bf16|layernorm fwd f16|layernorm bwd f16|rmsnorm fwd f16|rmsnorm bwd f16"
    for src in f32 bf16; do
        all_ops="$all_ops|layernorm fwd $src>i8 dyn|layernorm fwd $src>i8 static|rmsnorm fwd $src>i8 dyn|rmsnorm fwd $src>i8 static"
    done
else
    all_ops="layernorm fwd|layernorm bwd|rmsnorm fwd|rmsnorm bwd"
fi
not_run_all() { # peer, reason
    old_ifs=$IFS
    IFS='|'
    # shellcheck disable=SC2086 # split on '|' on purpose
    not_run "$1" "$2" $all_ops
    IFS=$old_ifs
}

if [ -n "$dnnl_missing" ]; then
    not_run_all oneDNN "not run: $dnnl_missing"
else
    # shellcheck disable=SC2086 # $quick and $dtype_arg are words on purpose
    "$onednn_bin" "$threads" $quick $dtype_arg
    rc=$?
    [ $rc = 0 ] || not_run oneDNN "the oneDNN program stopped with status $rc (rows above, if any, are complete)" "(remaining)"
fi

for peer in torch ort; do
    case $peer in
    torch) name=PyTorch mods="numpy torch" ;;
    ort) name="ONNX Runtime" mods="numpy onnxruntime onnx" ;;
    esac
    if [ -n "$py_broken" ]; then
        not_run_all "$name" "not run: $py_broken"
        continue
    fi
    missing=""
    for m in $mods; do
        "$py" -c "import $m" >/dev/null 2>&1 || missing="$missing $m"
    done
    if [ -n "$missing" ]; then
        not_run_all "$name" "not run: cannot import$missing (pip install failed?)"
        continue
    fi
    # a process per peer: the OpenMP threads of one do not spin beside the other's
    # shellcheck disable=SC2086
    "$py" "$here/peers_torch_ort.py" --peer "$peer" --threads "$threads" $quick $dtype_arg
    rc=$?
    [ $rc = 0 ] || not_run "$name" "the $peer benchmark stopped with status $rc (rows above, if any, are complete)" "(remaining)"
done
