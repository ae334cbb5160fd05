#!/usr/bin/env bash
# Run the ProFL app on the deployment that deploy/up.sh started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
Usage: deploy/run.sh [--state DIR] [--app DIR] [--] [RUN_CONFIG ...]

Runs  FLWR_HOME=<state>/.flwr/cli flwr run <app> $CONNECTION --stream --run-config ...
and prints where the ServerApp wrote results.json. Each RUN_CONFIG argument is passed
as one --run-config (TOML values: strings need quotes), e.g.

  deploy/run.sh "num-server-rounds=20 width=0.25" "outputs-dir='/tmp/profl'"

data-dir defaults to the --data-dir given to deploy/up.sh (the ServerApp loads the test
split from it); a data-dir in RUN_CONFIG wins. A relative outputs-dir is resolved
against the repo (the SuperLink's working directory). A single RUN_CONFIG ending in
.toml is passed alone (then give data-dir in that file).

  --state DIR   the folder given to deploy/up.sh (default: deploy/.state)
  --app DIR     the Flower app (default: the repo, $REPO_DIR)
  -h, --help    this text

Exit status: that of 'flwr run', or 1 when no results.json was reported.
USAGE
}

state="$DEFAULT_STATE"
app="$REPO_DIR"
run_configs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --state) state="${2:?--state needs a value}"; shift 2 ;;
        --app) app="${2:?--app needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; run_configs+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) run_configs+=("$1"); shift ;;
    esac
done
use_venv
state="$(abspath "$state")"
[[ -s "$state/deployment.env" ]] || die "no deployment in $state: start one with deploy/up.sh"
ADDRESS="" CLI_HOME="" DATA_DIR=""
# shellcheck source=/dev/null
source "$state/deployment.env"
[[ -s "$CLI_HOME/config.toml" ]] || die "$CLI_HOME/config.toml is missing: run deploy/up.sh again"

args=()
if ((${#run_configs[@]} == 1)) && [[ "${run_configs[0]}" == *.toml ]]; then
    args+=(--run-config "${run_configs[0]}")
else
    # Flower applies --run-config arguments in order, so the user's data-dir wins.
    args+=(--run-config "data-dir='$DATA_DIR'")
    for c in "${run_configs[@]}"; do args+=(--run-config "$c"); done
fi

mkdir -p "$state/logs"
run_log="$state/logs/run-$(date +%Y%m%d-%H%M%S).log"
log "flwr run $app $CONNECTION --stream ${args[*]}  (SuperLink $ADDRESS; log: $run_log)"
set +e
FLWR_HOME="$CLI_HOME" flwr run "$app" "$CONNECTION" --stream "${args[@]}" 2>&1 | tee "$run_log"
rc=${PIPESTATUS[0]}
set -e

# The ServerApp logs "results go to <path>" (server_app/results.py); strip colour codes.
results="$(sed -e 's/\x1b\[[0-9;]*m//g' "$run_log" | sed -n 's/.*results go to \(.*results\.json\).*/\1/p' | tail -n 1)"
run_id="$(sed -e 's/\x1b\[[0-9;]*m//g' "$run_log" | sed -n 's/.*Successfully started run \([0-9][0-9]*\).*/\1/p' | tail -n 1)"
status=""
if [[ -n "$run_id" ]]; then
    log "run id: $run_id (FLWR_HOME=$CLI_HOME flwr log $run_id $CONNECTION --show)"
    status="$(FLWR_HOME="$CLI_HOME" flwr ls "$CONNECTION" --run-id "$run_id" --format json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])' 2>/dev/null || true)"
    log "run status: ${status:-unknown}"
    if [[ "$status" != "finished:completed" ]] && ((rc == 0)); then rc=1; fi
fi
if [[ -n "$results" && -s "$results" ]]; then
    log "results: $results"
    python3 - "$results" <<'PY' >&2 || true
import json, sys
s = json.load(open(sys.argv[1])).get("summary")
if s is None:
    print("[run.sh] results.json has no summary: the run did not finish")
else:
    keys = ("final_accuracy", "schedule_done", "rounds", "refusals", "budgets_mb")
    print("[run.sh] summary: " + ", ".join(f"{k}={s.get(k)}" for k in keys))
PY
    printf 'RESULTS=%s\n' "$results"
elif [[ -n "$results" ]]; then
    log "the ServerApp announced $results but it does not exist (the ServerApp runs on the SuperLink host)"
    ((rc != 0)) || rc=1
else
    log "no results.json was reported; see $run_log and $state/logs/superlink.log"
    ((rc != 0)) || rc=1
fi
exit "$rc"
