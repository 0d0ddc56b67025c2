#!/usr/bin/env bash
# make deploy / undeploy / status with DEPLOY_TARGET=local: a daemonised gunicorn with a pidfile on this machine.
# deploy: start it (and wait for /health/ready), or, when it runs, reload it gracefully (SIGHUP: new workers load
# the current code and models, old ones finish their requests) and wait until every worker is a new one and ready.
# Settings come from AGSERVE_* variables as always (AGSERVE_ENV defaults to production here).
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

bind=$("$BIN/python" -c 'from app.config import load_settings; print(load_settings()["BIND"])') \
  || fail "the settings are invalid (see the line above)"
base="http://${bind/0.0.0.0/127.0.0.1}"

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

workers_of() { pgrep -P "$1" | sort | tr '\n' ' '; }

wait_ready() {  # $1: master pid; $2: worker pids that must all be gone (an update), or empty
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$1" 2>/dev/null || fail "gunicorn exited; see $LOGFILE"
    local current; current=$(workers_of "$1")
    local stale=0
    for old in $2; do case " $current " in *" $old "*) stale=1 ;; esac; done
    if [ $stale = 0 ] && curl -sf "$base/health/ready" >/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  fail "not ready within ${READY_TIMEOUT}s; see $LOGFILE"
}

case "$action" in
  deploy)
    mkdir -p "$DEPLOY_DIR"
    step "checking the settings and the served models' files (AGSERVE_ENV=$AGSERVE_ENV)"
    "$BIN/agserve" models list >/dev/null || fail "the model repository cannot be read"
    if pid=$(running_pid); then
      old=$(workers_of "$pid")
      step "updating: graceful reload of gunicorn $pid (workers $old)"
      kill -HUP "$pid"
      wait_ready "$pid" "$old"
      step "updated: new workers $(workers_of "$pid")ready at $base"
    else
      step "starting gunicorn on $bind (log: $LOGFILE, pidfile: $PIDFILE)"
      setsid "$BIN/gunicorn" -c gunicorn.conf.py --pid "$PIDFILE" wsgi:app >>"$LOGFILE" 2>&1 < /dev/null &
      for _ in $(seq 1 100); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
      pid=$(running_pid) || fail "gunicorn did not start; see $LOGFILE"
      wait_ready "$pid" ""
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
      exit 3
    fi
    ;;
  *) fail "unknown action $action" ;;
esac
