# kmipfs build, test and benchmark targets. "make setup" installs what a fresh Debian machine lacks.
GO       ?= go
BIN      := bin/kmipfs
PKGS     := $(shell $(GO) list ./... 2>/dev/null | grep -v /tests)
FUZZTIME ?= 20s
DEMODIR  ?= kmipfs-demo
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all setup build install uninstall demo test test-integration fsx-long crash-long fuzz fuzz-ci bench bench-fs bench-s3 lint tidy-check ci clean

all: build

# setup installs the system packages the mount and the tests use (FUSE, xattr tools, a real PyKMIP
# server, and the programs the legacy-application tests run) and downloads the Go modules. It is
# idempotent and quick when everything is there. Each entry is PACKAGE:COMMAND-IT-PROVIDES.
SETUP_PACKAGES := fuse3:fusermount3 attr:setfattr python3-pykmip:pykmip-server openssl:openssl \
	sqlite3:sqlite3 git:git rsync:rsync curl:curl systemd:systemd-analyze
setup:
	@missing=""; \
	for p in $(SETUP_PACKAGES); do \
		command -v $${p#*:} >/dev/null 2>&1 || missing="$$missing $${p%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download
	@$(MAKE) --no-print-directory setup-s3

build:
	$(GO) build ./...
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/kmipfs

# demo builds kmipfs and runs the zero set-up demo under $(DEMODIR); Ctrl-C unmounts.
demo: build
	./$(BIN) demo $(DEMODIR)

# install puts kmipfs in $(BINDIR), links the mount helper $(SBINDIR)/mount.fuse.kmipfs (and
# mount.kmipfs) to it, so that "mount -t fuse.kmipfs" and fstab lines of type fuse.kmipfs work,
# and installs the systemd unit template kmipfs@.service and the example config with every option
# (/etc/kmipfs/kmipfs.toml.example). mount(8) looks for helpers in /sbin whatever PREFIX is.
# DESTDIR stages it all for a package. uninstall removes what install put there (never a config).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= /sbin
UNITDIR    ?= /etc/systemd/system
SYSCONFDIR ?= /etc/kmipfs
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/kmipfs
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)
	ln -sf $(BINDIR)/kmipfs $(DESTDIR)$(SBINDIR)/mount.fuse.kmipfs
	ln -sf $(BINDIR)/kmipfs $(DESTDIR)$(SBINDIR)/mount.kmipfs
	sed 's|@BINDIR@|$(BINDIR)|g' dist/kmipfs@.service > $(DESTDIR)$(UNITDIR)/kmipfs@.service
	install -m 0644 dist/kmipfs.toml.example $(DESTDIR)$(SYSCONFDIR)/kmipfs.toml.example

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/kmipfs $(DESTDIR)$(SBINDIR)/mount.fuse.kmipfs $(DESTDIR)$(SBINDIR)/mount.kmipfs \
		$(DESTDIR)$(UNITDIR)/kmipfs@.service $(DESTDIR)$(SYSCONFDIR)/kmipfs.toml.example

# The kms unit tests also run against a real PyKMIP server when one is installed (make setup does).
PYKMIP := $(shell command -v pykmip-server >/dev/null 2>&1 && echo 1)

test:
	KMIPFS_TEST_PYKMIP=$(PYKMIP) $(GO) test -race -count=1 $(PKGS)

test-integration: build
	KMIPFS_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -p 1 -timeout 10m ./tests/...
	@if grep -q ' fuse.kmipfs' /proc/mounts; then echo "leftover kmipfs mounts:"; grep ' fuse.kmipfs' /proc/mounts; exit 1; fi

# fsx-long runs the randomized operation checker of tests/ for $(FSX_OPS) operations.
FSX_OPS ?= 100000
fsx-long: build
	KMIPFS_BIN=$(CURDIR)/$(BIN) KMIPFS_OPS=$(FSX_OPS) $(GO) test -count=1 -timeout 60m -run 'TestRandomOps$$' -v ./tests/ | tail -20

# S3: versitygw (one Go binary, a real S3 server on loopback) for the objstore/s3 tests and for the
# mounted tests with KMIPFS_TEST_STORE=s3 (docs/S3.md). setup-s3 installs it once into $(VERSITYGW)'s
# directory; test-s3-store runs the S3 backend's tests (conformance suite included) against
# versitygw, test-s3 then every mounted test with KMIPFS_TEST_STORE=s3.
.PHONY: setup-s3 test-s3-store test-s3 test-ceph
VERSITYGW ?= $(shell $(GO) env GOPATH)/bin/versitygw
setup-s3:
	@test -x $(VERSITYGW) || { echo "installing versitygw into $(dir $(VERSITYGW))"; \
		GOBIN=$(dir $(VERSITYGW)) $(GO) install github.com/versity/versitygw/cmd/versitygw@v1.8.0; }

