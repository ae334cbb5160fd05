#!/usr/bin/env bash
# Start a secure ProFL deployment on this machine: one SuperLink (TLS + SuperNode
# authentication) and one SuperNode per memory budget.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
Usage: deploy/up.sh [options]

Starts, on this machine:
  - a SuperLink with TLS, --enable-supernode-auth and --disable-runtime-dependency-installation;
  - a Flower CLI home (<state>/.flwr/cli) whose config.toml has the connection '$CONNECTION';
  - one SuperNode per entry of --budgets, each with its own port, FLWR_HOME, registered
    auth key and --node-config "partition-id=i num-partitions=N memory-mb=M data-dir='...'".
Then waits until the SuperLink is healthy and every SuperNode is online.
Stop everything with deploy/down.sh (same --state).

Options:
  --budgets LIST        memory budgets in MB, one local SuperNode each (default: 4,7,20);
                        'none': start only the SuperLink (SuperNodes run on other devices,
                        see docs/deployment.md)
  --data-dir DIR        data root on the nodes and the SuperLink (default: <repo>/../shared/data)
  --num-partitions N    split the training data into N partitions (default: number of budgets);
                        SuperNode i trains on partition i, so N >= number of budgets
  --port P              SuperLink port: Fleet, Control and Runtime API (default: 9391)
  --host H              address the SuperLink binds to (default: 127.0.0.1; 0.0.0.0 for other machines)
  --address HOST:PORT   address SuperNodes and the CLI use to reach the SuperLink
                        (default: 127.0.0.1:<port>); its host must be in the certificate SAN
  --san NAME_OR_IP      extra certificate SAN, passed to certs.sh --host (repeatable)
  --node-ports LIST     SuperNode Runtime API ports, comma-separated (default: 9401, 9402, ...)
  --node-port-base P    first SuperNode port when --node-ports is not given (default: 9401)
  --state DIR           certificates, keys, logs, PIDs and Flower homes (default: deploy/.state)
  --threads T           CPU threads per process (OMP_NUM_THREADS / MKL_NUM_THREADS) of the
                        SuperLink and each SuperNode (default: \$OMP_NUM_THREADS if set, else
                        max(1, CPU cores / number of SuperNodes)); several PyTorch processes
                        with default threading on few cores slow each other down badly
  --timeout S           seconds to wait for the SuperLink and the SuperNodes (default: 120)
  -h, --help            this text

Environment: PROFL_VENV (default <repo>/.venv) is put on PATH when flwr is not found.
USAGE
}

budgets_arg="4,7,20"
data_dir="$(abspath "$REPO_DIR/../shared/data")"
num_partitions=""
port=9391
host="127.0.0.1"
address=""
sans=()
node_ports_arg=""
node_port_base=9401
state="$DEFAULT_STATE"
timeout_s=120
threads=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --budgets) budgets_arg="${2:?--budgets needs a value}"; shift 2 ;;
        --data-dir) data_dir="${2:?--data-dir needs a value}"; shift 2 ;;
        --num-partitions) num_partitions="${2:?--num-partitions needs a value}"; shift 2 ;;
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --host) host="${2:?--host needs a value}"; shift 2 ;;
        --address) address="${2:?--address needs a value}"; shift 2 ;;
        --san) sans+=("${2:?--san needs a value}"); shift 2 ;;
        --node-ports) node_ports_arg="${2:?--node-ports needs a value}"; shift 2 ;;
        --node-port-base) node_port_base="${2:?--node-port-base needs a value}"; shift 2 ;;
        --state) state="${2:?--state needs a value}"; shift 2 ;;
        --timeout) timeout_s="${2:?--timeout needs a value}"; shift 2 ;;
        --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# --- check the arguments -----------------------------------------------------------------
if [[ "$budgets_arg" == none ]]; then
    budgets=()
