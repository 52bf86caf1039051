# mos: `make` builds the release artifacts, `make test` runs the whole suite,
# `make demo` runs the demo, `make bench` prints the benchmark figures.
CARGO ?= cargo
TRIPLE := x86_64-unknown-linux-gnu
REL := target/release

.PHONY: all build restorer test demo demo-ckpt bench clean install

all: build

build:
	$(CARGO) build --release --workspace
	$(MAKE) restorer

# The restorer is a static-pie: no dynamic loader and no shared libraries to collide
# with the image's address space. Built for an explicit target so RUSTFLAGS do not
# reach the cdylib.
restorer:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p ckpt --features restorer --bin mosrestart --target $(TRIPLE)
	@mkdir -p $(REL)
	cp target/$(TRIPLE)/release/mosrestart $(REL)/mosrestart.new && mv $(REL)/mosrestart.new $(REL)/mosrestart

# HTCondor's own event-log reader (htcondor2.JobEventLog, from the htcondor wheel on
# PyPI), for the tests that check mos writes HTCondor's user-log format
VENV := target/venv-htcondor
TOOLS := target/.tools-ok

test: build $(VENV)/.ok $(TOOLS)
	MOS_CONDOR_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) test --release --workspace --no-fail-fast -- --test-threads=2

# programs the suite drives: tmux (mos top on a terminal), ip (the --netns test bed),
# script (a terminal for mos migrate's progress), chromium (mos dashboard in a real
# browser); installed from Debian's packages when missing (as root), else named
$(TOOLS):
	@if ! command -v tmux >/dev/null || ! command -v ip >/dev/null || ! command -v script >/dev/null || ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux iproute2 bsdutils chromium; \
		else echo "make test needs tmux, iproute2, script and chromium (apt-get install tmux iproute2 bsdutils chromium)" >&2; exit 1; fi; \
	fi
	@mkdir -p target && touch $@

$(VENV)/.ok:
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check htcondor
	$(VENV)/bin/python -c 'import htcondor2'
	touch $@

# the main job on a local cluster (3 nodes, one killed mid-run)
demo: build
	bash scripts/cluster_demo.sh

# checkpoint/restart of a single process, no cluster
demo-ckpt: build
	bash scripts/demo.sh

bench: build
	$(CARGO) run --profile bench-run -p mos-bench
	$(CARGO) run --release -p placer --bin placer_bench

# programs, library, restorer, systemd units, man pages and completions under PREFIX
# (staged in DESTDIR); see scripts/install.sh for the layout
PREFIX ?= /usr/local
DESTDIR ?=
install: build
	bash scripts/install.sh "$(PREFIX)" "$(DESTDIR)"

clean:
	$(CARGO) clean
