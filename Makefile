# The whole set-up: `make run` and `make test`. Everything else is optional.
PRESET ?= release
BUILD   = build/$(PRESET)
JOBS   ?= $(shell nproc)
HOST   ?= 127.0.0.1
PORT   ?= 8888

.PHONY: all deps build run test test-asan test-tsan bench format tidy clean

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

bench: deps
	cmake --preset release -DTCPKIT_BUILD_BENCH=ON
	cmake --build build/release -j $(JOBS)
	bench/run-all

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

tidy: build
	clang-tidy -p $(BUILD) $$(git ls-files 'src/*.cpp' 'tools/*.cpp')

clean:
	rm -rf build
