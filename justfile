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

# --- Docker (docker/compose.yaml; docs/docker.md) ---
# `build` above already builds the same binary as the image (crates/cli is the only
# default member, so `cargo build --release` = `cargo build --release -p mailshift`).

# The Compose CLI: the plugin (`docker compose`) or Debian 12's docker-compose 1.29
compose := `docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose`

# Build mailshift:local from the host's release binary, no registry needed (starts an engine if none answers)
docker-image:
    ./scripts/docker-image

# Build the image, then migrate mailboxes with it against real PostgreSQL, RabbitMQ and Dovecot (what CI runs)
docker-e2e:
    ./scripts/docker-e2e

# Build the stack's images from the sources (docker/Dockerfile.source: needs a registry)
docker-build:
    {{compose}} -f docker/compose.yaml build

# Start the whole stack in the background, demo migration included
up:
    {{compose}} -f docker/compose.yaml up -d

# Stop and remove the stack's containers (`just down -v` also drops its data)
down *ARGS:
    {{compose}} -f docker/compose.yaml down {{ARGS}}

# Run n workers (they share the job queue; a scale-down stops the extra ones cleanly)
scale-workers n="3":
    {{compose}} -f docker/compose.yaml up -d --no-recreate --scale worker={{n}} worker

# Follow the stack's logs (all services, or the ones named: `just logs worker scheduler`)
logs *SERVICES:
    {{compose}} -f docker/compose.yaml logs -f --tail=100 {{SERVICES}}

# The stack's database from the host: MAILSHIFT_DATABASE_URL=postgres://mailshift:pg-DEMO-ONLY@127.0.0.1:55432/mailshift
# Apply the fleet's schema migrations to $MAILSHIFT_DATABASE_URL (with a local release build)
db-migrate:
    @test -n "${MAILSHIFT_DATABASE_URL:-}" || { echo "db-migrate: set MAILSHIFT_DATABASE_URL" >&2; exit 2; }
    cargo run --release --locked -p mailshift --bin mailshift -- db migrate

# Check docker/compose.yaml: Compose's own check, the compose-spec schema, the project's rules (no engine needed)
compose-check:
    ./scripts/check-compose
