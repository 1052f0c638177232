#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the test suite and prints the line that
# points the tests at it:   eval "$(.ci/postgres.sh)"
# Installs the distribution's PostgreSQL first when it is missing (Debian/Ubuntu, as root).
# Reuses a cluster this script already started (and then does not set BALLAST_PG_STARTED).
# Stop it with: .ci/postgres.sh stop
set -euo pipefail

PORT="${BALLAST_PG_PORT:-54329}"
DIR="${BALLAST_PG_DIR:-/tmp/ballast-test-pg}"

bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ -z "$(bindir)" ]; then
    echo "installing PostgreSQL…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q postgresql >&2
fi
BIN="$(bindir)"

# The server refuses to run as root: run it as the `postgres` user the package created.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ "${1:-}" = stop ]; then
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true
    exit 0
fi

if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=400 -c fsync=on" start >&2
    echo "export BALLAST_PG_STARTED=1"
fi
echo "export BALLAST_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
