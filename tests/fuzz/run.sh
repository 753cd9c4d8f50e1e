#!/bin/sh
# Runs the libFuzzer builds of the fuzz targets (tests/fuzz; docs/reliability.md, "Fuzzing"):
#   sh tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
# make fuzz (FUZZ_SECONDS, default 600) and make test-fuzz (30) call it. It needs clang with
# libFuzzer: when clang cannot link -fsanitize=fuzzer it installs clang and libclang-rt-14-dev
# through scripts/ensure-deps.sh (apt-get as root or through sudo) and, failing that, prints a
# line and exits 0 (the corpus replays of make test-fuzz still ran under ASan/UBSan with gcc).
#
# BUILD_DIR is configured with clang, ASan + UBSan, -O1 -g, -fsanitize=fuzzer-no-link on every
# file (so libFuzzer sees the library's coverage) and -DKEEL_FUZZ=ON. Each target runs for
# SECONDS on a writable copy of its corpus (BUILD_DIR/corpus/TARGET; the committed
# tests/fuzz/corpus/TARGET is only read), with tests/fuzz/onnx.dict for fuzz_onnx_pb; a crash,
# leak, timeout or out-of-memory leaves its input in BUILD_DIR/artifacts/ and fails the run.
# The last lines give each target's executions and executions per second. FUZZ_SEED (a number)
# fixes libFuzzer's seed, so that a run's mutations are the same on every machine (make
# test-fuzz: what it finds, anyone finds again with the same command; a faster machine only
# goes further along the same sequence); unset, libFuzzer draws one (make fuzz).
set -eu
build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=${*:-fuzz_api fuzz_onnx_pb fuzz_checkpoint fuzz_baseline fuzz_cli_args}
src=$(cd "$(dirname "$0")/../.." && pwd)
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
cc=${FUZZ_CC:-clang}

have_libfuzzer() {
    command -v "$cc" >/dev/null 2>&1 || return 1
    probe=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
    ok=0
    "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1 || ok=1
    rm -rf "$probe"
    return $ok
}

if ! have_libfuzzer; then
    echo "fuzz: $cc cannot link -fsanitize=fuzzer; installing clang and libclang-rt-14-dev"
    sh "$src/scripts/ensure-deps.sh" clang libclang-rt-14-dev || true
    if ! have_libfuzzer; then
        echo "fuzz: SKIPPED: no clang with libFuzzer here (apt-get install clang libclang-rt-14-dev); the corpus replays still run"
        exit 0
    fi
fi

CC=$cc cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g" \
    -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link -DKEEL_SANITIZE=address,undefined -DKEEL_FUZZ=ON >/dev/null
bins=""
for t in $targets; do bins="$bins ${t}_fuzzer"; done
# shellcheck disable=SC2086
cmake --build "$build" -j"$jobs" --target $bins

mkdir -p "$build/artifacts"
summary="$build/fuzz-summary.txt"
: >"$summary"
failed=0
for t in $targets; do
    work="$build/corpus/$t"
    mkdir -p "$work"
    # per target: the longest input worth mutating (the seeds' sizes), the dictionary
    case $t in
    fuzz_api) opts="-max_len=256" ;;
    fuzz_onnx_pb) opts="-max_len=40000 -dict=$src/tests/fuzz/onnx.dict" ;;
    fuzz_checkpoint) opts="-max_len=16384" ;;
    fuzz_baseline) opts="-max_len=4096" ;;
    *) opts="-max_len=512" ;;
    esac
    log="$build/$t.log"
    echo "fuzz: $t for ${seconds}s ($opts)"
    # shellcheck disable=SC2086
    if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$build/${t}_fuzzer" $opts ${FUZZ_SEED:+-seed=$FUZZ_SEED} -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        "$work" "$src/tests/fuzz/corpus/$t" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
        tail -40 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    line="$t: $status, ${runs:-?} executions in ${seconds}s, ${rate:-?}/s, $cov, corpus $(ls "$work" | wc -l) files in $work"
    echo "$line" | tee -a "$summary"
done
echo "fuzz: summary in $summary"
exit $failed
