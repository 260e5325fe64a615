# mailshift development recipes (https://github.com/casey/just)

default:
    @just --list

# Build the release binary
build:
    cargo build --release

# The whole test suite (installs/starts Dovecot, PostgreSQL, RabbitMQ as needed)
test *ARGS:
    ./scripts/test {{ARGS}}

# What CI runs
ci:
    bash .ci/run

# Format and lint
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark: mailshift vs a minimal copier on loopback Dovecot (MAILSHIFT_BENCH_MESSAGES, MAILSHIFT_BENCH_RUNS)
bench:
    command -v dovecot >/dev/null || ./scripts/install-dovecot
    cargo build --release -p mailshift
    cargo bench -p mailshift-tests --bench migrate

# Fleet control plane: 10,000 no-op folder jobs through RabbitMQ and PostgreSQL
bench-fleet:
    cargo bench -p mailshift --bench fleet
