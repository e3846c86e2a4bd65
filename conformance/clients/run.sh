#!/usr/bin/env bash
# Berth with real clients (issue #5): docker, containerd (ctr and the CRI
# PullImage that kubelet calls), podman, buildah, skopeo and oras-py push to
# and pull from a `berth serve` with authentication on, over plain HTTP and
# over TLS with a private CA. Every case checks that the manifest digest the
# client reports, the one Berth serves and the one the client pulled agree.
#
#   conformance/clients/run.sh            # builds Berth with cargo
#   BERTH_BIN=path/to/berth conformance/clients/run.sh
#   BERTH_CLIENTS_CASES='backup-restore' conformance/clients/run.sh
#                                         # only the cases whose name ("client
#                                         # transport credentials") matches
#                                         # this extended regex
#
# Root only (it starts dockerd and containerd). Installs missing clients with
# apt and pip unless BERTH_CLIENTS_NO_INSTALL=1. Prints "PASS|FAIL client
# transport credentials" per case and "N passed, M failed"; exits 1 if any
# case failed. Logs stay in the directory printed at the start.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$(date +%s)
# Taken out of the environment: Berth warns about BERTH_* variables it does not know.
CASES_FILTER=${BERTH_CLIENTS_CASES:-}
unset BERTH_CLIENTS_CASES

echo "== real clients against berth serve (conformance/clients)"
if [[ $(id -u) != 0 ]]; then
  echo "conformance/clients/run.sh: must run as root (it starts dockerd and containerd)" >&2
  exit 2
fi

# ---------------------------------------------------------------------------
# Clients

APT_PACKAGES=(docker.io containerd podman skopeo buildah uidmap openssl curl jq ca-certificates docker-registry)
PIP_PACKAGES=(oras grpcio grpcio-tools)

