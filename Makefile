# mos: `make` builds the release artifacts, `make test` runs the whole suite,
# `make demo` runs the demo, `make bench` prints the benchmark figures.
CARGO ?= cargo
TRIPLE := x86_64-unknown-linux-gnu
REL := target/release

.PHONY: all build restorer test demo bench clean

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

test: build
	$(CARGO) test --release --workspace -- --test-threads=2

demo: build
	bash scripts/demo.sh

bench: build
	$(CARGO) run --release -p mos-bench

clean:
	$(CARGO) clean
