#!/usr/bin/env bash
# Runs the benchmark programs and prints the Markdown that docs/PERFORMANCE.md records:
# Memory's CreateEvent/ListEvents (SQLite and the test PostgreSQL server), sandbox cold start
# per tier, the embedded embedder's throughput, memory-record retrieval latency, and Runtime
# (cold start to an answering agent, invocation overhead, idle density, 100 MB payload) and the
# Code Interpreter (session start to first result, print(1) round trip, 100 MB files). Run it
# on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PYTHON="${BENCH_PYTHON:-python3}"
cargo build --release -p berth-bench -p berth
PG_URL="$(bash tools/ensure-postgres.sh)"
"$TARGET/release/berth-bench" --postgres "$PG_URL" "$@"
echo
"$TARGET/release/berth-bench" --sandboxes "$TARGET/release/berth"
echo
"$TARGET/release/berth-bench" --embed "${BERTH_MODELS_DIR:-$HOME/.cache/berth/models}"
echo
"$TARGET/release/berth-bench" --retrieval "${BERTH_MODELS_DIR:-$HOME/.cache/berth/models}"
echo
"$TARGET/release/berth-bench" --quality "${BERTH_MODELS_DIR:-$HOME/.cache/berth/models}"
echo
"$TARGET/release/berth-bench" --extraction "${BERTH_MODELS_DIR:-$HOME/.cache/berth/models}"
echo
"$PYTHON" tools/bench_runtime.py --berth "$TARGET/release/berth"
echo
"$PYTHON" tools/bench_interpreter.py --berth "$TARGET/release/berth"
