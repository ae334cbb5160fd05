#!/usr/bin/env bash
# Stop the processes that deploy/up.sh started (and only those).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
Usage: deploy/down.sh [--state DIR] [--grace S]

Stops the SuperNodes, then the SuperLink, whose PIDs deploy/up.sh recorded in
<state>/pids, together with the processes they started (flower-superexec,
flwr-serverapp, flwr-clientapp). A recorded PID is signalled only while its
command line still names this deployment's key or certificate, so a reused PID
is never hit. SIGTERM first; SIGKILL for whatever is left after the grace period.

  --state DIR   the folder given to deploy/up.sh (default: deploy/.state)
  --grace S     seconds between SIGTERM and SIGKILL (default: 10)
  -h, --help    this text
USAGE
}

state="$DEFAULT_STATE"
grace=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --state) state="${2:?--state needs a value}"; shift 2 ;;
        --grace) grace="${2:?--grace needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$grace" =~ ^[0-9]+$ ]] || die "--grace must be a whole number of seconds"
state="$(abspath "$state")"
pids_file="$state/pids"
if [[ ! -s "$pids_file" ]]; then
    log "nothing recorded in $pids_file: nothing to stop"
    exit 0
fi

mapfile -t entries <"$pids_file"
# SuperNodes first (they deregister cleanly while the SuperLink is still up), SuperLink last.
ordered=()
for e in "${entries[@]}"; do [[ "$e" == superlink$'\t'* ]] || ordered+=("$e"); done
for e in "${entries[@]}"; do [[ "$e" == superlink$'\t'* ]] && ordered+=("$e"); done

# Running and not a zombie (a zombie whose parent is init may linger until it is reaped).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# Stop one recorded process and its descendants.
stop_tree() {
    local role="$1" pid="$2" mark="$3" tree p deadline
    if ! pid_is_ours "$pid" "$mark"; then
        log "$role (PID $pid): not running"
        return 0
    fi
    # Remember the descendants now: they are re-parented once the leader exits.
    mapfile -t tree < <(descendants "$pid")
    log "$role (PID $pid): SIGTERM (children: ${tree[*]:-none})"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    # Children started after the snapshot (e.g. a ClientApp that was just launched).
    for p in "${tree[@]}"; do
        if alive "$p"; then mapfile -t -O "${#tree[@]}" tree < <(descendants "$p"); fi
    done
    for p in "${tree[@]}"; do
        if alive "$p"; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    deadline=$((SECONDS + 3))
    for p in "$pid" "${tree[@]}"; do
        while alive "$p" && ((SECONDS < deadline)); do sleep 0.2; done
    done
    for p in "$pid" "${tree[@]}"; do
        if alive "$p"; then
            log "$role: PID $p still alive after SIGTERM: SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
}

for e in "${ordered[@]}"; do
    IFS=$'\t' read -r role pid mark <<<"$e"
    stop_tree "$role" "$pid" "$mark"
done
rm -f "$pids_file"
log "stopped; logs stay in $state/logs"
