# Shared by the bench scripts (source it): ports, readiness, and Debian's
# docker-registry (CNCF Distribution 2.8) as the upstream, configured the
# way berth-bench configures it (bench/src/servers.rs).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# start_distribution BIN DIR: serves DIR/upstream on a free loopback port,
# logs to DIR/registry.log; sets DISTRIBUTION_PID and DISTRIBUTION_URL.
start_distribution() {
  local bin=$1 dir=$2 port
  port=$(free_port)
  cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/upstream
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: berth-bench
YAML
  env -u REGISTRY_HTTP_ADDR "$bin" serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  DISTRIBUTION_PID=$!
  DISTRIBUTION_URL=http://127.0.0.1:$port
  wait_http "$DISTRIBUTION_URL/v2/"
}