install_clients() {
  local missing=() p out
  for p in "${APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed"* ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo ".. apt-get install ${missing[*]}"
    if ! out=$(export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
      echo "$out" | tail -n 20
      echo "FAIL setup (apt-get install ${missing[*]})"
      exit 1
    fi
  fi
  if ! python3 -c 'import oras.client, grpc, grpc_tools.protoc' 2>/dev/null; then
    echo ".. pip install ${PIP_PACKAGES[*]}"
    # A Debian-managed python3 refuses plain `pip install` (PEP 668).
    python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" ||
      python3 -m pip install -q --disable-pip-version-check --break-system-packages "${PIP_PACKAGES[@]}"
  fi
}

if [[ ${BERTH_CLIENTS_NO_INSTALL:-0} != 1 ]]; then
  install_clients
fi

# Resolve tools now: HOME is pointed at a scratch directory below, and
# pyenv-style shims find their interpreter through it. /usr/bin/docker is
# Debian's docker.io client, matching its dockerd (another docker may come
# first on PATH).
PY=$(python3 -c 'import sys; print(sys.executable)')
DOCKER_BIN=/usr/bin/docker

if [[ -z ${BERTH_BIN:-} ]]; then
  echo ".. cargo build -p berth"
  if ! (cd "$ROOT" && cargo build -q -p berth); then
    echo "FAIL setup (cargo build -p berth)"
    echo "0 passed, 1 failed"
    exit 1
  fi
  BERTH_BIN=$(cd "$ROOT" && cargo metadata -q --format-version 1 --no-deps | jq -r .target_directory)/debug/berth
fi
[[ -x $BERTH_BIN ]] || { echo "BERTH_BIN=$BERTH_BIN is not executable" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Scratch space, processes, cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-clients.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/home" "$WORK/xdg"
chmod 700 "$WORK/xdg"
echo ".. work dir $WORK (logs in $LOGS)"

# Keep every client's configuration out of the real home directory.
export HOME=$WORK/home XDG_RUNTIME_DIR=$WORK/xdg XDG_CONFIG_HOME=$WORK/home/.config
unset DOCKER_HOST DOCKER_CONFIG CONTAINERD_ADDRESS REGISTRY_AUTH_FILE CONTAINERS_STORAGE_CONF

# Left behind by dockerd's managed containerd (/opt/containerd) and by
# containers/image's blob info cache (/var/lib/containers/cache, root only, no
# flag to move it): remove them afterwards unless they were there before.
OPT_CONTAINERD_EXISTED=0
[[ -e /opt/containerd ]] && OPT_CONTAINERD_EXISTED=1
VAR_LIB_CONTAINERS_EXISTED=0
[[ -e /var/lib/containers ]] && VAR_LIB_CONTAINERS_EXISTED=1

declare -A DAEMON_PID=()

stop_daemon() { # NAME
  local name=$1 pid=${DAEMON_PID[$1]:-} i
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "DAEMON_PID[$name]"
}

cleanup() {
  local rc=$? name mp
  set +e
  for name in dockerd containerd berth-tls berth-http berth-proxy upstream; do
    stop_daemon "$name"
  done
  # dockerd bind-mounts its data root; vfs/native storage should leave no
  # mounts, but unmount whatever is still mounted below WORK, deepest first.
  while read -r mp; do
    umount -l "$mp" 2>/dev/null
  done < <(awk -v w="$WORK" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  # dockerd's managed containerd creates /opt/containerd (empty bin/ lib/).
  if [[ $OPT_CONTAINERD_EXISTED == 0 && -d /opt/containerd ]]; then
    rmdir /opt/containerd/bin /opt/containerd/lib /opt/containerd 2>/dev/null
  fi
  if [[ $VAR_LIB_CONTAINERS_EXISTED == 0 && -d /var/lib/containers ]]; then
    rm -rf /var/lib/containers/cache
    rmdir /var/lib/containers 2>/dev/null
  fi
  find "$WORK" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $what" >&2
  return 1
}

# ---------------------------------------------------------------------------
# Berth: one instance over plain HTTP, one over TLS, each with a user, a
# password, a write:package token, a read-only token limited to USER/*, and a
# dockerconfigjson holding the write token.

USER_NAME=e2e
ORG_NAME=e2e-org

make_ca() {
  local d=$WORK/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Berth e2e test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  CA_CRT=$d/ca.crt
  # podman, buildah and skopeo read DIR/*.crt as CAs with --cert-dir DIR.
  CERT_DIR=$WORK/certs
  mkdir -p "$CERT_DIR"
  cp "$d/ca.crt" "$CERT_DIR/ca.crt"
}

declare -A PORT=() PASSWORD=() PAT=() RO_PAT=() AUTHFILE=()

start_berth() { # MODE (http|tls)
  local mode=$1 dir=$WORK/berth-$1 log=$LOGS/berth-$1.log
  local -a env=(BERTH_DATA_DIR="$dir/data" BERTH_LISTEN=127.0.0.1:0 BERTH_LOG_FORMAT=json)
  mkdir -p "$dir"
  if [[ $mode == tls ]]; then
    env+=(BERTH_TLS_CERT="$WORK/pki/server.crt" BERTH_TLS_KEY="$WORK/pki/server.key")
  fi
  if [[ $mode == proxy ]]; then
    env+=(BERTH_UPSTREAMS="$(proxy_upstreams)")
  fi
  PASSWORD[$mode]=$(openssl rand -hex 16)
  {
    printf '%s\n' "${PASSWORD[$mode]}" | env "${env[@]}" "$BERTH_BIN" user add "$USER_NAME" --password-stdin
    env "${env[@]}" "$BERTH_BIN" org add "$ORG_NAME"
    env "${env[@]}" "$BERTH_BIN" org member add "$ORG_NAME" "$USER_NAME" --role write
  } >>"$LOGS/berth-$mode-cli.log" 2>&1
  PAT[$mode]=$(env "${env[@]}" "$BERTH_BIN" token create "$USER_NAME" --scopes read:package,write:package \
    --name e2e-write 2>>"$LOGS/berth-$mode-cli.log" | tail -n1)
  RO_PAT[$mode]=$(env "${env[@]}" "$BERTH_BIN" token create "$USER_NAME" --scopes read:package \
    --repo "$USER_NAME/*" --expires 1d --name e2e-read 2>>"$LOGS/berth-$mode-cli.log" | tail -n1)

  env "${env[@]}" "$BERTH_BIN" serve >"$log" 2>&1 &
  DAEMON_PID[berth-$mode]=$!
  wait_for 30 "berth ($mode) to be ready" grep -q '"berth ready"' "$log"
  PORT[$mode]=$(grep -m1 '"berth ready"' "$log" | jq -r '.listen' | sed 's/.*://')

  AUTHFILE[$mode]=$WORK/auth-$mode.json
  jq -n --arg host "127.0.0.1:${PORT[$mode]}" --arg auth "$(printf '%s:%s' "$USER_NAME" "${PAT[$mode]}" | base64 -w0)" \
    '{auths: {($host): {auth: $auth}}}' >"${AUTHFILE[$mode]}"
  echo ".. berth ($mode) on 127.0.0.1:${PORT[$mode]}"
}

# ---------------------------------------------------------------------------
# Daemons: dockerd (with its own managed containerd) and a containerd of our
# own with the CRI plugin, each with private roots, state and sockets.

start_dockerd() {
  local d=$WORK/docker mirror=()
  mkdir -p "$d"
  # The pull-through cache as Docker Hub's mirror (see proxy.sh).
  [[ -n ${PORT[proxy]:-} ]] && mirror=(--registry-mirror "http://127.0.0.1:${PORT[proxy]}")
  dockerd "${mirror[@]}" --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
    --userland-proxy=false --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
    -H "unix://$d/docker.sock" >"$LOGS/dockerd.log" 2>&1 &
  DAEMON_PID[dockerd]=$!
  DOCKER=("$DOCKER_BIN" -H "unix://$d/docker.sock")
  wait_for 60 dockerd "${DOCKER[@]}" version
}

CERTS_D=$WORK/containerd/certs.d

write_hosts_toml() { # MODE
  local mode=$1 host=127.0.0.1:${PORT[$1]}
  mkdir -p "$CERTS_D/$host"
  if [[ $mode == tls ]]; then
    printf 'server = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve", "push"]\n  ca = "%s"\n' \
      "$host" "$host" "$CA_CRT" >"$CERTS_D/$host/hosts.toml"
  else
    printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve", "push"]\n' \
      "$host" "$host" >"$CERTS_D/$host/hosts.toml"
  fi
}

start_containerd() {
  local d=$WORK/containerd
  mkdir -p "$d/cni/bin" "$d/cni/conf" "$CERTS_D"
  CONTAINERD_SOCK=$d/containerd.sock
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = []

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = "$d/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$d/cni/bin"
    conf_dir = "$d/cni/conf"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CERTS_D"
EOF
  containerd --config "$d/config.toml" >"$LOGS/containerd.log" 2>&1 &
  DAEMON_PID[containerd]=$!
  CTR=(ctr --address "$CONTAINERD_SOCK" --namespace e2e)
  wait_for 60 containerd "${CTR[@]}" version
}

# ---------------------------------------------------------------------------
# Helpers used by the cases (they run in a subshell with set -e; `fail` ends
# the case with a reason).

fail() {
  echo "$*" >"$CASE_REASON"
  echo "FAIL: $*" >&2
  exit 1
}

# Select the Berth instance the following cases talk to.
use_mode() { # http|tls
  MODE=$1
  REG=127.0.0.1:${PORT[$MODE]}
  if [[ $MODE == tls ]]; then
    LABEL=tls
    SCHEME=https
    CURL_TLS=(--cacert "$CA_CRT")
    TLS=(--cert-dir "$CERT_DIR")             # podman, buildah, skopeo inspect
    SRC_TLS=(--src-cert-dir "$CERT_DIR")     # skopeo copy
    DEST_TLS=(--dest-cert-dir "$CERT_DIR")
    CTR_TLS=(--hosts-dir "$CERTS_D")
    ORAS_TLS=(--ca "$CA_CRT")
  else
    LABEL=plain-http
    [[ $MODE == proxy ]] && LABEL=pull-through
    SCHEME=http
    CURL_TLS=()
    TLS=(--tls-verify=false)
    SRC_TLS=(--src-tls-verify=false)
    DEST_TLS=(--dest-tls-verify=false)
    CTR_TLS=(--plain-http)
    ORAS_TLS=(--insecure)
  fi
}

secret() { # password|pat|ro-pat
  case $1 in
    password) echo "${PASSWORD[$MODE]}" ;;
    pat | authfile) echo "${PAT[$MODE]}" ;;
    ro-pat) echo "${RO_PAT[$MODE]}" ;;
    *) fail "unknown credential kind $1" ;;
  esac
}

