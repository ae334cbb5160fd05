#!/usr/bin/env bash
# Wall time of the README's default run, from `flwr run` to its last line, in this checkout.
# Run it alone on the machine, from a fresh clone with the project installed (pip install -e .):
#   bash benchmarks/speed/first_run.sh OUT_DIR SEED DATA_DIR
# It stops any local SuperLink first (a fresh one starts), appends one JSON line to
# OUT_DIR/timed.jsonl and keeps the run's log and results.json under OUT_DIR.
set -u
OUT=$1; SEED=$2; DATA=$3
mkdir -p "$OUT"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_HOME="$PWD/.flwr-timed"
python -m server_app.local_superlink --stop > /dev/null 2>&1
start=$(date +%s.%N)
flwr run . --stream --federation-config "num-supernodes=20 client-resources-num-cpus=1" \
    --run-config "data-dir='$DATA' seed=$SEED outputs-dir='$OUT/runs'" > "$OUT/flwr-s$SEED.log" 2>&1
rc=$?
end=$(date +%s.%N)
python -m server_app.local_superlink --stop > /dev/null 2>&1
printf '{"seed": %s, "rc": %s, "wall_s": %.1f, "commit": "%s"}\n' "$SEED" "$rc" \
    "$(echo "$end - $start" | bc)" "$(git rev-parse --short HEAD)" | tee -a "$OUT/timed.jsonl"
