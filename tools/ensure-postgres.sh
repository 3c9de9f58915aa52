#!/usr/bin/env bash
# Makes sure a PostgreSQL server for Berth's tests is running, installing Debian's PostgreSQL
# when it is missing, and prints its admin URL. Idempotent: a second run only checks.
# With --drop-test-databases it also drops the databases earlier test runs created.
#
# The server is a private cluster (trust auth, loopback only, port $BERTH_PG_PORT) in
# $BERTH_PG_DIR, so it never touches a system cluster.
set -euo pipefail
PORT="${BERTH_PG_PORT:-55432}"
DIR="${BERTH_PG_DIR:-/var/tmp/berth-postgres}"
URL="postgres://postgres@127.0.0.1:${PORT}/postgres"

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(find_bin)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "ensure-postgres: installing postgresql from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

drop_test_databases() {
  "$BIN/psql" "$URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'berth\_test\_%' OR datname LIKE 'berth\_conf\_%' OR datname LIKE 'berth\_bench\_%'" |
    while read -r name; do "$BIN/psql" "$URL" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null; done
}

ready() {
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || return 1
  if [ "${1:-}" = "--drop-test-databases" ]; then drop_test_databases; fi
  echo "$URL"
}

if ready "${1:-}"; then
  exit 0
fi

RUN_AS=()
if [ "$(id -u)" = "0" ]; then
  RUN_AS=(runuser -u postgres --)
  mkdir -p "$DIR"
  chown postgres:postgres "$DIR"
fi
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  "${RUN_AS[@]}" "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
fi
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c fsync=on" start >/dev/null
for _ in $(seq 1 60); do
  ready "${1:-}" && exit 0
  sleep 0.5
done
echo "ensure-postgres: the server did not become ready; see $DIR/server.log" >&2
exit 1