else
    IFS=',' read -r -a budgets <<<"$budgets_arg"
    ((${#budgets[@]} > 0)) || die "--budgets is empty (use 'none' for no local SuperNodes)"
fi
n=${#budgets[@]}
for b in "${budgets[@]}"; do
    [[ "$b" =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)$ ]] || die "budget '$b' is not a number of MB"
    awk -v b="$b" 'BEGIN { exit !(b > 0) }' || die "budget '$b' must be > 0 MB"
done
num_partitions="${num_partitions:-$((n > 0 ? n : 1))}"
[[ "$num_partitions" =~ ^[1-9][0-9]*$ ]] || die "--num-partitions must be a positive integer"
((num_partitions >= n)) || die "--num-partitions ($num_partitions) is below the number of SuperNodes ($n)"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer"
if [[ -z "$threads" ]]; then
    if [[ -n "${OMP_NUM_THREADS:-}" ]]; then
        threads="$OMP_NUM_THREADS"
    else
        cores="$(nproc 2>/dev/null || echo 1)"
        threads=$((cores / (n > 0 ? n : 1)))
        ((threads >= 1)) || threads=1
    fi
fi
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
if [[ -n "$node_ports_arg" ]]; then
    IFS=',' read -r -a node_ports <<<"$node_ports_arg"
    ((${#node_ports[@]} == n)) || die "--node-ports has ${#node_ports[@]} ports for $n budgets"
else
    node_ports=()
    for ((i = 0; i < n; i++)); do node_ports+=("$((node_port_base + i))"); done
fi
for p in "${node_ports[@]}"; do [[ "$p" =~ ^[0-9]+$ ]] || die "SuperNode port '$p' is not a number"; done
if [[ -z "$address" ]]; then
    address="127.0.0.1:$port"
fi
link_host="${address%:*}"
link_host="${link_host#[}"
link_host="${link_host%]}"
case "$link_host" in
    127.0.0.1 | localhost | ::1) ;;
    *) sans+=("$link_host") ;;
esac
case "$host" in
    127.0.0.1 | localhost | 0.0.0.0 | :: | ::1) ;;
    *) sans+=("$host") ;;
esac
data_dir="$(abspath "$data_dir")"
[[ -d "$data_dir" ]] || die "--data-dir $data_dir does not exist"
[[ "$data_dir" != *[\'\"[:space:]]* ]] || die "--data-dir must not contain quotes or spaces: $data_dir"

use_venv
state="$(abspath "$state")"
mkdir -p "$state/logs"
pids_file="$state/pids"
if [[ -s "$pids_file" ]]; then
    while IFS=$'\t' read -r role pid mark; do
        if pid_is_ours "$pid" "$mark"; then
            die "$role (PID $pid) from an earlier deploy/up.sh is still running; run deploy/down.sh --state $state first"
        fi
    done <"$pids_file"
fi
: >"$pids_file"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_in_use "$port" && die "port $port is already in use (choose another with --port)"
for p in "${node_ports[@]}"; do
    port_in_use "$p" && die "SuperNode port $p is already in use (choose others with --node-ports)"
done

# Tear down whatever was started when a later step fails.
started=0
cleanup_on_failure() {
    local rc=$?
    if [[ $rc -ne 0 && $started == 1 ]]; then
        log "start-up failed (exit $rc): stopping what was started"
        "$DEPLOY_DIR/down.sh" --state "$state" --grace 5 || true
    fi
}
trap cleanup_on_failure EXIT

# --- certificates and keys -----------------------------------------------------------------
san_args=()
for s in "${sans[@]}"; do san_args+=(--host "$s"); done
"$DEPLOY_DIR/certs.sh" --dir "$state" --nodes "$n" "${san_args[@]}"
ca="$state/certs/ca.crt"

# --- the CLI connection (pyproject.toml stays free of federations) ---------------------------------
cli="$(cli_home "$state")"
mkdir -p "$cli"
cat >"$cli/config.toml" <<TOML
# Written by deploy/up.sh. Use with: FLWR_HOME=$cli flwr run . $CONNECTION --stream
[superlink]
default = "$CONNECTION"

[superlink.$CONNECTION]
address = "$address"
root-certificates = "$ca"
TOML
{
    printf 'ADDRESS=%q\n' "$address"
    printf 'CA=%q\n' "$ca"
    printf 'CLI_HOME=%q\n' "$cli"
    printf 'DATA_DIR=%q\n' "$data_dir"
    printf 'BUDGETS=%q\n' "$budgets_arg"
    printf 'NUM_NODES=%q\n' "$n"
    printf 'NUM_PARTITIONS=%q\n' "$num_partitions"
} >"$state/deployment.env"

# Wait until CHECK succeeds; fail early when process PID died.
wait_for() {
    local what="$1" pid="$2" logfile="$3" check="$4" deadline=$((SECONDS + timeout_s))
    until "$check"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logfile" >&2 || true
            die "$what exited while starting; log: $logfile"
        fi
        ((SECONDS < deadline)) || die "$what not ready after ${timeout_s}s; log: $logfile"
        sleep 0.5
    done
}

# --- SuperLink ---------------------------------------------------------------------------
link_log="$state/logs/superlink.log"
link_home="$(superlink_home "$state")"
mkdir -p "$link_home"
# cwd = repo: the ServerApp runs with the SuperLink's cwd, so a relative outputs-dir
# lands in <repo>/outputs as in simulation.
(
    cd "$REPO_DIR"
    FLWR_HOME="$link_home" exec setsid flower-superlink \
        --ssl-ca-certfile "$ca" \
        --ssl-certfile "$state/certs/server.pem" \
        --ssl-keyfile "$state/certs/server.key" \
        --enable-supernode-auth \
        --disable-runtime-dependency-installation \
        --host "$host" --port "$port" \
        </dev/null >"$link_log" 2>&1
) &
link_pid=$!
started=1
printf 'superlink\t%s\t%s\n' "$link_pid" "$state/certs/server.pem" >>"$pids_file"
log "SuperLink PID $link_pid on $host:$port, $threads thread(s) per process (log: $link_log)"

link_healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 --cacert "$ca" "https://$address/health" >/dev/null 2>&1
    else
        python3 - "$address" "$ca" <<'PY' >/dev/null 2>&1
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
urllib.request.urlopen(f"https://{sys.argv[1]}/health", context=ctx, timeout=2)
PY
    fi
}
wait_for "SuperLink" "$link_pid" "$link_log" link_healthy
log "SuperLink is healthy at https://$address"

# JSON helpers (the Flower CLI exits 0 even when --format json reports a failure).
json_field() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get(sys.argv[1], ""))' "$1"; }

# --- register the SuperNode keys, start the SuperNodes -------------------------------------------------
nodes_file="$state/nodes.tsv"
printf 'index\tnode_id\tmemory_mb\tport\tpartition_id\n' >"$nodes_file"
node_ids=()
for ((i = 0; i < n; i++)); do
    out="$(FLWR_HOME="$cli" flwr supernode register "$state/keys/node$i.pub" "$CONNECTION" \
        --name "profl-node$i" --format json 2>&1)" || true
    nid="$(printf '%s' "$out" | json_field node-id 2>/dev/null || true)"
    [[ -n "$nid" ]] || die "registering $state/keys/node$i.pub failed: $out"
    node_ids+=("$nid")
    printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$nid" "${budgets[$i]}" "${node_ports[$i]}" "$i" >>"$nodes_file"
    log "registered node$i.pub as SuperNode $nid (memory-mb=${budgets[$i]})"
done

node_pids=()
for ((i = 0; i < n; i++)); do
    home="$(node_home "$state" "$i")"
    mkdir -p "$home"
    node_log="$state/logs/node$i.log"
    cfg="partition-id=$i num-partitions=$num_partitions memory-mb=${budgets[$i]} data-dir='$data_dir'"
    (
        cd "$home"
        FLWR_HOME="$home" exec setsid flower-supernode \
            --root-certificates "$ca" \
            --superlink "$address" \
            --auth-supernode-private-key "$state/keys/node$i" \
            --port "${node_ports[$i]}" \
            --node-config "$cfg" \
            </dev/null >"$node_log" 2>&1
    ) &
    node_pids+=("$!")
    printf 'node%s\t%s\t%s\n' "$i" "$!" "$state/keys/node$i" >>"$pids_file"
    log "SuperNode $i PID $! port ${node_ports[$i]}: $cfg (log: $node_log)"
done

# --- wait until every SuperNode is online ----------------------------------------------------------
nodes_online() {
    local listing
    listing="$(FLWR_HOME="$cli" flwr supernode list "$CONNECTION" --format json 2>/dev/null)" || return 1
    printf '%s' "$listing" | python3 -c '
import json, sys
d = json.load(sys.stdin)
status = {str(x["node-id"]): x["status"] for x in d.get("nodes", [])}
want = sys.argv[1:]
sys.exit(0 if d.get("success") and all(status.get(w) == "online" for w in want) else 1)
' "${node_ids[@]}"
}
# A SuperNode whose key the SuperLink does not know exits with a message that reads like
# a network fault; explain_unregistered (lib.sh) says which key and how to register it.
unregistered() {
    local i="$1"
    explain_unregistered "$i" "$state/keys/node$i" "$state/logs/node$i.log" "$link_log" "$cli"
}
deadline=$((SECONDS + timeout_s))
until nodes_online; do
    for ((i = 0; i < n; i++)); do
        if ! kill -0 "${node_pids[$i]}" 2>/dev/null; then
            unregistered "$i" && die "SuperNode $i exited: its key is not registered (see above;" \
                "deploy/up.sh registers every key it starts, so running it again registers it)"
            tail -n 30 "$state/logs/node$i.log" >&2 || true
            die "SuperNode $i exited while starting; log: $state/logs/node$i.log"
        fi
    done
    if ((SECONDS >= deadline)); then
        for ((i = 0; i < n; i++)); do unregistered "$i" || true; done
        die "SuperNodes not all online after ${timeout_s}s; logs: $state/logs/node<i>.log"
    fi
    sleep 1
done
started=0 # success: keep everything running
if ((n > 0)); then
    log "all $n SuperNodes are online:"
    FLWR_HOME="$cli" flwr supernode list "$CONNECTION" >&2 || true
fi
cat <<DONE
ProFL deployment is up ($n local SuperNodes, budgets MB: $budgets_arg).
  add a device: FLWR_HOME=$cli flwr supernode register <device>.pub $CONNECTION
                (then start flower-supernode on it: docs/deployment.md)
  state:   $state
  run:     deploy/run.sh --state $state [RUN_CONFIG ...]
           (or: FLWR_HOME=$cli flwr run . $CONNECTION --stream --run-config "data-dir='$data_dir'")
  stop:    deploy/down.sh --state $state
DONE