# Credentials flags for podman/buildah/skopeo-inspect style tools.
creds_flags() { # KIND [PREFIX] -> e.g. --creds u:p | --authfile F | --dest-creds u:p
  local kind=$1 prefix=${2:-}
  if [[ $kind == authfile ]]; then
    echo "--authfile=${AUTHFILE[$MODE]}"
  else
    echo "--${prefix}creds=$USER_NAME:$(secret "$kind")"
  fi
}

MANIFEST_ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

# GET a manifest with curl (Basic credentials: the write token), check that
# the body hashes to Docker-Content-Digest, print that digest. The body is
# left in $CASE_DIR/served.json.
served_digest() { # REPO REF
  local url="$SCHEME://$REG/v2/$1/manifests/$2" headers=$CASE_DIR/served.headers body=$CASE_DIR/served.json
  local status header computed
  status=$(curl -sS "${CURL_TLS[@]}" -u "$USER_NAME:${PAT[$MODE]}" -H "Accept: $MANIFEST_ACCEPT" \
    -D "$headers" -o "$body" -w '%{http_code}' "$url")
  [[ $status == 200 ]] || fail "GET $url answered $status: $(head -c 300 "$body")"
  header=$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
  computed=sha256:$(sha256sum "$body" | cut -d' ' -f1)
  [[ $header == "$computed" ]] || fail "GET $url: Docker-Content-Digest $header, body hashes to $computed"
  echo "$header"
}

