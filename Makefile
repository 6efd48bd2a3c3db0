# ferry: the commands people want. `make demo` and `make test` work on a fresh
# Debian 12 machine as root: they install what they need themselves.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
LAB_ROOT ?= $(or $(FERRY_LAB_ROOT),/var/lib/ferry-lab)
LAB_HOSTS ?= 3
export FERRY_LAB_ROOT := $(LAB_ROOT)

.PHONY: all build deps lab-up lab-down unit fuzz e2e test demo bench lint clean

all: build

build:
	$(GO) build -o bin/ferry ./cmd/ferry

deps:
	bash hack/install-deps.sh

lab-up: deps
	bash hack/lab-up.sh $(LAB_HOSTS)

lab-down:
	bash hack/lab-down.sh

# Unit tests: no daemon needed; under the race detector.
unit:
	$(GO) test -race ./...

# Each Go fuzz target for a while (go test -fuzz takes one target per run).
# A count, not a duration: go1.26's fuzz coordinator can fail a duration run at its
# deadline with "context deadline exceeded" and no crasher (golang/go#75804).
# About a minute in all; FUZZTIME=1000000x (or 1m) fuzzes longer.
FUZZTIME ?= 30000x
FUZZ_TARGETS := ./api:FuzzMigrationRequest ./api:FuzzDrainRequest ./api:FuzzSLAReportQuery \
	./cmd/ferry:FuzzParseDuration ./cmd/ferry:FuzzParseBandwidth ./cmd/ferry:FuzzLiveFlags \
	./sla:FuzzParseTime
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# End-to-end tests against the lab (brought up if needed, always brought down). The lab has
# emulated links (hack/lab-link.sh) unless FERRY_LAB_LINKS= (empty: loopback); the tests run
# where the hosts can be reached, in its client namespace (hack/lab-exec.sh; no network there:
# the modules are fetched first).
e2e: deps
	@set -o pipefail; rc=0; \
	$(GO) mod download || rc=$$?; \
	[ $$rc -ne 0 ] || bash hack/lab-up.sh $(LAB_HOSTS) || rc=$$?; \
	if [ $$rc -eq 0 ]; then bash hack/lab-exec.sh $(GO) test -tags e2e -count=1 -timeout 60m -v ./test/e2e/ 2>&1 | tee /tmp/ferry-e2e.log || rc=$$?; fi; \
	bash hack/lab-down.sh || true; \
	exit $$rc

# Everything: lint, unit tests, fuzzing, then the lab tests.
test: deps lint unit fuzz e2e

demo: deps build
	bash hack/demo.sh

bench: deps build
	bash hack/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
