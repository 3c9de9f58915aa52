#!/usr/bin/env bash
# Runs the benchmark program against SQLite and the test PostgreSQL server and prints the
# Markdown table that docs/PERFORMANCE.md records. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p berth-bench
PG_URL="$(bash tools/ensure-postgres.sh)"
"$TARGET/release/berth-bench" --postgres "$PG_URL" "$@"