# All arguments are "name=digest"; they must all be the same sha256 digest.
same_digests() {
  local first="" pair d
  for pair in "$@"; do
    d=${pair#*=}
    [[ $d =~ ^sha256:[0-9a-f]{64}$ ]] || fail "no digest for ${pair%%=*} (got '${d}'); digests: $*"
    [[ -z $first ]] && first=$d
    [[ $d == "$first" ]] || fail "digests differ: $*"
  done
  echo "digests agree: $*"
}

# A tar of a few files whose content names the case, so every case pushes a
# distinct image.
rootfs_tar() { # OUT SEED
  local dir=$CASE_DIR/rootfs
  mkdir -p "$dir/etc/berth-e2e" "$dir/usr/share/berth-e2e"
  echo "$2" >"$dir/etc/berth-e2e/seed"
  echo "Berth real-client end-to-end test image." >"$dir/usr/share/berth-e2e/README"
  tar -C "$dir" -cf "$1" etc usr
}

# ---------------------------------------------------------------------------
# Cases

# The pull-through cache's cases and their upstream.
# shellcheck source=conformance/clients/proxy.sh
source "$HERE/proxy.sh"

case_docker() { # password|pat|authfile
  local kind=$1 repo=$USER_NAME/docker-$1 ref out pushed served pulled repodigest
  ref=$REG/$repo:$MODE
  mkdir -p "$CASE_DIR/docker-config"
  export DOCKER_CONFIG=$CASE_DIR/docker-config
  if [[ $kind == authfile ]]; then
    cp "${AUTHFILE[$MODE]}" "$DOCKER_CONFIG/config.json"
  else
    secret "$kind" | "${DOCKER[@]}" login --username "$USER_NAME" --password-stdin "$REG"
  fi
  rootfs_tar "$CASE_DIR/rootfs.tar" "docker $MODE $kind"
  "${DOCKER[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  out=$("${DOCKER[@]}" push "$ref") || fail "docker push failed: $out"
  echo "$out"
  pushed=$(sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' <<<"$out")
  served=$(served_digest "$repo" "$MODE")
  "${DOCKER[@]}" rmi "$ref"
  out=$("${DOCKER[@]}" pull "$ref") || fail "docker pull failed: $out"
  echo "$out"
  pulled=$(sed -n 's/^Digest: //p' <<<"$out")
  repodigest=$("${DOCKER[@]}" inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" | sed -n "s|^$REG/$repo@||p")
  same_digests push="$pushed" served="$served" pull="$pulled" RepoDigests="$repodigest"
}

case_ctr() { # password|pat
  local kind=$1 repo=$USER_NAME/ctr-$1 ref local_digest pushed served pulled
  ref=$REG/$repo:$MODE
  local_digest=$("$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" "$MODE" "ctr $MODE $kind" --tar "$CASE_DIR/image.tar")
  "${CTR[@]}" images import --no-unpack --base-name "$REG/$repo" "$CASE_DIR/image.tar"
  pushed=$("${CTR[@]}" images ls "name==$ref" | awk 'NR == 2 { print $3 }')
  "${CTR[@]}" images push "${CTR_TLS[@]}" --user "$USER_NAME:$(secret "$kind")" "$ref"
  served=$(served_digest "$repo" "$MODE")
  "${CTR[@]}" images rm --sync "$ref"
  "${CTR[@]}" images pull "${CTR_TLS[@]}" --user "$USER_NAME:$(secret "$kind")" --snapshotter native "$ref"
  pulled=$("${CTR[@]}" images ls "name==$ref" | awk 'NR == 2 { print $3 }')
  same_digests built="$local_digest" push="$pushed" served="$served" pull="$pulled"
}

# kubelet's path: CRI ImageService.PullImage with credentials from a
# dockerconfigjson, as kubelet takes them from an imagePullSecret.
case_cri() { # userpass|auth
  local kind=$1 repo=$USER_NAME/cri-$1 ref pushed served out pulled
  ref=$REG/$repo:$MODE
  "$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" "$MODE" "cri $MODE $kind" >/dev/null
  skopeo copy "${DEST_TLS[@]}" "$(creds_flags pat dest-)" --digestfile "$CASE_DIR/pushed" \
    "oci:$CASE_DIR/oci:$MODE" "docker://$ref"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  # Repositories are private: without credentials the pull must be refused.
  out=$("$PY" "$HERE/cri_pull.py" "$CONTAINERD_SOCK" "$ref" "${AUTHFILE[$MODE]}" none "$CASE_DIR/gen")
  echo "$out"
  grep -Eqi 'pull access denied|insufficient_scope|unauthorized' <<<"$out" || fail "anonymous CRI pull refused for another reason: $out"
  out=$("$PY" "$HERE/cri_pull.py" "$CONTAINERD_SOCK" "$ref" "${AUTHFILE[$MODE]}" "$kind" "$CASE_DIR/gen")
  echo "$out"
  pulled=$(jq -r --arg r "$REG/$repo" '.repo_digests[] | select(startswith($r + "@")) | sub(".*@"; "")' <<<"$out")
  same_digests push="$pushed" served="$served" cri-repo_digests="$pulled"
}

PODMAN=()
BUILDAH=()
setup_storage() {
  local s=$WORK/storage
  mkdir -p "$s/root" "$s/run" "$s/tmp"
  PODMAN=(podman --root "$s/root" --runroot "$s/run" --storage-driver vfs --tmpdir "$s/tmp"
    --events-backend file --cgroup-manager cgroupfs)
  BUILDAH=(buildah --root "$s/root" --runroot "$s/run" --storage-driver vfs)
}

case_podman() { # password|pat|authfile
  local kind=$1 repo=$USER_NAME/podman-$1 ref pushed served pulled
  ref=$REG/$repo:$MODE
  rootfs_tar "$CASE_DIR/rootfs.tar" "podman $MODE $kind"
  "${PODMAN[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  "${PODMAN[@]}" push "${TLS[@]}" "$(creds_flags "$kind")" --digestfile "$CASE_DIR/pushed" "$ref"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  "${PODMAN[@]}" rmi "$ref"
  "${PODMAN[@]}" pull "${TLS[@]}" "$(creds_flags "$kind")" "$ref"
  pulled=$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$ref")
  same_digests push="$pushed" served="$served" pull="$pulled"
}

case_buildah() { # password|pat|authfile
  local kind=$1 repo=$USER_NAME/buildah-$1 ref local_name c pushed served pulled
  ref=$REG/$repo:$MODE
  local_name=localhost/e2e-buildah-$MODE-$kind
  rootfs_tar "$CASE_DIR/rootfs.tar" "buildah $MODE $kind"
  mkdir -p "$CASE_DIR/ctx" && tar -C "$CASE_DIR/ctx" -xf "$CASE_DIR/rootfs.tar"
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy "$c" "$CASE_DIR/ctx" /
  "${BUILDAH[@]}" config --label "berth.e2e=buildah-$MODE-$kind" "$c"
  "${BUILDAH[@]}" commit --rm "$c" "$local_name"
  "${BUILDAH[@]}" push "${TLS[@]}" "$(creds_flags "$kind")" --digestfile "$CASE_DIR/pushed" \
    "$local_name" "docker://$ref"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  "${BUILDAH[@]}" rmi "$local_name"
  "${BUILDAH[@]}" pull "${TLS[@]}" "$(creds_flags "$kind")" "docker://$ref"
  pulled=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageDigest}}' "$ref")
  same_digests push="$pushed" served="$served" pull="$pulled"
}

case_skopeo() { # password|pat|authfile
  local kind=$1 repo=$USER_NAME/skopeo-$1 ref built pushed served inspected pulled
  ref=$REG/$repo:$MODE
  built=$("$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" "$MODE" "skopeo $MODE $kind")
  skopeo copy "${DEST_TLS[@]}" "$(creds_flags "$kind" dest-)" --digestfile "$CASE_DIR/pushed" \
    "oci:$CASE_DIR/oci:$MODE" "docker://$ref"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  inspected=$(skopeo inspect "${TLS[@]}" "$(creds_flags "$kind")" --format '{{.Digest}}' "docker://$ref")
  skopeo copy "${SRC_TLS[@]}" "$(creds_flags "$kind" src-)" "docker://$ref" "oci:$CASE_DIR/pulled:$MODE"
  pulled=$(jq -r '.manifests[0].digest' "$CASE_DIR/pulled/index.json")
  same_digests built="$built" push="$pushed" served="$served" inspect="$inspected" pull="$pulled"
}

# The read-only token (read:package, --repo USER/*) pulls from USER/*, but
# cannot push, nor pull from the organization's repositories.
case_quota() {
  # An organization with a 1 KiB quota: docker's push is refused with
  # Berth's message printed as-is; once the quota is lifted (set while the
  # server runs, through the CLI on the same data directory) the same push
  # goes through.
  local org=quota-$MODE ref out
  local -a env=(BERTH_DATA_DIR="$WORK/berth-$MODE/data")
  env "${env[@]}" "$BERTH_BIN" org add "$org"
  env "${env[@]}" "$BERTH_BIN" org member add "$org" "$USER_NAME" --role write
  env "${env[@]}" "$BERTH_BIN" quota set "$org" --bytes 1KiB
  ref=$REG/$org/app:$MODE
  mkdir -p "$CASE_DIR/docker-config"
  export DOCKER_CONFIG=$CASE_DIR/docker-config
  cp "${AUTHFILE[$MODE]}" "$DOCKER_CONFIG/config.json"
  rootfs_tar "$CASE_DIR/rootfs.tar" "quota $MODE"
  "${DOCKER[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  if out=$("${DOCKER[@]}" push "$ref" 2>&1); then
    fail "docker push past the quota succeeded: $out"
  fi
  echo "$out"
  grep -q "quota exceeded: $org uses .* of 1 KiB" <<<"$out" || fail "docker did not print the quota message: $out"
  env "${env[@]}" "$BERTH_BIN" usage "$org"
  env "${env[@]}" "$BERTH_BIN" quota set "$org" --bytes 0
  out=$("${DOCKER[@]}" push "$ref" 2>&1) || fail "docker push after lifting the quota failed: $out"
  echo "$out"
  env "${env[@]}" "$BERTH_BIN" usage "$org"
}

case_scrub() {
  # Disk rot under docker's feet: one byte of a pushed layer is flipped on
  # disk. `berth scrub` names the layer with its tag and exits 4; docker
  # cannot pull the image (Berth refuses the damaged blob with a message
  # naming it) until the same image is pushed again, which repairs it.
  local repo=$USER_NAME/scrub-$MODE ref out layer file
  local -a env=(BERTH_DATA_DIR="$WORK/berth-$MODE/data")
  ref=$REG/$repo:v1
  mkdir -p "$CASE_DIR/docker-config"
  export DOCKER_CONFIG=$CASE_DIR/docker-config
  cp "${AUTHFILE[$MODE]}" "$DOCKER_CONFIG/config.json"
  rootfs_tar "$CASE_DIR/rootfs.tar" "scrub $MODE"
  "${DOCKER[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  out=$("${DOCKER[@]}" push "$ref" 2>&1) || fail "docker push failed: $out"
  served_digest "$repo" v1 >/dev/null
  layer=$(jq -r '.layers[0].digest' "$CASE_DIR/served.json")
  file=$(find "$WORK/berth-$MODE/data" -path "*/blobs/sha256/*/${layer#sha256:}" -type f | head -n 1)
  [[ -n $file ]] || fail "layer $layer not found on disk"
  "$PY" -c 'import os, sys
with open(sys.argv[1], "r+b") as f:
    at = os.path.getsize(sys.argv[1]) // 2
    f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1]))' "$file"
  set +e
  out=$(env "${env[@]}" "$BERTH_BIN" scrub --repository "$repo" 2>&1)
  local rc=$?
  set -e
  echo "$out"
  ((rc == 4)) || fail "berth scrub exited $rc, not 4"
  grep -q "$layer (blob): digest mismatch" <<<"$out" || fail "scrub did not name the layer"
  grep -q "$repo: tags v1" <<<"$out" || fail "scrub did not name the tag"
  "${DOCKER[@]}" rmi "$ref"
  if out=$("${DOCKER[@]}" pull "$ref" 2>&1); then
    fail "docker pulled an image with a damaged layer: $out"
  fi
  echo "$out"
  "${DOCKER[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  out=$("${DOCKER[@]}" push "$ref" 2>&1) || fail "docker push to repair failed: $out"
  echo "$out"
  "${DOCKER[@]}" rmi "$ref"
  out=$("${DOCKER[@]}" pull "$ref" 2>&1) || fail "docker pull after the repair failed: $out"
  echo "$out"
  out=$(env "${env[@]}" "$BERTH_BIN" scrub --repository "$repo") || fail "scrub after the repair: $out"
  grep -q "no problems found" <<<"$out" || fail "scrub after the repair: $out"
}

