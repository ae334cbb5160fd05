#!/usr/bin/env bash
# Make (or reuse) a CA, a SuperLink TLS certificate and SuperNode auth keypairs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
Usage: deploy/certs.sh [--dir DIR] [--nodes N] [--host NAME_OR_IP]... [--days D] [--force]

Writes, under DIR (default: deploy/.state):
  certs/ca.crt, certs/ca.key          a private CA (kept if still valid)
  certs/server.pem, certs/server.key  the SuperLink certificate, signed by the CA, with
                                      SAN DNS:localhost, IP:127.0.0.1, IP:::1 and every --host
  keys/node<i>, keys/node<i>.pub      SuperNode auth keys (ECDSA P-384, OpenSSH format), i = 0..N-1

Idempotent: existing files are reused. The server certificate is re-issued when the
SAN list changes, when it expires within a day, or when the CA changed.

  --dir DIR        state folder (default: $DEFAULT_STATE)
  --nodes N        number of SuperNode keypairs (default: 3)
  --host H         extra SAN for the SuperLink: a DNS name or an IP address, the address
                   SuperNodes on other machines use (repeatable, or comma-separated)
  --days D         server certificate validity in days (default: 365; the CA gets 10x)
  --force          throw away and re-create the CA, the certificate and all node keys
  -h, --help       this text
USAGE
}

dir="$DEFAULT_STATE"
nodes=3
days=365
force=0
hosts=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
        --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
        --host) IFS=',' read -r -a more <<<"${2:?--host needs a value}"; hosts+=("${more[@]}"); shift 2 ;;
        --days) days="${2:?--days needs a value}"; shift 2 ;;
        --force) force=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$nodes" =~ ^[0-9]+$ ]] || die "--nodes must be a non-negative integer, got '$nodes'"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"
command -v openssl >/dev/null || die "openssl is not installed"
command -v ssh-keygen >/dev/null || die "ssh-keygen is not installed (openssh-client)"

dir="$(abspath "$dir")"
certs="$dir/certs"
keys="$dir/keys"
umask 077
mkdir -p "$certs" "$keys"
if [[ "$force" == 1 ]]; then
    rm -f "$certs"/ca.* "$certs"/server.* "$keys"/node*
fi

# --- the SAN list --------------------------------------------------------------
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for h in "${hosts[@]}"; do
    [[ -n "$h" ]] || continue
    if [[ "$h" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$h" == *:* ]]; then
        entry="IP:$h"
    else
        entry="DNS:$h"
    fi
    [[ ",$san," == *",$entry,"* ]] || san="$san,$entry"
done

# --- CA ----------------------------------------------------------------------------
if [[ -s "$certs/ca.crt" && -s "$certs/ca.key" ]] &&
    openssl x509 -in "$certs/ca.crt" -noout -checkend 86400 >/dev/null 2>&1; then
    log "CA: reusing $certs/ca.crt"
else
    log "CA: creating $certs/ca.crt"
    openssl genrsa -out "$certs/ca.key" 3072 2>/dev/null
    openssl req -new -x509 -key "$certs/ca.key" -sha256 -days "$((days * 10))" \
        -subj "/O=ProFL/CN=ProFL deployment CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$certs/ca.crt"
    rm -f "$certs/server.pem" # a new CA invalidates the old server certificate
fi

# --- SuperLink certificate -------------------------------------------------------------
reissue=1
if [[ -s "$certs/server.pem" && -s "$certs/server.key" && -s "$certs/server.san" ]] &&
    [[ "$(cat "$certs/server.san")" == "$san" ]] &&
    openssl x509 -in "$certs/server.pem" -noout -checkend 86400 >/dev/null 2>&1 &&
    openssl verify -CAfile "$certs/ca.crt" "$certs/server.pem" >/dev/null 2>&1; then
    reissue=0
fi
if [[ "$reissue" == 0 ]]; then
    log "SuperLink certificate: reusing $certs/server.pem ($san)"
else
    log "SuperLink certificate: issuing $certs/server.pem ($san)"
    [[ -s "$certs/server.key" ]] || openssl genrsa -out "$certs/server.key" 3072 2>/dev/null
    openssl req -new -key "$certs/server.key" -subj "/O=ProFL/CN=localhost" -out "$certs/server.csr"
    ext="$certs/server.ext"
    printf '%s\n' \
        "subjectAltName=$san" \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" >"$ext"
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
        -CAcreateserial -out "$certs/server.pem" -days "$days" -sha256 -extfile "$ext" 2>/dev/null
    printf '%s' "$san" >"$certs/server.san"
fi
chmod 644 "$certs/ca.crt" "$certs/server.pem"

# --- SuperNode auth keys ------------------------------------------------------------------
made=0
for ((i = 0; i < nodes; i++)); do
    if [[ ! -s "$keys/node$i" || ! -s "$keys/node$i.pub" ]]; then
        rm -f "$keys/node$i" "$keys/node$i.pub"
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "profl-node$i" -f "$keys/node$i"
        chmod 644 "$keys/node$i.pub"
        made=$((made + 1))
    fi
done
log "SuperNode keys: $nodes in $keys ($made new)"
