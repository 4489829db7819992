# settled: build, test, benchmark and lint. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: all deps test-deps build test bench lint fmt run clean-data fuzz

all: build

# Where cargo puts its output (CI points CARGO_TARGET_DIR at a cache outside the clone).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# The toolchain comes with the machine; native libraries the build needs are installed
# here when missing (RocksDB's bindings need libclang: scripts/deps.sh says why and how).
deps:
	@./scripts/deps.sh

# RocksDB is compiled from C++ the first time a profile is built: say so before a new user
# wonders why nothing moves. $(1) is the profile's directory (debug or release).
define rocksdb_notice
	@if ! ls $(TARGET_DIR)/$(1)/build/librocksdb-sys-*/output >/dev/null 2>&1; then \
		echo "first $(1) build: compiling RocksDB from C++ takes about 10 minutes on 2 cores"; \
	fi
endef

build: deps
	$(call rocksdb_notice,release)
	$(CARGO) build --release --workspace

# The metrics tests run a real Prometheus: install it when missing (see scripts/deps.sh).
test-deps:
	@./scripts/deps.sh --test

# The workspace's tests include the deterministic simulation (engine/tests/simulation.rs:
# 64 seeds, about 25 s; README "Simulation" for one seed or a soak run).
# Then crash cycles over TCP against the release daemon: kill -9 under load at least 20
# times, restart, check that nothing acknowledged was lost or applied twice (README:
# Development says how to run more cycles).
test: deps test-deps
	$(call rocksdb_notice,debug)
	$(CARGO) test --workspace
	$(call rocksdb_notice,release)
	$(CARGO) build --release -p settled-engine --bin settled -p settled-bench --bin settle-crash
	$(TARGET_DIR)/release/settle-crash --cycles 20

# Criterion benches of every crate, the memory measurement of the ledger, and the durable
# throughput of the in-process engine with 1 and 4 submitters.
bench: deps
	$(CARGO) bench --workspace
	$(CARGO) run --release -p settled-bench --bin ledger-memory
	$(CARGO) run --release -p settled-bench --bin memory-floor -- --accounts 10000
	$(CARGO) run --release -p settled-bench --bin memory-floor -- --accounts 1000000
	$(CARGO) run --release -p settled-bench --bin ledger-upkeep -- --accounts 10000
	$(CARGO) run --release -p settled-bench --bin ledger-upkeep -- --accounts 1000000
	# The slowest one-transfer request while a fresh ledger fills to 3 M transfers.
	$(CARGO) run --release -p settled-bench --bin ledger-growth -- --transfers 3000000
	$(CARGO) run --release -p settled-bench --bin ledger-growth -- --new-accounts 10000000
	$(CARGO) run --release -p settled-bench --bin engine-throughput -- --submitters 1 --requests 200
	$(CARGO) run --release -p settled-bench --bin engine-throughput -- --submitters 4 --requests 100
	# The ceiling of one-transfer requests: loopback request/reply with nothing behind it.
	$(CARGO) run --release -p settled-bench --bin loopback-floor -- --clients 64
	$(CARGO) run --release -p settled-bench --bin loopback-floor -- --clients 16
	# The same with each group of requests made durable (fdatasync) before its replies.
	$(CARGO) run --release -p settled-bench --bin loopback-floor -- --clients 64 --sync-dir "$${TMPDIR:-/tmp}"
	# The daemon over TCP: requests of one transfer (issue 16's goal: 100 k/s at 64
	# connections, 50 k/s at 16), then a restart after 1 M and 10 M transfers of history.
	$(CARGO) build --release -p settled-engine --bin settled -p settled-bench --bin settle-bench
	$(TARGET_DIR)/release/settle-bench --clients 64 --batch-size 1 --transfers 1000000
	$(TARGET_DIR)/release/settle-bench --clients 16 --batch-size 1 --transfers 300000
	$(TARGET_DIR)/release/settle-bench --transfers 1000000 --restart
	$(TARGET_DIR)/release/settle-bench --restart

lint: deps
	$(call rocksdb_notice,debug)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# libFuzzer targets in fuzz/ (README "Fuzzing"), each run for FUZZ_SECONDS on one core.
# Not part of `make test`: it needs a nightly toolchain and cargo-fuzz, and its first build
# compiles RocksDB once more (instrumented). `make test` runs the same checks as proptests.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := frame_header request_body cli_events wal_record wal_recovery
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target; \
		seeds=$$(test -d seeds/$$target && echo seeds/$$target); \
		$(CARGO) +nightly fuzz run --debug-assertions $$target corpus/$$target $$seeds \
			-- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# Build release binaries (settled, settle) and start the daemon on the default config and
# data directory (./data). Stop it with Ctrl-C: it finishes in-flight work and checkpoints.
run: deps
	$(call rocksdb_notice,release)
	$(CARGO) build --release -p settled-engine --bin settled -p settled-client --bin settle
	$(TARGET_DIR)/release/settled --config config/settled.toml