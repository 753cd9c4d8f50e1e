# keel: the two commands of the README, and the rest. Everything builds through CMake.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
NEON_BUILD ?= build-aarch64
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
PREFIX     ?= /usr/local
PYTHON     ?= python3
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-unit test-python test-asan test-tsan test-fuzz test-install test-neon fuzz bench bench-kernels install clean

all: build

deps:
	@sh scripts/ensure-deps.sh
	@sh scripts/study-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The main job on the bundled defaults: what keel runs on, its accuracy, its speed, and the
# quick training study (post-norm vs pre-norm with post-norm's warm-up effect at depth 6, and the
# alternatives; about 1 minute on an idle 2-core machine, 4 under load), ending with its table.
demo: build
	$(BUILD)/keel info
	$(BUILD)/keel check
	$(BUILD)/keel bench --demo
	$(BUILD)/keel study --quick --out $(BUILD)/study-quick

# Every test: ctest (unit tests, ONNX node tests, CLI tests), the same unit tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, the threads under ThreadSanitizer, the fuzz
# corpora and 30 s of each fuzzer, the install/consumer tests, and the aarch64 NEON path under qemu.
test: test-unit test-python test-asan test-tsan test-fuzz test-install test-neon
	@echo "make test: all test suites passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The sanitizer builds (docs/reliability.md, "Sanitizers"): optimised, -O1 -g (at -O0 the suite
# took 28 minutes here); CMakeLists.txt makes any report fatal (-fno-sanitize-recover), leaves
# out GCC's variable tracking and libkeel.so (the tests link the static library). KEEL_TEST_QUICK=1
# sizes the long sweeps for a sanitizer (tests/test_common.h: fewer repetitions, every path and
# operation kept).
SAN_CMAKE = -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g"

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) $(SAN_CMAKE) -DKEEL_SANITIZE=address,undefined $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && KEEL_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j$(JOBS)

# ThreadSanitizer: separate contexts on several threads, one context handed between threads, the
# pool under load, and one context used from two threads at once (KEEL_EBUSY), in
# tests/test_threads.c (every operation); and test_determinism (the norms on 1 to 7 threads).
TSAN_TESTS = test_threads|test_determinism
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) $(SAN_CMAKE) -DKEEL_SANITIZE=thread $(CMAKE_FLAGS) >/dev/null
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target $(subst |, ,$(TSAN_TESTS))
	cd $(TSAN_BUILD) && KEEL_TEST_QUICK=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		ctest --output-on-failure -j$(JOBS) -R '^($(TSAN_TESTS))$$'

# The fuzz targets (tests/fuzz, docs/reliability.md "Fuzzing"): every corpus replayed under
# ASan + UBSan (the ctests fuzz_* of the test-asan build, gcc), then each libFuzzer target for
# 30 s with clang from a fixed seed (tests/fuzz/run.sh installs clang when missing, or prints a
# line and skips).
FUZZ_TARGETS = fuzz_api fuzz_onnx_pb fuzz_checkpoint fuzz_baseline fuzz_cli_args
test-fuzz: deps
	cmake -S . -B $(ASAN_BUILD) $(SAN_CMAKE) -DKEEL_SANITIZE=address,undefined $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS) --target $(FUZZ_TARGETS:=_replay)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j$(JOBS) -L '^fuzz$$'
	JOBS=$(JOBS) FUZZ_SEED=1 sh tests/fuzz/run.sh $(FUZZ_BUILD) 30

# The fuzz campaign: each libFuzzer target for FUZZ_SECONDS (default 600) on its corpus (new
# inputs kept in $(FUZZ_BUILD)/corpus, findings in $(FUZZ_BUILD)/artifacts, executions and
# exec/s in $(FUZZ_BUILD)/fuzz-summary.txt). FUZZ_TARGETS="fuzz_api" runs some of them.
fuzz: deps
	JOBS=$(JOBS) sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# NumPy and PyTorch bindings (tests/python), against the library just built.
test-python: build
	sh scripts/ensure-python-deps.sh $(PYTHON)
	KEEL_LIBRARY=$(CURDIR)/$(BUILD)/libkeel.so KEEL_TORCH_EXT_DIR=$(CURDIR)/$(BUILD)/torch-ops \
		KEEL_NUMPY_EXT_DIR=$(CURDIR)/$(BUILD)/numpy-fast KEEL_TEST_PIP_INSTALL=1 \
		$(PYTHON) -m pytest tests/python -q

test-install: build
	sh tests/install_test.sh $(BUILD)

# The aarch64 NEON path: cross-built with Debian's gcc-aarch64-linux-gnu into $(NEON_BUILD), its
# path-comparing tests run under qemu-user, and test_cross_digest's digests compared between
# x86-64 and aarch64 (scripts/test-neon.sh installs the cross compiler and qemu when missing).
test-neon: build
	JOBS=$(JOBS) sh scripts/test-neon.sh $(BUILD) $(NEON_BUILD)

bench: build
	sh scripts/bench.sh $(BUILD)

# Every kernel of the kernel list on every path this build has and the CPU runs, beside scalar
# (bench/kernel_bench.c, docs/performance.md): its full default (3 shapes, 5 loops of 20 ms per
# path), where make bench runs a short one. KERNEL_BENCH_ARGS adds options (--op layernorm ...).
bench-kernels: build
	$(BUILD)/keel_kernel_bench $(KERNEL_BENCH_ARGS)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(NEON_BUILD) $(FUZZ_BUILD)
