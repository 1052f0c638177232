#!/usr/bin/env bash
# Runs the MLflow client suite (tests/mlflow/test_client.py) against a fresh Ballast server:
# builds the binary, starts `ballast server` on a free loopback port over a temporary data
# directory, runs pytest with the real `mlflow` client, and stops the server by its PID.
#
# When the server writes an admin token (`<data-dir>/admin.token`, token authentication), it is
# exported as MLFLOW_TRACKING_TOKEN, which the MLflow client sends as `Authorization: Bearer`.
#
# Usage: tests/mlflow/run.sh [PYTHON [PYTEST ARGS...]]   (PYTHON: a python with mlflow-skinny,
# pandas, cloudpickle and pytest installed; default .venv-mlflow/bin/python)
# MLFLOW_SUITE_BIN=path/to/ballast uses that binary instead of building one.
# MLFLOW_SUITE_DATABASE_URL=postgres://… runs the server on that (empty) database instead of the
# embedded SQLite one.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${1:-.venv-mlflow/bin/python}"
if [[ "$PY" == */* ]]; then
    PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
fi
if ! "$PY" -c 'import mlflow, pandas, cloudpickle, pytest' 2>/dev/null; then
    echo "run.sh: $PY lacks mlflow/pandas/cloudpickle/pytest" >&2
    exit 1
fi

if [ -n "${MLFLOW_SUITE_BIN:-}" ]; then
    BIN="$MLFLOW_SUITE_BIN"
else
    cargo build --quiet -p ballast-cli
    BIN="${CARGO_TARGET_DIR:-target}/debug/ballast"
fi

DATA="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
LOG="$DATA/server.log"
DB_ARGS=()
if [ -n "${MLFLOW_SUITE_DATABASE_URL:-}" ]; then
    DB_ARGS=(--database-url "$MLFLOW_SUITE_DATABASE_URL")
fi
"$BIN" server --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" "${DB_ARGS[@]}" >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

ready=
for _ in $(seq 1 300); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/readyz')" 2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "run.sh: the server exited:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "run.sh: the server did not become ready within 30 s:" >&2
    cat "$LOG" >&2
    exit 1
fi

# With token authentication the server writes the admin token once it has started.
unset MLFLOW_TRACKING_TOKEN
if [ -s "$DATA/data/admin.token" ]; then
    MLFLOW_TRACKING_TOKEN="$(tr -d '[:space:]' <"$DATA/data/admin.token")"
    export MLFLOW_TRACKING_TOKEN
fi

export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
export BALLAST_NATIVE_URL="http://127.0.0.1:$PORT"
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=0
cd "$DATA"  # mlflow writes scratch files to the working directory
if ! "$PY" -m pytest -q -p no:cacheprovider "$OLDPWD/tests/mlflow/test_client.py" "${@:2}"; then
    echo "--- server log (last 50 lines)" >&2
    tail -50 "$LOG" >&2
    exit 1
fi
