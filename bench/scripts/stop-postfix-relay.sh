#!/usr/bin/env bash
# bench/scripts/stop-postfix-relay.sh DIR -- stop the instance started by bench/scripts/start-postfix-relay.sh DIR ... and wait for it.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$(cd "$1" && pwd)
PIDFILE="$DIR/spool/pid/master.pid"
[ -f "$PIDFILE" ] || { echo "no $PIDFILE: not running" >&2; exit 0; }
PID=$(head -1 "$PIDFILE" | tr -d ' ')
# `postfix -c DIR/etc stop` does the same kill but then sleeps in 1 s steps; signal directly.
# The master then SIGTERMs its whole process group (all postfix daemons of this instance).
kill -TERM "$PID" 2>/dev/null || true
# A daemonized master is re-parented to PID 1; if PID 1 is slow to reap, the exited master
# lingers as a zombie and `kill -0` still succeeds, so test the process state instead.
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $st != Z* ]]; }
for _ in $(seq 1 100); do
    alive "$PID" || { echo "postfix master $PID stopped"; exit 0; }
    sleep 0.1
done
echo "postfix master $PID still alive after 10s, sending SIGKILL" >&2
kill -KILL "$PID" 2>/dev/null || true