case_readonly() {
  local repo=$USER_NAME/skopeo-ro ref org_ref served inspected out
  ref=$REG/$repo:$MODE
  org_ref=$REG/$ORG_NAME/private:$MODE
  "$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" "$MODE" "readonly $MODE" >/dev/null
  "$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" ro-push "readonly $MODE, pushed with the read-only token" >/dev/null
  skopeo copy "${DEST_TLS[@]}" "$(creds_flags pat dest-)" "oci:$CASE_DIR/oci:$MODE" "docker://$ref"
  skopeo copy "${DEST_TLS[@]}" "$(creds_flags pat dest-)" "oci:$CASE_DIR/oci:$MODE" "docker://$org_ref"
  served=$(served_digest "$repo" "$MODE")
  inspected=$(skopeo inspect "${TLS[@]}" "$(creds_flags ro-pat)" --format '{{.Digest}}' "docker://$ref")
  same_digests served="$served" ro-pat-inspect="$inspected"
  if out=$(skopeo copy "${DEST_TLS[@]}" "$(creds_flags ro-pat dest-)" "oci:$CASE_DIR/oci:ro-push" \
    "docker://$REG/$repo:ro-push" 2>&1); then
    fail "push with the read-only token succeeded"
  fi
  echo "push with the read-only token refused, as it should be: $out"
  grep -Eqi 'denied|unauthorized|authentication required' <<<"$out" ||
    fail "push with the read-only token failed for another reason: $out"
  if out=$(skopeo inspect "${TLS[@]}" "$(creds_flags ro-pat)" "docker://$org_ref" 2>&1); then
    fail "the read-only token limited to $USER_NAME/* could read $ORG_NAME/private"
  fi
  echo "pull of $ORG_NAME/private with the token limited to $USER_NAME/* refused: $out"
}

