#!/usr/bin/env bash
# make deploy / undeploy / status with DEPLOY_TARGET=local: a daemonised gunicorn with a pidfile on this machine.
# deploy: start it (and wait for /health/ready), or, when it runs, reload it gracefully (SIGHUP: new workers load
# the current code and models, old ones finish their requests) and wait until every worker is a new one and ready.
# Settings come from AGSERVE_* variables as always (AGSERVE_ENV defaults to production here).
# A failing step prints its reason on the last line, exits 1, and leaves no pidfile of a server that is not running.
# status: exit 0 with "running: ..." or "not running".
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:?usage: deploy/local.sh deploy|undeploy|status}
BIN=${BIN:-.venv/bin}
DEPLOY_DIR=${DEPLOY_DIR:-var/deploy}
PIDFILE=$DEPLOY_DIR/agserve.pid
LOGFILE=$DEPLOY_DIR/agserve.log
export AGSERVE_ENV=${AGSERVE_ENV:-production}
READY_TIMEOUT=${READY_TIMEOUT:-180}

step() { echo "deploy: $*"; }
fail() { echo "deploy: FAILED: $*" >&2; exit 1; }

bind=$("$BIN/python" -c 'from app.config import load_settings; print(load_settings()["BIND"])' 2>/dev/null) \
  || bind=${AGSERVE_BIND:-127.0.0.1:8000}  # deploy refuses broken settings below, with their reason
base="http://${bind/0.0.0.0/127.0.0.1}"

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

workers_of() { pgrep -P "$1" | sort | tr '\n' ' ' || true; }  # no workers yet is not an error

port_in_use() {  # whether something already listens on the bind address
  "$BIN/python" - "$bind" <<'PY'
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
with socket.socket() as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is not "in use"
    try:
        sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError:
        sys.exit(0)
sys.exit(1)
PY
}

readiness() {  # "ready", "pending", or "failed: <reason>" (a model refused at load: waiting cannot help)
  local body; body=$(curl -s --max-time 5 "$base/health/ready" 2>/dev/null) || true
  "$BIN/python" - "$body" "$LOGFILE" <<'PY'
import json, sys
try:
    body = json.loads(sys.argv[1])
except ValueError:  # not answering yet
    sys.exit(print("pending"))
if body.get("status") == "ready":
    sys.exit(print("ready"))
# An anonymous caller in production sees counts only; the reasons are in this server's own log.
reasons = {}
with open(sys.argv[2], errors="replace") as log:
    for line in log:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("message", "")).startswith("model failed to load: "):
            reasons[entry.get("model")] = entry["message"].removeprefix("model failed to load: ")
if body.get("models_failed"):
    print("failed: " + ("; ".join(f"{name}: {why}" for name, why in sorted(reasons.items()))
                        or body.get("reason", "a model failed to load")))
elif body.get("reason") == "no model is served" or body.get("reason", "").startswith("no model with an active"):
    print("failed: " + body["reason"])
else:
    print("pending")
PY
}

stop_started() {  # $1: the master this run started and that cannot serve; stop it and leave nothing behind
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  rm -f "$PIDFILE"
}

log_tail() { echo "deploy: last lines of $LOGFILE:" >&2; tail -n 5 "$LOGFILE" | sed 's/^/  /' >&2; }

wait_ready() {  # $1: master pid; $2: worker pids that must all be gone (an update), or empty; $3: "started" or ""
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$1" 2>/dev/null; then
      rm -f "$PIDFILE"
      log_tail
      fail "gunicorn exited: $(grep -E 'configuration error|Connection in use|failed to boot|Error' "$LOGFILE" \
        | tail -n 1 | cut -c1-300)"
    fi
    local current; current=$(workers_of "$1")
    local stale=0
    for old in $2; do case " $current " in *" $old "*) stale=1 ;; esac; done
    if [ $stale = 0 ]; then
      local state; state=$(readiness) || true
      case "$state" in
        ready) return 0 ;;
        failed:*)
          if [ "$3" = started ]; then
            stop_started "$1"
            fail "a model cannot be served, stopped the new server: ${state#failed: }"
          fi
          fail "the reloaded workers cannot serve (gunicorn $1 still runs; fix it and deploy again): ${state#failed: }"
          ;;
      esac
    fi
    sleep 0.5
  done
  [ "$3" = started ] && stop_started "$1"
  fail "not ready within ${READY_TIMEOUT}s; see $LOGFILE"
}

case "$action" in
  deploy)
    mkdir -p "$DEPLOY_DIR"
    step "checking the settings and the model repository (AGSERVE_ENV=$AGSERVE_ENV)"
    # Checked the way the server checks them: the reason is agserve's own last line.
    checked=$("$BIN/agserve" models list 2>&1 >/dev/null) || fail "${checked##*$'\n'}"
    if pid=$(running_pid); then
      old=$(workers_of "$pid")
      step "updating: graceful reload of gunicorn $pid (workers $old)"
      kill -HUP "$pid"
      wait_ready "$pid" "$old" ""
      step "updated: new workers $(workers_of "$pid")ready at $base"
    else
      if [ -f "$PIDFILE" ]; then
        step "removing the stale pidfile of gunicorn $(cat "$PIDFILE"), which no longer runs"
        rm -f "$PIDFILE"
      fi
      port_in_use \
        && fail "$bind is already in use by another process (make run? another deploy?): stop it or set AGSERVE_BIND"
      step "starting gunicorn on $bind (log: $LOGFILE, pidfile: $PIDFILE)"
      setsid "$BIN/gunicorn" -c gunicorn.conf.py --pid "$PIDFILE" wsgi:app >>"$LOGFILE" 2>&1 < /dev/null &
      starting=$!
      for _ in $(seq 1 100); do [ -s "$PIDFILE" ] && break; kill -0 "$starting" 2>/dev/null || break; sleep 0.1; done
      pid=$(running_pid) || { rm -f "$PIDFILE"; log_tail; fail "gunicorn did not start: $(tail -n 1 "$LOGFILE")"; }
      wait_ready "$pid" "" started
      step "serving at $base (gunicorn $pid, workers $(workers_of "$pid"))"
    fi
    ;;
  undeploy)
    if pid=$(running_pid); then
      step "stopping gunicorn $pid gracefully (SIGTERM)"
      kill -TERM "$pid"
      for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && fail "gunicorn $pid still runs after 60 s"
      rm -f "$PIDFILE"
      step "stopped"
    else
      rm -f "$PIDFILE"
      step "nothing deployed here"
    fi
    ;;
  status)
    if pid=$(running_pid); then
      echo "running: gunicorn $pid, workers $(workers_of "$pid")at $base"
      curl -s "$base/health/ready" || true
      echo
    else
      echo "not running"
    fi
    ;;
  *) fail "unknown action $action" ;;
esac
