#!/usr/bin/env bash
# Where a first pull through the pull-through cache spends CPU (issue 12):
# one random blob of MIB MiB in Debian's docker-registry on loopback, then N
# times a fresh Berth (SQLite + filesystem, auth off, upstream `up`), a direct
# pull and a first pull through the cache, each with curl. Prints wall time,
# curl's CPU, the upstream's and Berth's CPU ticks (1/100 s, /proc/<pid>/stat)
# and the whole machine's busy/idle ticks during the cache pull.
#
#   MIB=400 N=3 BERTH_BIN=target/release/berth bash bench/proxy-cpu.sh
#   PERF="record -F 2999 -g" ...   # perf on Berth during both pulls: /tmp/prof.data
#   PERF="stat -e context-switches,syscalls:sys_enter_recvfrom" ...
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH_BIN=${BERTH_BIN:-target/release/berth}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/berth-proxy-cpu.XXXXXX")
RP= BP=
trap 'kill $RP $BP 2>/dev/null; rm -rf $W' EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_distribution "${REGISTRY_BIN:-/usr/bin/docker-registry}" "$W"
RP=$DISTRIBUTION_PID
UP=${DISTRIBUTION_URL##*:}
head -c $((${MIB:-400} << 20)) /dev/urandom > $W/blob
D=sha256:$(sha256sum $W/blob | cut -d' ' -f1)
L=$(curl -fsS -X POST -D - -o /dev/null http://127.0.0.1:$UP/v2/bench/a/blobs/uploads/ | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
curl -fsS -X PUT --data-binary @$W/blob -H 'content-type: application/octet-stream' "$L&digest=$D"
curl -s -o /dev/null http://127.0.0.1:$UP/v2/bench/a/blobs/$D
BP=
for i in $(seq ${N:-3}); do
  rm -rf $W/b; mkdir -p $W/b; PORT=$(free_port)
  BERTH_DATA_DIR=$W/b BERTH_AUTH_ENABLED=false BERTH_LOG_LEVEL=warn BERTH_LISTEN=127.0.0.1:$PORT \
   BERTH_UPSTREAMS="[{\"name\":\"up\",\"url\":\"http://127.0.0.1:$UP\",\"access\":\"public\"}]" $BERTH_BIN serve > $W/b.log 2>&1 & BP=$!
  wait_http http://127.0.0.1:$PORT/v2/
  sync
  t0=$(awk '{print $14+$15}' /proc/$BP/stat)
  if [[ -n ${PERF:-} ]]; then perf $PERF -p $BP -o /tmp/prof.data 2>/dev/null & PF=$!; sleep 0.3; fi
  r0=$(awk '{print $14+$15}' /proc/$RP/stat)
  /usr/bin/time -f "direct %e s, curl cpu %U+%S" curl -s -o /dev/null http://127.0.0.1:$UP/v2/bench/a/blobs/$D
  r1=$(awk '{print $14+$15}' /proc/$RP/stat); echo "registry ticks direct: $((r1 - r0))"
  c0=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  /usr/bin/time -f "cache %e s, curl cpu %U+%S" curl -s -o /dev/null http://127.0.0.1:$PORT/v2/up/bench/a/blobs/$D
  r2=$(awk '{print $14+$15}' /proc/$RP/stat); echo "registry ticks during cache pull: $((r2 - r1))"
  t1=$(awk '{print $14+$15}' /proc/$BP/stat)
  c1=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  echo "system busy/idle ticks before: $c0 after: $c1"
  [[ -n ${PERF:-} ]] && { kill -INT $PF; wait $PF || true; }
  echo "berth cpu ticks: $((t1 - t0))"
  sleep 1
  kill $BP; wait $BP 2>/dev/null || true; BP=
done
