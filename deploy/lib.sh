# shellcheck shell=bash
# Helpers shared by the deploy/*.sh scripts. Source it; do not run it.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
DEFAULT_STATE="$DEPLOY_DIR/.state"
# shellcheck disable=SC2034
CONNECTION="profl-tls"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Use the project venv when the Flower CLIs are not on PATH already.
use_venv() {
    local venv="${PROFL_VENV:-$REPO_DIR/.venv}"
    if ! command -v flwr >/dev/null 2>&1 && [[ -x "$venv/bin/flwr" ]]; then
        PATH="$venv/bin:$PATH"
        export PATH
    fi
    command -v flwr >/dev/null 2>&1 || die "flwr is not on PATH (activate the venv or set PROFL_VENV)"
    command -v flower-superlink >/dev/null 2>&1 || die "flower-superlink is not on PATH"
    command -v flower-supernode >/dev/null 2>&1 || die "flower-supernode is not on PATH"
}

# Absolute path of a file or folder that may not exist yet.
abspath() {
    realpath -m -- "$1"
}

# Flower homes live under <state>/.flwr/: the repo's .gitignore ignores any
# ".flwr/" folder, and `flwr run .` builds the FAB with those rules, so apps
# unpacked there never end up inside the next FAB.
cli_home() { printf '%s/.flwr/cli' "$1"; }
superlink_home() { printf '%s/.flwr/superlink' "$1"; }
node_home() { printf '%s/.flwr/node%s' "$1" "$2"; }

# Is PID alive and is its command line still ours (contains MARK)?
pid_is_ours() {
    local pid="$1" mark="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$mark"
}

# PID and all its descendants (lookup by parent PID only), children first.
descendants() {
    local pid="$1" child
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        descendants "$child"
        printf '%s\n' "$child"
    done
}

# The base64 body of an OpenSSH public key in PEM (SPKI) form, on one line: the form in
# which the SuperLink logs the key of a SuperNode it refuses.
pem_body() {
    ssh-keygen -e -m PKCS8 -f "$1" 2>/dev/null | grep -v -- '-----' | tr -d '\n'
}

# Say in plain words that a SuperNode failed because its key is not registered. Flower's
# SuperNode only logs "Failed to activate SuperNode. The SuperNode could not establish a
# connection to the SuperLink", which reads like a network fault; the SuperLink logs the
# real reason, "No SuperNode found with the given public key", with the key in PEM form.
# Usage: explain_unregistered LABEL PRIVATE_KEY NODE_LOG SUPERLINK_LOG CLI_HOME
# Status 0 (and the explanation on stderr) when both logs show it for this key.
explain_unregistered() {
    local label="$1" key="$2" node_log="$3" link_log="$4" cli="$5" body
    grep -qF "Failed to activate SuperNode" "$node_log" 2>/dev/null || return 1
    body="$(pem_body "$key.pub")"
    [[ -n "$body" ]] || return 1
    # The SuperLink writes the PEM's line breaks as literal \n: drop them, then match.
    sed -e 's/\\n//g' "$link_log" 2>/dev/null | grep -F -- "$body" |
        grep -qF "No SuperNode found with the given public key" || return 1
    log "SuperNode $label (key $key) is not registered with the SuperLink." \
        "Its log ($node_log) says \"could not establish a connection to the SuperLink\"," \
        "but this is not a network fault: the SuperLink log ($link_log) says" \
        "\"No SuperNode found with the given public key\" for this key."
    log "Register its public key, then start the SuperNode again:"
    log "    FLWR_HOME=$cli flwr supernode register $key.pub $CONNECTION"
    return 0
}