# The TLS cases verify Berth's certificate against the test CA: without it,
# clients refuse the server.
case_tls_untrusted() {
  local out
  if out=$(skopeo inspect "$(creds_flags pat)" "docker://$REG/$USER_NAME/skopeo-pat:$MODE" 2>&1); then
    fail "skopeo trusted Berth's certificate without the test CA"
  fi
  echo "skopeo without the CA: $out"
  grep -Eqi 'x509|certificate' <<<"$out" || fail "skopeo without the CA failed for another reason: $out"
  if out=$(curl -sS -u "$USER_NAME:${PAT[$MODE]}" "https://$REG/v2/" 2>&1); then
    fail "curl trusted Berth's certificate without the test CA"
  fi
  echo "curl without the CA: $out"
  out=$(curl -sS "${CURL_TLS[@]}" -u "$USER_NAME:${PAT[$MODE]}" -w ' %{http_code} %{http_version}' "https://$REG/v2/")
  echo "curl with the CA: $out"
  [[ $out == *" 200 "* ]] || fail "GET https://$REG/v2/ with the CA: $out"
}

case_oras() { # pat|authfile
  local kind=$1 repo=$USER_NAME/oras-$1 out served
  local -a auth
  if [[ $kind == authfile ]]; then
    auth=(--authfile "${AUTHFILE[$MODE]}")
  else
    auth=(--creds "$USER_NAME:$(secret "$kind")")
  fi
  out=$("$PY" "$HERE/oras_case.py" push-pull "$REG" "$repo:$MODE" "$CASE_DIR/oras" "${auth[@]}" "${ORAS_TLS[@]}")
  echo "$out"
  served=$(served_digest "$repo" "$MODE")
  same_digests push="$(jq -r .pushed <<<"$out")" push-response="$(jq -r .push_response <<<"$out")" \
    served="$served" pull="$(jq -r .pulled <<<"$out")"
}

# An artifact with a `subject` (what cosign and notation push), listed
# through the referrers API.
case_oras_referrers() {
  local repo=$USER_NAME/skopeo-pat subject out
  subject=$(served_digest "$repo" "$MODE")
  out=$("$PY" "$HERE/oras_case.py" attach "$REG" "$repo" "$subject" "$CASE_DIR/oras" \
    --creds "$USER_NAME:${PAT[$MODE]}" "${ORAS_TLS[@]}")
  echo "$out"
  same_digests push="$(jq -r .pushed <<<"$out")" referrers="$(jq -r .referrer.digest <<<"$out")" \
    served="$(served_digest "$repo" "$(jq -r .pushed <<<"$out")")"
}

# Pull each platform of a served index with podman --arch and skopeo
# --override-arch. podman and skopeo inspect report the index's digest; the
# platform's manifest shows in podman's RepoDigests, its config as the image
# id, and as the manifest skopeo copied.
check_platforms() { # REPO TAG KIND
  local repo=$1 tag=$2 kind=$3 ref=$REG/$1:$2 index arch child config out
  index=$(served_digest "$repo" "$tag")
  cp "$CASE_DIR/served.json" "$CASE_DIR/index.json"
  for arch in amd64 arm64; do
    child=$(jq -r --arg a "$arch" \
      '.manifests[] | select(.platform.architecture == $a and .platform.os == "linux") | .digest' "$CASE_DIR/index.json")
    served_digest "$repo" "$child" >/dev/null
    config=$(jq -r .config.digest "$CASE_DIR/served.json")

    "${PODMAN[@]}" pull "${TLS[@]}" "$(creds_flags "$kind")" --arch "$arch" "$ref"
    out=$("${PODMAN[@]}" image inspect "$ref")
    "${PODMAN[@]}" rmi "$ref"
    same_digests index="$index" "podman-inspect-Digest-$arch=$(jq -r '.[0].Digest' <<<"$out")"
    same_digests "index-child-$arch=$child" "podman-RepoDigests-$arch=$(jq -r --arg c "$REG/$repo@$child" \
      '.[0].RepoDigests[] | select(. == $c) | sub(".*@"; "")' <<<"$out")"
    same_digests "child-config-$arch=$config" "podman-image-id-$arch=sha256:$(jq -r '.[0].Id' <<<"$out")"
    [[ $(jq -r '.[0].Architecture' <<<"$out") == "$arch" ]] || fail "podman pull --arch $arch: got $(jq -r '.[0].Architecture' <<<"$out")"

    out=$(skopeo --override-arch "$arch" inspect "${TLS[@]}" "$(creds_flags "$kind")" "docker://$ref")
    same_digests index="$index" "skopeo-inspect-Digest-$arch=$(jq -r .Digest <<<"$out")"
    [[ $(jq -r .Architecture <<<"$out") == "$arch" ]] || fail "skopeo inspect --override-arch $arch: got $(jq -r .Architecture <<<"$out")"

    skopeo --override-arch "$arch" copy "${SRC_TLS[@]}" "$(creds_flags "$kind" src-)" \
      "docker://$ref" "oci:$CASE_DIR/pulled-$arch:$tag"
    same_digests "index-child-$arch=$child" \
      "skopeo-copy-$arch=$(jq -r '.manifests[0].digest' "$CASE_DIR/pulled-$arch/index.json")"
  done
}

