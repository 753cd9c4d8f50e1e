#!/bin/sh
# Installs keel into a temporary prefix, then builds the README's example against it three ways:
# pkg-config (shared), pkg-config --static, and a CMake project using find_package(keel).
# Also checks that the README's C block is exactly examples/readme_example.c.
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

cmake --install "$src/$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib64/pkgconfig:$(ls -d "$tmp"/prefix/lib/*/pkgconfig 2>/dev/null | tr '\n' ':')"

# The README shows the example: the first ```c block must be the file, byte for byte.
awk '/^```c$/{on=1;next} /^```$/{if(on){exit}} on' "$src/README.md" > "$tmp/readme.c"
if cmp -s "$tmp/readme.c" "$src/examples/readme_example.c"; then ok "README C block == examples/readme_example.c"; else bad "README C block differs from examples/readme_example.c"; fi

# shellcheck disable=SC2046
if cc -std=c11 -Wall -Wextra -Werror "$tmp/readme.c" -o "$tmp/ex_shared" $(pkg-config --cflags --libs keel) &&
   LD_LIBRARY_PATH=$(pkg-config --variable=libdir keel) "$tmp/ex_shared" > "$tmp/out_shared"; then
    ok "pkg-config shared build runs"
else bad "pkg-config shared build"; fi
# shellcheck disable=SC2046
if cc -std=c11 "$tmp/readme.c" -o "$tmp/ex_static" $(pkg-config --cflags keel) \
      "$(pkg-config --variable=libdir keel)/libkeel.a" $(pkg-config --libs-only-l --static keel | sed 's/-lkeel//') &&
   "$tmp/ex_static" > "$tmp/out_static"; then
    ok "pkg-config static build runs"
else bad "pkg-config static build"; fi
# The example's numbers: row 1 is constant, so its y is beta exactly.
if grep -q "row 1: mean 10 rstd 316.2.* y 0 0 0.5 0.5" "$tmp/out_shared" && grep -q "row 0: mean 2.5" "$tmp/out_shared"; then
    ok "example output"
else bad "example output: $(cat "$tmp/out_shared" 2>/dev/null)"; fi

mkdir -p "$tmp/consumer"
cp "$tmp/readme.c" "$tmp/consumer/main.c"
cat > "$tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(keel 0.2 REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE keel::keel)
add_executable(consumer_static main.c)
target_link_libraries(consumer_static PRIVATE keel::keel_static)
CM
if cmake -S "$tmp/consumer" -B "$tmp/consumer/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null &&
   cmake --build "$tmp/consumer/b" >/dev/null && "$tmp/consumer/b/consumer" >/dev/null && "$tmp/consumer/b/consumer_static" >/dev/null; then
    ok "CMake find_package(keel) consumer (keel::keel and keel::keel_static) runs"
else bad "CMake find_package(keel) consumer"; fi
if "$tmp/prefix/bin/keel" info >/dev/null; then ok "installed keel info"; else bad "installed keel info"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
