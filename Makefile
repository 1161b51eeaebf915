# pecmail - top-level wrapper around CMake/CTest and pytest.
#   make          install missing Debian packages, build
#   make check    every test: the conformance matrix (docs/conformance.md), the headers'
#                 contracts, unit (cmocka), fuzz smoke run (libFuzzer), integration (pytest);
#                 SANITIZE=1: the integration suite against the ASan+UBSan build (CI)
#   make bench    benchmarks (bench/), results in docs/performance.md
#   make demo     the demo (see README.md)
#   make deb      the Debian package pecmail_*.deb (dpkg-buildpackage -us -uc -b, lintian)
#   make check-deb  builds it and checks its contents (tests/package; minutes, not in check)
BUILD      ?= build
FUZZ_BUILD ?= build-fuzz
ASAN_BUILD ?= build-asan
PYTHON     ?= /usr/bin/python3
FUZZ_SECONDS ?= 5
JOBS       ?= 2

.PHONY: deb check-deb all deps build check conformance headers unit fuzz-smoke integration asan asan-build integration-asan bench demo clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

fuzz-smoke: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DPEC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(FUZZ_BUILD) -j$(JOBS)
	tests/fuzz/run-smoke $(FUZZ_BUILD)/tests/fuzz $(FUZZ_SECONDS)

# SANITIZE=1 (CI: make check SANITIZE=1): the integration suite runs once, against the
# ASan+UBSan pecd and pecctl; every sanitizer report of every process a test started is
# written under $(ASAN_BUILD)/reports, and the suite's last test
# (tests/integration/test_zz_sanitizer_reports.py) fails on one, so that pytest's summary
# stays the last line.
SANITIZE   ?= 0
SAN_REPORTS = $(abspath $(ASAN_BUILD))/reports
ifeq ($(SANITIZE),1)
INTEGRATION_BUILD = $(ASAN_BUILD)
INTEGRATION_DEP   = asan-build
INTEGRATION_ENV   = ASAN_OPTIONS=detect_leaks=1:log_path=$(SAN_REPORTS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_REPORTS)/ubsan \
	PEC_SAN_REPORTS=$(SAN_REPORTS)
else
INTEGRATION_BUILD = $(BUILD)
INTEGRATION_DEP   = build
INTEGRATION_ENV   =
endif

integration: $(INTEGRATION_DEP)
ifeq ($(SANITIZE),1)
	rm -rf $(SAN_REPORTS) && mkdir -p $(SAN_REPORTS)
endif
	$(INTEGRATION_ENV) PEC_BUILD=$(abspath $(INTEGRATION_BUILD)) $(PYTHON) -m pytest -q tests/integration

# docs/conformance.md: every rule names code and tests that exist (scripts/check-conformance);
# first, so that the last line of make check stays pytest's summary
conformance:
	$(PYTHON) scripts/check-conformance

# Every header under src/ opens with its contract: Purpose, Threads, Ownership, Errors
# (scripts/check-headers; --self-test first checks the checker on known examples)
headers:
	$(PYTHON) scripts/check-headers --self-test
	$(PYTHON) scripts/check-headers

check: conformance headers unit fuzz-smoke integration

asan-build: deps
	cmake -S . -B $(ASAN_BUILD) -DPEC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# Every fuzz target for FUZZ_LONG_SECONDS (10 minutes) each, one after the other: the long
# run asked of each parser once (not part of make check; about two hours).
FUZZ_LONG_SECONDS ?= 600
fuzz-long: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DPEC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(FUZZ_BUILD) -j$(JOBS)
	tests/fuzz/run-smoke $(FUZZ_BUILD)/tests/fuzz $(FUZZ_LONG_SECONDS)

# The unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer (CI runs it).
asan: asan-build
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j$(JOBS)

# The integration suite against the ASan+UBSan pecd and pecctl alone.
integration-asan:
	$(MAKE) integration SANITIZE=1

bench: build
	bench/run-all $(abspath $(BUILD))

demo: build
	scripts/demo $(abspath $(BUILD))

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD) $(ASAN_BUILD)

# The Debian package: built in $(DEB_BUILD)/ from a copy of the tree (the
# outputs of dpkg-buildpackage go to the parent of the source), then copied
# here; lintian must report no error.  Installs its own tools (debhelper,
# scdoc, lintian: scripts/install-deps --deb).
DEB_BUILD ?= build-deb
deb:
	@scripts/install-deps --deb
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/pecmail
	git ls-files -co --exclude-standard | grep -v '^$(DEB_BUILD)/' | tar -cf - -T - | tar -xf - -C $(DEB_BUILD)/pecmail
	cd $(DEB_BUILD)/pecmail && dpkg-buildpackage -us -uc -b -j$(JOBS)
	cp $(DEB_BUILD)/pecmail_*.deb .
	lintian --fail-on error $(DEB_BUILD)/pecmail_*.changes

check-deb:
	$(PYTHON) -m pytest -q tests/package
