#!/usr/bin/env bash
# Runs the same client suite against MLflow's own server, to show the suite describes MLflow
# truthfully. Ballast-only tests (and Ballast's documented, intentional differences) are skipped
# there with their reason: BALLAST_NATIVE_URL is unset.
#
# Starts `mlflow server` (SQLite backend, artifacts proxy) on a free loopback port over a
# temporary directory, in its own process group (it forks uvicorn), and stops that group when
# done.
#
# Usage: tests/mlflow/run-reference.sh PYTHON [PYTEST ARGS...]   (PYTHON: a python with the full
# `mlflow` package, pandas, cloudpickle and pytest installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE="$PWD/tests/mlflow/test_client.py"

PY="${1:?usage: run-reference.sh PYTHON [PYTEST ARGS...]}"
if [[ "$PY" == */* ]]; then
    PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
fi
MLFLOW="$(dirname "$PY")/mlflow"
if [ ! -x "$MLFLOW" ]; then
    echo "run-reference.sh: no mlflow command next to $PY (install the full mlflow package)" >&2
    exit 1
fi

DATA="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
LOG="$DATA/server.log"
# No background job runner: the suite needs none, and it would take several processes.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" server \
    --backend-store-uri "sqlite:///$DATA/mlflow.db" --artifacts-destination "$DATA/artifacts" \
    --serve-artifacts --host 127.0.0.1 --port "$PORT" --workers 1 >"$LOG" 2>&1 &
PID=$!  # setsid makes it the leader of its own process group: PGID = PID
cleanup() {
    kill -TERM -- "-$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 -- "-$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

started=$SECONDS
ready=
for _ in $(seq 1 1200); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "run-reference.sh: the MLflow server exited:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "run-reference.sh: the MLflow server did not become ready within 120 s:" >&2
    cat "$LOG" >&2
    exit 1
fi
echo "MLflow $("$PY" -c 'import mlflow; print(mlflow.__version__)') server ready on 127.0.0.1:$PORT after $((SECONDS - started)) s"

export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
unset BALLAST_NATIVE_URL MLFLOW_TRACKING_TOKEN
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=0
cd "$DATA"
if ! "$PY" -m pytest -q -p no:cacheprovider -rs "$SUITE" "${@:2}"; then
    echo "--- MLflow server log (last 50 lines)" >&2
    tail -50 "$LOG" >&2
    exit 1
fi
