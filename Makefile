# The whole set-up: `make run` and `make test`. Everything else is optional.
PRESET ?= release
BUILD   = build/$(PRESET)
JOBS   ?= $(shell nproc)
HOST   ?= 127.0.0.1
PORT   ?= 8888

.PHONY: all deps build run test test-asan test-tsan bench fuzz soak format format-check tidy check-style clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake --preset $(PRESET)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/tcpkit serve --host $(HOST) --port $(PORT)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan:
	$(MAKE) test PRESET=asan

test-tsan:
	$(MAKE) test PRESET=tsan

# The performance race into docs/benchmarks.md (bench/run-all); builds only what
# it runs, and stays within 10 minutes on 2 cores from a fresh clone.
bench: deps
	cmake --preset release -DTCPKIT_BUILD_BENCH=ON
	cmake --build build/release -j $(JOBS) --target tcpkit_bench_programs
	bench/run-all

# Every libFuzzer target for FUZZ_SECONDS each (clang, ASan + UBSan; build/fuzz).
FUZZ_SECONDS ?= 60
fuzz: deps
	fuzz/run all $(FUZZ_SECONDS)

# The hostile-client and load tests at full length (minutes, 10,000 clients).
soak: build
	cd tests/blackbox && SOAK=1 TCPKIT_BIN=$(CURDIR)/$(BUILD)/tcpkit /usr/bin/python3 -m pytest -q -s \
	  -p no:cacheprovider test_hostile.py

# Style (scripts/check-style, also run by .ci/run): `make format` rewrites
# every tracked .h/.cpp with .clang-format; `make format-check` only checks;
# `make tidy` runs clang-tidy (.clang-tidy) on src/ and tools/ with zero
# warnings allowed; `make check-style` does both checks.
format: deps
	clang-format -i $$(git ls-files '*.h' '*.cpp')

format-check: deps
	scripts/check-style format

tidy: deps $(BUILD)/build.ninja
	BUILD=$(BUILD) JOBS=$(JOBS) scripts/check-style tidy

check-style: deps $(BUILD)/build.ninja
	BUILD=$(BUILD) JOBS=$(JOBS) scripts/check-style all

clean:
	rm -rf build

# API reference (Doxygen) into build/docs/html; fails on any Doxygen warning.
.PHONY: docs package
docs:
	@command -v doxygen >/dev/null || scripts/install-deps
	doxygen docs/Doxyfile
	@echo "API reference: build/docs/html/index.html"

# Debian package of the release build into build/package (tcpkit_VERSION_ARCH.deb).
package: build
	cpack --config $(BUILD)/CPackConfig.cmake -B $(CURDIR)/build/package
	@ls -l build/package/*.deb
