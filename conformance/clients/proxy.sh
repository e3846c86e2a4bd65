# Pull-through cache cases (issue #12), sourced by run.sh.
#
# Debian's docker-registry (Distribution 2.8) on loopback plays Docker Hub:
# it holds library/alpine:3.20, an index of linux/amd64 and linux/arm64 built
# by mkoci.py and pushed with skopeo. A third Berth ("proxy") caches it as
# the upstream "hub" with mirror_root and access = "public", and dockerd is
# started with it as its registry mirror. Nothing leaves the machine: if the
# mirror failed, dockerd would fall back to Docker Hub, which it cannot reach.
#
# Every case checks that the digest the client pulled, the one Berth serves
# and the upstream's are the same.

UPSTREAM_PORT=
UPSTREAM_DIGEST=

start_upstream() {
  local d=$WORK/upstream log=$LOGS/upstream.log
  command -v docker-registry >/dev/null || return 1
  mkdir -p "$d"
  printf '%s\n' "version: 0.1" "log:" "  level: info" "  accesslog:" "    disabled: true" "storage:" \
    "  filesystem:" "    rootdirectory: $d/data" "http:" "  addr: 127.0.0.1:0" "  secret: berth-clients-upstream" \
    >"$d/config.yml"
  env -u REGISTRY_HTTP_ADDR docker-registry serve "$d/config.yml" >"$log" 2>&1 &
  DAEMON_PID[upstream]=$!
  wait_for 30 "docker-registry" grep -q 'listening on' "$log"
  UPSTREAM_PORT=$(grep -m1 -o 'listening on [0-9.]*:[0-9]*' "$log" | sed 's/.*://')
  "$PY" "$HERE/mkoci.py" "$d/oci" 3.20 "upstream alpine" --arch amd64 --arch arm64 >/dev/null
  skopeo copy --all --dest-tls-verify=false --digestfile "$d/digest" \
    "oci:$d/oci:3.20" "docker://127.0.0.1:$UPSTREAM_PORT/library/alpine:3.20" >>"$LOGS/upstream-push.log" 2>&1
  UPSTREAM_DIGEST=$(cat "$d/digest")
  echo ".. upstream (docker-registry) on 127.0.0.1:$UPSTREAM_PORT: library/alpine:3.20 = $UPSTREAM_DIGEST"
}

# The upstream as [[upstreams]] in the environment of the proxy instance.
proxy_upstreams() {
  jq -cn --arg url "http://127.0.0.1:$UPSTREAM_PORT" \
    '[{name: "hub", url: $url, access: "public", mirror_root: true, revalidate_after: "5m"}]'
}

# dockerd with registry-mirrors: `docker pull alpine:3.20` is
# docker.io/library/alpine:3.20, asked of the mirror at /v2/library/alpine
# (no prefix: mirror_root answers it), anonymously (access = "public").
case_mirror_docker() {
  local out pulled repodigest served
  mkdir -p "$CASE_DIR/docker-config"
  export DOCKER_CONFIG=$CASE_DIR/docker-config
  out=$("${DOCKER[@]}" pull alpine:3.20) || fail "docker pull alpine:3.20 through the mirror failed: $out"
  echo "$out"
  pulled=$(sed -n 's/^Digest: //p' <<<"$out")
  repodigest=$("${DOCKER[@]}" inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' alpine:3.20 |
    sed -n 's|^alpine@||p')
  served=$(served_digest hub/library/alpine 3.20)
  same_digests upstream="$UPSTREAM_DIGEST" pull="$pulled" RepoDigests="$repodigest" served="$served"
  "${DOCKER[@]}" rmi alpine:3.20
}

# skopeo by prefix: REG/hub/library/alpine, both platforms, digests kept.
case_mirror_skopeo() {
  local inspected copied served
  inspected=sha256:$(skopeo inspect --raw "${TLS[@]}" "docker://$REG/hub/library/alpine:3.20" | sha256sum | cut -d' ' -f1)
  skopeo copy --all --preserve-digests "${SRC_TLS[@]}" --digestfile "$CASE_DIR/copied" \
    "docker://$REG/hub/library/alpine:3.20" "oci:$CASE_DIR/pulled:3.20"
  copied=$(cat "$CASE_DIR/copied")
  served=$(served_digest hub/library/alpine 3.20)
  same_digests upstream="$UPSTREAM_DIGEST" inspect="$inspected" copy="$copied" served="$served"
  for arch in amd64 arm64; do
    same_digests "upstream-$arch=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' \
      "$WORK/upstream/oci/blobs/sha256/${UPSTREAM_DIGEST#sha256:}")" \
      "pulled-$arch=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' \
        "$CASE_DIR/pulled/blobs/sha256/${copied#sha256:}")"
  done
}

# containerd with a hosts.toml mirror for docker.io: the host URL is the
# API root of the prefix (override_path), as k3s's registries.yaml writes it.
case_mirror_ctr() {
  local hosts=$CASE_DIR/hosts pulled
  mkdir -p "$hosts/docker.io"
  printf '%s\n' 'server = "https://registry-1.docker.io"' '' "[host.\"http://$REG/v2/hub\"]" \
    '  capabilities = ["pull", "resolve"]' '  override_path = true' >"$hosts/docker.io/hosts.toml"
  "${CTR[@]}" images pull --hosts-dir "$hosts" --snapshotter native docker.io/library/alpine:3.20
  pulled=$("${CTR[@]}" images ls "name==docker.io/library/alpine:3.20" | awk 'NR == 2 { print $3 }')
  same_digests upstream="$UPSTREAM_DIGEST" pull="$pulled" served="$(served_digest hub/library/alpine 3.20)"
  "${CTR[@]}" images rm --sync docker.io/library/alpine:3.20
}

# kubelet's path through the mirror: CRI PullImage of docker.io/library/alpine
# with containerd's CRI registry config_path holding a docker.io/hosts.toml
# that points at the prefix (override_path), and no credentials
# (access = "public"). If the mirror failed, containerd would fall back to
# registry-1.docker.io, which it cannot reach.
case_mirror_cri() {
  local out pulled image=docker.io/library/alpine:3.20
  mkdir -p "$CERTS_D/docker.io"
  printf '%s\n' 'server = "https://registry-1.docker.io"' '' "[host.\"http://$REG/v2/hub\"]" \
    '  capabilities = ["pull", "resolve"]' '  override_path = true' >"$CERTS_D/docker.io/hosts.toml"
  out=$("$PY" "$HERE/cri_pull.py" "$CONTAINERD_SOCK" "$image" - anonymous "$CASE_DIR/gen")
  rm -f "$CERTS_D/docker.io/hosts.toml"
  echo "$out"
  pulled=$(jq -r '.repo_digests[] | select(startswith("docker.io/library/alpine@")) | sub(".*@"; "")' <<<"$out")
  same_digests upstream="$UPSTREAM_DIGEST" cri-repo_digests="$pulled" served="$(served_digest hub/library/alpine 3.20)"
}