# Multi-arch with buildah: two images built from scratch for amd64 and
# arm64, a manifest list, `buildah manifest push --all`.
case_multiarch_buildah() {
  local repo=$USER_NAME/multiarch-buildah list arch c pushed served
  list=localhost/e2e-list-$MODE
  "${BUILDAH[@]}" manifest create "$list"
  for arch in amd64 arm64; do
    rootfs_tar "$CASE_DIR/rootfs-$arch.tar" "multiarch $MODE $arch"
    mkdir -p "$CASE_DIR/ctx-$arch" && tar -C "$CASE_DIR/ctx-$arch" -xf "$CASE_DIR/rootfs-$arch.tar"
    c=$("${BUILDAH[@]}" from --arch "$arch" scratch)
    "${BUILDAH[@]}" copy "$c" "$CASE_DIR/ctx-$arch" /
    "${BUILDAH[@]}" config --arch "$arch" --os linux "$c"
    "${BUILDAH[@]}" commit --rm "$c" "localhost/e2e-multi-$MODE-$arch"
    "${BUILDAH[@]}" manifest add "$list" "containers-storage:localhost/e2e-multi-$MODE-$arch"
  done
  "${BUILDAH[@]}" manifest push --all "${TLS[@]}" "$(creds_flags pat)" --digestfile "$CASE_DIR/pushed" \
    "$list" "docker://$REG/$repo:$MODE"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  same_digests push="$pushed" served="$served"
  # Pull into a store without the local images (same image ids).
  "${BUILDAH[@]}" manifest rm "$list"
  "${BUILDAH[@]}" rmi "localhost/e2e-multi-$MODE-amd64" "localhost/e2e-multi-$MODE-arm64"
  check_platforms "$repo" "$MODE" pat
}

# Multi-arch with skopeo: `skopeo copy --all` of an OCI layout holding an
# index of two platforms, credentials from the dockerconfigjson.
case_multiarch_skopeo() {
  local repo=$USER_NAME/multiarch-skopeo built pushed served
  built=$("$PY" "$HERE/mkoci.py" "$CASE_DIR/oci" "$MODE" "multiarch-skopeo $MODE" --arch amd64 --arch arm64)
  skopeo copy --all "${DEST_TLS[@]}" "$(creds_flags authfile)" --digestfile "$CASE_DIR/pushed" \
    "oci:$CASE_DIR/oci:$MODE" "docker://$REG/$repo:$MODE"
  pushed=$(cat "$CASE_DIR/pushed")
  served=$(served_digest "$repo" "$MODE")
  same_digests built="$built" push="$pushed" served="$served"
  for arch in amd64 arm64; do
    same_digests "built-child-$arch=$(jq -r --arg a "$arch" \
      '.manifests[] | select(.platform.architecture == $a) | .digest' "$CASE_DIR/oci/blobs/sha256/${built#sha256:}")" \
      "served-child-$arch=$(jq -r --arg a "$arch" \
        '.manifests[] | select(.platform.architecture == $a) | .digest' "$CASE_DIR/served.json")"
  done
  check_platforms "$repo" "$MODE" authfile
}

# Backup and restore (issue #14) with a real client: docker pushes an image,
# `berth backup` runs while the server serves, `berth restore` fills a fresh
# data directory, a second server starts on it, and docker pulls the image
# from that server with the same token (users, tokens and the signing key
# come back with the data). The digests docker pushed, both servers served
# and docker pulled must agree.
case_backup_restore() {
  local repo=$USER_NAME/backup-restore ref out pushed served restored_served pulled repodigest port
  local data=$WORK/berth-$MODE/data backup=$CASE_DIR/backup restored=$CASE_DIR/restored
  local log=$LOGS/berth-$MODE-restored.log
  local -a env=(BERTH_LISTEN=127.0.0.1:0 BERTH_LOG_FORMAT=json)
  if [[ $MODE == tls ]]; then
    env+=(BERTH_TLS_CERT="$WORK/pki/server.crt" BERTH_TLS_KEY="$WORK/pki/server.key")
  fi
  ref=$REG/$repo:$MODE
  mkdir -p "$CASE_DIR/docker-config"
  export DOCKER_CONFIG=$CASE_DIR/docker-config
  secret pat | "${DOCKER[@]}" login --username "$USER_NAME" --password-stdin "$REG"
  rootfs_tar "$CASE_DIR/rootfs.tar" "backup-restore $MODE"
  "${DOCKER[@]}" import "$CASE_DIR/rootfs.tar" "$ref"
  out=$("${DOCKER[@]}" push "$ref") || fail "docker push failed: $out"
  echo "$out"
  pushed=$(sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' <<<"$out")
  served=$(served_digest "$repo" "$MODE")

  out=$(BERTH_DATA_DIR=$data "$BERTH_BIN" backup --to "$backup" 2>&1) || fail "berth backup failed: $out"
  echo "$out"
  out=$(BERTH_DATA_DIR=$restored "$BERTH_BIN" restore --from "$backup" 2>&1) || fail "berth restore failed: $out"
  echo "$out"
  env "${env[@]}" BERTH_DATA_DIR="$restored" "$BERTH_BIN" serve >"$log" 2>&1 &
  RESTORED_PID=$!
  trap 'kill "$RESTORED_PID" 2>/dev/null; wait "$RESTORED_PID" 2>/dev/null' EXIT
  wait_for 30 "the restored berth to be ready" grep -q '"berth ready"' "$log" ||
    fail "berth on the restored data did not start: $(tail -n 5 "$log")"
  port=$(grep -m1 '"berth ready"' "$log" | jq -r '.listen' | sed 's/.*://')
  echo "berth on the restored data: 127.0.0.1:$port"

  # From here on the cases' helpers talk to the restored server.
  REG=127.0.0.1:$port
  restored_served=$(served_digest "$repo" "$MODE")
  secret pat | "${DOCKER[@]}" login --username "$USER_NAME" --password-stdin "$REG"
  "${DOCKER[@]}" rmi "$ref"
  out=$("${DOCKER[@]}" pull "$REG/$repo:$MODE") || fail "docker pull from the restored server failed: $out"
  echo "$out"
  pulled=$(sed -n 's/^Digest: //p' <<<"$out")
  repodigest=$("${DOCKER[@]}" inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$REG/$repo:$MODE" |
    sed -n "s|^$REG/$repo@||p")
  same_digests push="$pushed" served="$served" restored-served="$restored_served" restored-pull="$pulled" \
    RepoDigests="$repodigest"
}

# ---------------------------------------------------------------------------
# Runner

PASSED=0
FAILED=0
FAILED_NAMES=()

# Print what BERTH logged while a case ran: one line per request.
berth_log_since() { # MODE FROM_LINE
  tail -n +"$(($2 + 1))" "$LOGS/berth-$1.log" |
    jq -r 'if .status then "\(.span.method) \(.span.path) -> \(.status) (\(.latency))"
      elif .event then "  audit \(.event) \(del(.timestamp, .level, .event, .target, .span, .spans) | tostring)"
      else "\(.level) \(.message // "") \(del(.timestamp, .level, .message, .target, .spans) | tostring)" end' 2>/dev/null |
    tail -n 25
}

run_case() { # CLIENT CREDS FUNCTION ARGS...
  local client=$1 creds=$2 name rc berth_from
  shift 2
  name="$client $LABEL $creds"
  if [[ -n $CASES_FILTER && ! $name =~ $CASES_FILTER ]]; then
    return 0
  fi
  CASE_DIR=$WORK/cases/${client}-${MODE}-${creds}
  CASE_REASON=$CASE_DIR/reason
  mkdir -p "$CASE_DIR"
  local log=$LOGS/case-${client}-${MODE}-${creds}.log
  berth_from=$(wc -l <"$LOGS/berth-$MODE.log")
  local t0=$SECONDS
  set +e
  (
    set -eEuo pipefail
    trap 'rc=$?; [[ -s $CASE_REASON ]] || echo "line $LINENO: $BASH_COMMAND (exit $rc)" >"$CASE_REASON"' ERR
    "$@"
  ) >"$log" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    echo "PASS $name ($((SECONDS - t0))s)"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    echo "FAIL $name ($(cat "$CASE_REASON" 2>/dev/null || echo "exit $rc"))"
    echo "   --- last lines of $log"
    tail -n 15 "$log" | sed 's/^/   | /'
    echo "   --- berth ($MODE) during the case"
    berth_log_since "$MODE" "$berth_from" | sed 's/^/   | /'
    case $client in
      docker) echo "   --- dockerd"; tail -n 8 "$LOGS/dockerd.log" | sed 's/^/   | /' ;;
      ctr | cri) echo "   --- containerd"; tail -n 8 "$LOGS/containerd.log" | sed 's/^/   | /' ;;
    esac
  fi
}

