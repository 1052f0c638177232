#!/usr/bin/env bash
# Runs the same client suite against MLflow's own server, to show the suite describes MLflow
# truthfully (Ballast-only checks are skipped there: BALLAST_NATIVE_URL is unset).
#
# Usage: tests/mlflow/run-reference.sh PYTHON   (PYTHON: a python with the full `mlflow`
# package, pandas, cloudpickle and pytest installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE="$PWD/tests/mlflow/test_client.py"

PY="${1:?usage: run-reference.sh PYTHON}"
if [[ "$PY" == */* ]]; then
    PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
fi
MLFLOW="$(dirname "$PY")/mlflow"

DATA="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
LOG="$DATA/server.log"
"$MLFLOW" server --backend-store-uri "sqlite:///$DATA/mlflow.db" --artifacts-destination "$DATA/artifacts" \
    --serve-artifacts --host 127.0.0.1 --port "$PORT" --workers 1 >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "run-reference.sh: the MLflow server exited:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.1
done

export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
unset BALLAST_NATIVE_URL
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=0
cd "$DATA"
"$PY" -m pytest -q -p no:cacheprovider "$SUITE" "${@:2}"
