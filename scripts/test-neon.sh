#!/bin/sh
# make test-neon: the aarch64 NEON path, cross-built and run under qemu-user on this x86-64 machine.
#  1. installs what is missing (Debian's gcc-aarch64-linux-gnu, its C library, qemu-user-static;
#     apt-get as root, or through sudo);
#  2. configures and builds NEON_BUILD (default build-aarch64) with cmake/aarch64-linux-gnu.cmake:
#     the library and the tests that compare paths;
#  3. runs them with ctest under qemu-aarch64 -L /usr/aarch64-linux-gnu (the toolchain file makes
#     qemu ctest's emulator): every kernel and op of the neon path against the scalar path;
#  4. runs test_cross_digest natively (NATIVE_BUILD, default build: its x86 paths agree with each
#     other) and under qemu, and fails unless the two listings of digests, one per op, dtype and
#     input set, are the same: aarch64's paths give the bits of x86-64's.
# Usage: scripts/test-neon.sh [NATIVE_BUILD [NEON_BUILD]]; JOBS (default: nproc) jobs.
set -eu
native=${1:-build}
cross=${2:-build-aarch64}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
triple=aarch64-linux-gnu
start=$(date +%s)

case "$(uname -m)" in
x86_64 | amd64) ;;
*)
    echo "test-neon: cross-builds from x86-64; this is $(uname -m): skipped (on aarch64, make test-unit runs the neon path natively)"
    exit 0
    ;;
esac

sh scripts/ensure-deps.sh gcc-$triple libc6-dev-arm64-cross qemu-user-static
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
[ -n "$qemu" ] || { echo "test-neon: no qemu-aarch64 after installing qemu-user-static" >&2; exit 1; }

# The tests that compare the neon path's own kernels with the scalar ones (every kernel now:
# LayerScale, DyT, RMSNorm, LayerNorm, the fused add + RMSNorm and add + LayerNorm, BatchNorm,
# the bf16/f16 conversions, int8 quantization and absmax: test_convert, test_lowp; RMSNorm and
# LayerNorm also through test_ops, test_determinism and test_bwd_hints; test_bad_input:
# KEEL_ISA=neon and keel_ctx_set_isa on aarch64), in their quick sweep (KEEL_TEST_QUICK=1; qemu
# emulates every floating-point instruction: many times slower);
# test_cross_digest already checks every op on aarch64 against x86-64.
tests="test_kernels_bitwise test_block_determinism test_dyt_tanh test_cross_digest \
test_block_ops test_block_lowp test_bad_input test_convert test_lowp test_ops test_determinism \
test_bwd_hints"
regex="^($(echo $tests | tr ' ' '|'))\$"

cmake -S . -B "$cross" -DCMAKE_TOOLCHAIN_FILE=cmake/$triple.cmake -DCMAKE_BUILD_TYPE=Release \
    -DKEEL_BUILD_CLI=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build "$cross" -j"$jobs" --target $tests
built=$(date +%s)
echo "test-neon: built $cross in $((built - start)) s; running under $qemu"

(cd "$cross" && KEEL_TEST_QUICK=1 ctest --output-on-failure -j"$jobs" -R "$regex")

# The same digests on x86-64 (every path of this machine) and on aarch64 (scalar and neon).
[ -x "$native/test_cross_digest" ] || cmake --build "$native" --target test_cross_digest >/dev/null
out="$cross/cross_digest"
"$native/test_cross_digest" >"$out.x86_64.txt"
"$qemu" -L /usr/$triple "$cross/test_cross_digest" >"$out.aarch64.txt"
grep '^digest ' "$out.x86_64.txt" >"$out.x86_64.digests"
grep '^digest ' "$out.aarch64.txt" >"$out.aarch64.digests"
n=$(wc -l <"$out.x86_64.digests")
if [ "$n" -eq 0 ] || ! diff "$out.x86_64.digests" "$out.aarch64.digests"; then
    echo "test-neon: the digests of x86-64 ($(sed -n 's/^paths: //p' "$out.x86_64.txt")) and aarch64 ($(sed -n 's/^paths: //p' "$out.aarch64.txt")) differ (above: < x86-64, > aarch64)" >&2
    exit 1
fi
echo "test-neon: $n digests the same on x86-64 ($(sed -n 's/^paths: //p' "$out.x86_64.txt")) and aarch64 ($(sed -n 's/^paths: //p' "$out.aarch64.txt"))"
echo "test-neon: passed in $(($(date +%s) - start)) s"