setup_failed() {
  echo "FAIL setup ($1)"
  echo "0 passed, 1 failed"
  exit 1
}

# ---------------------------------------------------------------------------
# Main

make_ca
start_berth http || setup_failed "berth over plain HTTP did not start: see $LOGS/berth-http.log"
start_berth tls || setup_failed "berth over TLS did not start: see $LOGS/berth-tls.log"
start_upstream || setup_failed "docker-registry (the pull-through cache's upstream) did not start: see $LOGS/upstream.log"
start_berth proxy || setup_failed "berth with an upstream did not start: see $LOGS/berth-proxy.log"
start_containerd || setup_failed "containerd did not start: $(tail -n 5 "$LOGS/containerd.log")"
write_hosts_toml http
write_hosts_toml tls
start_dockerd || setup_failed "dockerd did not start: $(tail -n 5 "$LOGS/dockerd.log")"
setup_storage
echo ".. clients: $("$DOCKER_BIN" --version), containerd $(containerd --version | awk '{print $3}'),"\
  "$(podman --version), $(buildah --version | cut -d' ' -f1-3), $(skopeo --version)," \
  "oras-py $("$PY" -c 'import importlib.metadata as m; print(m.version("oras"))')"

for mode in http tls; do
  use_mode "$mode"
  for kind in password pat authfile; do
    run_case docker "$kind" case_docker "$kind"
  done
  run_case docker quota case_quota
  run_case docker scrub case_scrub
  run_case docker backup-restore case_backup_restore
  for kind in password pat; do
    run_case ctr "$kind" case_ctr "$kind"
  done
  run_case cri dockerconfigjson-userpass case_cri userpass
  run_case cri dockerconfigjson-auth case_cri auth
  for kind in password pat authfile; do
    run_case podman "$kind" case_podman "$kind"
  done
  for kind in password pat authfile; do
    run_case buildah "$kind" case_buildah "$kind"
  done
  for kind in password pat authfile; do
    run_case skopeo "$kind" case_skopeo "$kind"
  done
  run_case skopeo readonly-pat case_readonly
  if [[ $mode == tls ]]; then
    run_case skopeo-curl untrusted-ca case_tls_untrusted
  fi
  run_case oras pat case_oras pat
  run_case oras authfile case_oras authfile
  run_case oras-referrers pat case_oras_referrers
  run_case multiarch-buildah pat case_multiarch_buildah
  run_case multiarch-skopeo authfile case_multiarch_skopeo
done

use_mode proxy
run_case docker registry-mirrors case_mirror_docker
run_case skopeo prefix case_mirror_skopeo
run_case ctr hosts-toml case_mirror_ctr
run_case cri hosts-toml case_mirror_cri

echo ".. run time $(($(date +%s) - START))s; logs in $LOGS"
((FAILED == 0)) || printf '.. failed: %s\n' "${FAILED_NAMES[@]}"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
