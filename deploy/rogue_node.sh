#!/usr/bin/env bash
# Check that the SuperLink refuses a SuperNode whose key was never registered.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
Usage: deploy/rogue_node.sh [--state DIR] [--port P] [--timeout S]

Starts one SuperNode against the deployment of deploy/up.sh with a FRESH, unregistered
ECDSA key (and the right CA, so TLS itself succeeds) and --max-retries 2.
Exit 0 when the SuperLink refused it (the SuperNode exits non-zero and logs
"Failed to activate SuperNode"), 1 when it was accepted or the outcome is unclear.
Log: <state>/logs/rogue.log

  --state DIR   the folder given to deploy/up.sh (default: deploy/.state)
  --port P      the rogue SuperNode's Runtime API port (default: 9499)
  --timeout S   give up after S seconds (default: 60)
  -h, --help    this text
USAGE
}

state="$DEFAULT_STATE"
port=9499
timeout_s=60
while [[ $# -gt 0 ]]; do
    case "$1" in
        --state) state="${2:?--state needs a value}"; shift 2 ;;
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --timeout) timeout_s="${2:?--timeout needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer"
use_venv
state="$(abspath "$state")"
[[ -s "$state/deployment.env" ]] || die "no deployment in $state: start one with deploy/up.sh"
ADDRESS="" CA="" CLI_HOME=""
# shellcheck source=/dev/null
source "$state/deployment.env"

rogue="$state/rogue"
home="$rogue/.flwr"
mkdir -p "$rogue" "$home" "$state/logs"
rm -f "$rogue/key" "$rogue/key.pub"
ssh-keygen -q -t ecdsa -b 384 -N "" -C "profl-rogue" -f "$rogue/key"
rogue_log="$state/logs/rogue.log"

: >"$rogue_log"
log "starting a SuperNode with an unregistered key against $ADDRESS (log: $rogue_log)"
FLWR_HOME="$home" flower-supernode \
    --root-certificates "$CA" \
    --superlink "$ADDRESS" \
    --auth-supernode-private-key "$rogue/key" \
    --port "$port" \
    --max-retries 2 --max-wait-time "$timeout_s" \
    --node-config "partition-id=0 num-partitions=1 memory-mb=100000" \
    </dev/null >"$rogue_log" 2>&1 &
pid=$!

# Ends when the SuperNode exits, when it is accepted ("SuperNode ID:"), or at the timeout.
verdict=""
deadline=$((SECONDS + timeout_s))
while kill -0 "$pid" 2>/dev/null; do
    if grep -q "SuperNode ID:" "$rogue_log"; then
        verdict="accepted"
        break
    fi
    if ((SECONDS >= deadline)); then
        verdict="timeout"
        break
    fi
    sleep 0.2
done
if [[ -n "$verdict" ]]; then
    for p in $(descendants "$pid") "$pid"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in $(descendants "$pid") "$pid"; do kill -KILL "$p" 2>/dev/null || true; done
fi
set +e
wait "$pid"
rc=$?
set -e

if [[ -z "$verdict" && $rc -ne 0 ]] && grep -q "Failed to activate" "$rogue_log"; then
    reason="$(grep -m1 -o '\[code: [0-9]*\] Failed to activate[^.]*' "$rogue_log" || echo "Failed to activate")"
    log "REFUSED as expected: exit code $rc, \"$reason\""
    # What a user whose device key is not registered would be told (deploy/lib.sh).
    explain_unregistered "rogue" "$rogue/key" "$rogue_log" "$state/logs/superlink.log" "$CLI_HOME" ||
        log "the SuperLink log does not name this key as unknown: $state/logs/superlink.log"
    exit 0
fi
case "$verdict" in
    accepted) log "SECURITY PROBLEM: the SuperLink accepted an unregistered SuperNode key" ;;
    timeout) log "no verdict within ${timeout_s}s" ;;
    *) log "unexpected outcome: exit code $rc and no 'Failed to activate' in the log" ;;
esac
tail -n 20 "$rogue_log" >&2 || true
exit 1
