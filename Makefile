# keel: the two commands of the README, and the rest. Everything builds through CMake.
BUILD      ?= build
ASAN_BUILD ?= build-asan
PREFIX     ?= /usr/local
PYTHON     ?= python3
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-unit test-python test-asan test-install bench install clean

all: build

deps:
	@sh scripts/ensure-deps.sh
	@sh scripts/study-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The main job on the bundled defaults: what keel runs on, its accuracy, its speed, and the
# quick training study (post-norm vs pre-norm and the alternatives), ending with its table.
demo: build
	$(BUILD)/keel info
	$(BUILD)/keel check
	$(BUILD)/keel bench --demo
	$(BUILD)/keel study --quick --out $(BUILD)/study-quick

# Every test: ctest (unit tests, ONNX node tests, CLI tests), the same unit tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, and the install/consumer tests.
test: test-unit test-python test-asan test-install
	@echo "make test: all test suites passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=address,undefined $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j$(JOBS) -E '_slow$$'

# NumPy and PyTorch bindings (tests/python), against the library just built.
test-python: build
	sh scripts/ensure-python-deps.sh $(PYTHON)
	KEEL_LIBRARY=$(CURDIR)/$(BUILD)/libkeel.so KEEL_TORCH_EXT_DIR=$(CURDIR)/$(BUILD)/torch-ops \
		KEEL_NUMPY_EXT_DIR=$(CURDIR)/$(BUILD)/numpy-fast KEEL_TEST_PIP_INSTALL=1 \
		$(PYTHON) -m pytest tests/python -q

test-install: build
	sh tests/install_test.sh $(BUILD)

bench: build
	sh scripts/bench.sh $(BUILD)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
