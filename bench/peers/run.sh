#!/bin/sh
# Peer benchmark: PyTorch, ONNX Runtime, oneDNN (Debian's 2.6 and PyPI's 3.2) and OpenVINO LayerNorm /
# RMSNorm on the cases of `keel bench`.
#
# Usage: sh bench/peers/run.sh THREADS [--quick] [--lowp]
#   THREADS  threads every peer may use (0 = all cores)
#   --quick  only the 4096x768 case
#   --lowp   the low-precision rows instead of the float32 ones: bf16 and f16 tensors and the
#            int8-output forwards, named as `keel bench --dtype bf16,f16,i8` names them
#
# Installs what is missing (pip: torch onnxruntime onnx numpy openvino, each only if it cannot be
# imported; pip: onednn-cpu-gomp + onednn-devel-cpu-gomp 2023.2.0 (oneDNN 3.2, OpenMP) only if no
# Python prefix holds their header and libdnnl.so.3; apt: libdnnl-dev only if its header is missing;
# as root or through sudo), builds the oneDNN program twice into build-peers/ (onednn_bench against
# Debian's 2.6, onednn3_bench against the wheels' 3.2 with an rpath to them), runs every peer and
# prints ONE Markdown table on stdout:
#   | peer | op | rows x dim | us | GB/s | check (max rel err) |
# Progress and install logs go to stderr. A peer that cannot be installed or run gives rows that
# say why. The versions that ran and the CPU's bf16/AMX flags go to stderr in two lines,
# "[peers] versions: ..." and "[peers] cpu: ..." (scripts/bench.sh copies them into BENCHMARKS.md).
# Environment: PYTHON (default python3), CC (default cc).
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
    for m in numpy torch onnxruntime onnx openvino; do
        "$py" -c "import $m" >/dev/null 2>&1 || pip_missing="$pip_missing $m"
    done
fi
if [ -z "$py_broken" ] && [ -n "$pip_missing" ]; then
    log "pip install$pip_missing (torch pulls several GB of CUDA libraries on first install)"
    if [ "$(id -u)" = 0 ]; then user_flag=""; else user_flag="--user"; fi
    # shellcheck disable=SC2086
    "$py" -m pip install $user_flag $pip_missing >&2 || log "pip install failed"
fi

# oneDNN 3.x from PyPI (onednn3.sh: found under a Python prefix, or pip-installed)
# shellcheck source=bench/peers/onednn3.sh
. "$here/onednn3.sh"
dnnl3_setup

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
    # -l:libdnnl.so.2: Debian's library even where a Python prefix in the default search path
    # (/usr/local) holds the wheels' libdnnl.so (3.x)
    if ! "$cc" -O2 -std=c11 -fopenmp -I"$root/src/cli" "$here/onednn_bench.c" "$here/onednn_common.c" \
        "$root/src/cli/bench_time.c" -o "$onednn_bin" -l:libdnnl.so.2 -lm >&2; then
        dnnl_missing="the oneDNN program did not build against Debian's libdnnl (see stderr)"
    elif command -v ldd >/dev/null 2>&1; then
        log "libdnnl threading: $(ldd "$onednn_bin" | grep -o 'lib\(gomp\|iomp5\|tbb\)[^ ]*' | sort -u | tr '\n' ' ')"
    fi
fi

onednn3_bin="$build/onednn3_bench"
if [ -z "$dnnl3_missing" ] &&
    ! dnnl3_build "$onednn3_bin" "$here/onednn_bench.c" "$here/onednn_common.c"; then
    dnnl3_missing="the oneDNN program did not build against the 3.x wheels in $dnnl3_prefix (see stderr)"
fi

# ---- versions and CPU features (stderr; scripts/bench.sh copies these two lines)
versions=""
add_version() { versions="${versions:+$versions; }$*"; }
[ -n "$dnnl_missing" ] || add_version "$("$onednn_bin" --version 2>/dev/null || echo 'oneDNN (Debian) ?')"
[ -n "$dnnl3_missing" ] || add_version "$("$onednn3_bin" --version 2>/dev/null || echo 'oneDNN (PyPI) ?') from PyPI onednn-cpu-gomp"
if [ -z "$py_broken" ]; then
    for m in torch:PyTorch onnxruntime:"ONNX Runtime" openvino:OpenVINO; do
        v=$("$py" -c "import ${m%%:*} as m; print(m.__version__)" 2>/dev/null) && add_version "${m#*:} $v"
    done
fi
log "versions: ${versions:-none}"
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
features=""
for f in avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16; do
    case " ${flags#*:} " in
    *" $f "*) features="$features $f=yes" ;;
    *) features="$features $f=no" ;;
    esac
done
log "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1);$features"

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

for which in 2 3; do
    if [ $which = 2 ]; then
        name="oneDNN 2.6" bin=$onednn_bin why=$dnnl_missing
    else
        name="oneDNN 3.2" bin=$onednn3_bin why=$dnnl3_missing
    fi
    if [ -n "$why" ]; then
        not_run_all "$name" "not run: $why"
    else
        # shellcheck disable=SC2086 # $quick and $dtype_arg are words on purpose
        "$bin" "$threads" $quick $dtype_arg
        rc=$?
        [ $rc = 0 ] || not_run "$name" "the oneDNN program stopped with status $rc (rows above, if any, are complete)" "(remaining)"
    fi
done

for peer in torch ort openvino; do
    case $peer in
    torch) name=PyTorch mods="numpy torch" script=peers_torch_ort.py ;;
    ort) name="ONNX Runtime" mods="numpy onnxruntime onnx" script=peers_torch_ort.py ;;
    openvino) name=OpenVINO mods="numpy openvino" script=peers_openvino.py ;;
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
    if [ $peer = openvino ]; then
        "$py" "$here/$script" --threads "$threads" $quick $dtype_arg
    else
        "$py" "$here/$script" --peer "$peer" --threads "$threads" $quick $dtype_arg
    fi
    rc=$?
    [ $rc = 0 ] || not_run "$name" "the $peer benchmark stopped with status $rc (rows above, if any, are complete)" "(remaining)"
done
