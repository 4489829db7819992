# settled: build, test, benchmark and lint. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: all deps build test bench lint fmt run clean-data

all: build

# The toolchain comes with the machine; native libraries needed by the build are installed
# here when missing (RocksDB's bindings, from the engine issue on, need libclang).
deps:
	@if ! ldconfig -p 2>/dev/null | grep -q libclang; then \
		echo "installing libclang (needed to build RocksDB's bindings)"; \
		apt-get update -qq && apt-get install -y -qq libclang-dev clang >/dev/null; \
	fi

build: deps
	$(CARGO) build --release --workspace

test: deps
	$(CARGO) test --workspace

# Criterion benches of every crate, the memory measurement of the ledger, and the durable
# throughput of the in-process engine with 1 and 4 submitters.
bench: deps
	$(CARGO) bench --workspace
	$(CARGO) run --release -p settled-bench --bin ledger-memory
	$(CARGO) run --release -p settled-bench --bin memory-floor -- --accounts 10000
	$(CARGO) run --release -p settled-bench --bin memory-floor -- --accounts 1000000
	$(CARGO) run --release -p settled-bench --bin ledger-upkeep -- --accounts 10000
	$(CARGO) run --release -p settled-bench --bin ledger-upkeep -- --accounts 1000000
	$(CARGO) run --release -p settled-bench --bin engine-throughput -- --submitters 1 --requests 200
	$(CARGO) run --release -p settled-bench --bin engine-throughput -- --submitters 4 --requests 100

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Build release binaries (settled, settle) and start the daemon on the default config and
# data directory (./data). Stop it with Ctrl-C: it finishes in-flight work and checkpoints.
run: deps
	$(CARGO) build --release -p settled-engine --bin settled -p settled-client --bin settle
	./target/release/settled --config config/settled.toml