test-s3-store: setup-s3
	KMIPFS_VERSITYGW=$(VERSITYGW) $(GO) test -race -count=1 ./objstore/s3/...

test-s3: build test-s3-store
	KMIPFS_VERSITYGW=$(VERSITYGW) KMIPFS_TEST_STORE=s3 KMIPFS_BIN=$(CURDIR)/$(BIN) \
		$(GO) test -count=1 -p 1 -timeout 20m ./tests/...
	@if grep -q ' fuse.kmipfs' /proc/mounts; then echo "leftover kmipfs mounts:"; grep ' fuse.kmipfs' /proc/mounts; exit 1; fi

# crash-long runs the kill -9 crash test for $(CRASH_CYCLES) kill/remount cycles (CI runs 3).
CRASH_CYCLES ?= 50
crash-long: build
	KMIPFS_BIN=$(CURDIR)/$(BIN) KMIPFS_CRASH_CYCLES=$(CRASH_CYCLES) $(GO) test -count=1 -p 1 -timeout 30m -run '^TestCrash$$' -v ./tests/ | tail -20

# test-ceph brings up a one-node Ceph Object Gateway on loopback (scripts/ceph-rgw.sh; Debian's
# ceph packages), runs the S3 conformance suite and the copy-in/copy-out plaintext check against
# it, and tears it down. It empties every bucket of that test account: only for a test cluster.
CEPHDIR ?= /var/tmp/kmipfs-ceph
test-ceph: build
	scripts/ceph-rgw.sh up $(CEPHDIR)
	set -a; eval "$$(scripts/ceph-rgw.sh env $(CEPHDIR))"; set +a; \
	$(GO) test -count=1 -run TestStoreExternal ./objstore/s3/ && \
	KMIPFS_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -p 1 -timeout 30m -run TestS3CopyNoPlaintext ./tests/; rc=$$?; \
	scripts/ceph-rgw.sh down $(CEPHDIR); exit $$rc

# fuzz-ci runs every fuzz target for a few thousand inputs (CI); make fuzz runs them for FUZZTIME (20s).
# CI counts inputs rather than seconds: with a duration, Go's fuzzing coordinator can fail a target
# with a bare "context deadline exceeded" when a starved worker misses the end of the window.
fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=30000x

fuzz:
	@for pkg in $(PKGS); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# bench runs the Go benchmarks, then bench-fs: the filesystem workload side by side on the plain
# disk, go-fuse loopback, gocryptfs and kmipfs (bench/bench.sh; needs root). bench-fs installs fio,
# gocryptfs, sqlite3, python3 and curl when missing (bench/setup.sh) and prints the table; it also
# writes it as markdown (BENCH_QUICK=1 for a one-minute trial run; the other BENCH_* variables are
# described at the top of bench/bench.sh).
# bench-s3 is the S3 column: kmipfs on versitygw side by side with rclone mount on an rclone crypt
# remote over the same versitygw, with ratios (bench/s3.sh; installs rclone and versitygw).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	@$(MAKE) --no-print-directory bench-fs
	@$(MAKE) --no-print-directory bench-s3

bench-fs: build
	bash bench/setup.sh
	KMIPFS=$(abspath $(BIN)) bash bench/bench.sh

bench-s3: build setup-s3
	bash bench/setup.sh
	KMIPFS=$(abspath $(BIN)) VERSITYGW=$(VERSITYGW) bash bench/s3.sh

lint:
	@out=$$(gofmt -l . | grep -v '^vendor/'); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

tidy-check:
	$(GO) mod tidy
	git diff --exit-code go.mod go.sum

# ci is what .ci/run calls on a fresh machine: lint, unit tests with the race detector, the mounted
# tests on the local store, the S3 backend's tests (conformance suite included) and every mounted
# test again on S3 (versitygw), each fuzz target briefly, and the unit tests once more on one CPU.
ci: lint test test-integration test-s3 fuzz-ci
	GOMAXPROCS=1 $(GO) test -count=1 $(PKGS)

clean:
	rm -rf bin
