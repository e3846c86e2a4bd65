#!/usr/bin/env bash
# Pull-through cache speed (issue 12): a cached pull against a local pull,
# and a first pull through the cache against pulling from the upstream
# directly, all in one run, interleaved.
#
#   cargo build --release -p berth
#   bash bench/proxy.sh                     # ROUNDS=7 LAYERS_MIB="8 24 64 96" RATE_MBPS=100
#   BERTH_BIN=path/to/berth KEEP=1 bash bench/proxy.sh
#
# Parts, all on 127.0.0.1:
#   - upstream: Debian's docker-registry (CNCF Distribution 2.8), no auth,
#     filesystem storage; images `bench/a:v1` and `bench/b:v1` (a config and
#     one random layer per LAYERS_MIB entry) are pushed to it with curl;
#   - link:     a throttling TCP proxy in front of the upstream (python
#     asyncio, one token bucket of RATE_MBPS MB/s for the bytes coming back
#     from the upstream, shared by all connections): a modelled network link;
#   - berth:    `berth serve` (SQLite + filesystem, auth off) with two
#     upstreams, `up` straight at the upstream and `link` through the
#     throttle; a third image of the same sizes is pushed into it as
#     `bench/local:v1`, the local copy.
#
# A pull is what a client does: GET the manifest by tag, then GET the config
# and every layer, one after another on one keep-alive connection (one curl
# process, bodies discarded; each body's length is checked). Timed: from
# starting curl to its exit.
#
# Each round starts a fresh Berth on a fresh data directory (so nothing is
# cached), pushes the local copy, then times, in pairs whose order
# alternates round by round:
#   1. direct       (upstream bench/a)             vs first pull of up/bench/a
#   2. direct, link (bench/b through the proxy)    vs first pull of link/bench/b
#   3. local pull   (berth bench/local)            vs cached pull of up/bench/a
# `sync` runs (untimed) before every timed pull, so one pull's dirty pages
# are not written back during another's. Prints each round, then medians,
# the ratio of medians and the median of the per-round ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
LAYERS_MIB=${LAYERS_MIB:-"8 24 64 96"}
RATE_MBPS=${RATE_MBPS:-100}
BERTH_BIN=${BERTH_BIN:-target/release/berth}
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
[[ -x $BERTH_BIN ]] || { echo "no $BERTH_BIN: cargo build --release -p berth (or BERTH_BIN=...)" >&2; exit 2; }
[[ -x $REGISTRY_BIN ]] || { echo "no $REGISTRY_BIN: apt-get install docker-registry" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-proxy-bench.XXXXXX")
PIDS=()
BERTH_PID=
cleanup() {
  # The script's own status, not that of a server killed here (143).
  local status=$?
  if [[ -n $BERTH_PID ]]; then kill "$BERTH_PID" 2>/dev/null && wait "$BERTH_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP:-} ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
# shellcheck source=bench/lib.sh
source bench/lib.sh

# --- the upstream -----------------------------------------------------------
start_distribution "$REGISTRY_BIN" "$WORK"
PIDS+=("$DISTRIBUTION_PID")
UPSTREAM=$DISTRIBUTION_URL
UP_PORT=${UPSTREAM##*:}

# --- the link: a throttling TCP proxy ----------------------------------------
LINK_PORT=$(free_port)
cat >"$WORK/throttle.py" <<'EOF'
import asyncio, sys, time
listen, target_port, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) * 1e6
CHUNK = 256 * 1024
BURST = 0.02  # seconds of link time an idle link may catch up (timer oversleep)
bucket = {"at": time.monotonic()}  # one link: all connections share it

async def pace(n):
    # Every byte waits for its slot on the link; a late wake-up may catch up
    # at most BURST, so the mean rate holds without bursts beyond it.
    now = time.monotonic()
    start = max(now - BURST, bucket["at"])
    bucket["at"] = start + n / rate
    if bucket["at"] - now > 0.001:
        await asyncio.sleep(bucket["at"] - now)

async def pipe(reader, writer, limited):
    try:
        while data := await reader.read(CHUNK):
            if limited:
                await pace(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()

async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
    await asyncio.gather(pipe(cr, uw, False), pipe(ur, cw, True))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()

asyncio.run(main())
EOF
python3 "$WORK/throttle.py" "$LINK_PORT" "$UP_PORT" "$RATE_MBPS" >"$WORK/throttle.log" 2>&1 &
PIDS+=($!)
LINK=http://127.0.0.1:$LINK_PORT
wait_http "$LINK/v2/"

# --- the images ----------------------------------------------------------------
# Three images of the same sizes and different random bytes, so no copy can
# be linked from another (Berth mounts a blob a cached manifest references
# from any repository holding it, which would skip the fetch):
#   a: in the upstream, pulled directly and through `up`;
#   b: in the upstream, pulled directly through the link and through `link`;
#   l: pushed into Berth itself, the local copy.
digest_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
make_image() {
  local name=$1 dir=$WORK/image-$1 i=0 mib j
  mkdir -p "$dir"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"bench":"%s-%s"}' \
    "$name" "$(date +%s%N)" >"$dir/blob0"
  for mib in $LAYERS_MIB; do
    i=$((i + 1))
    head -c $((mib << 20)) /dev/urandom >"$dir/blob$i"
  done
  {
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    printf '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[' \
      "$(digest_of "$dir/blob0")" "$(stat -c %s "$dir/blob0")"
    for j in $(seq 1 "$i"); do
      [[ $j -gt 1 ]] && printf ','
      printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}' \
        "$(digest_of "$dir/blob$j")" "$(stat -c %s "$dir/blob$j")"
    done
    printf ']}'
  } >"$dir/manifest"
  for j in $(seq 0 "$i"); do digest_of "$dir/blob$j"; done >"$dir/digests"
  BLOB_COUNT=$((i + 1))
}
for name in a b l; do make_image "$name"; done
blob_files() { local j; for j in $(seq 0 $((BLOB_COUNT - 1))); do echo "$WORK/image-$1/blob$j"; done; }
TOTAL=0
for f in $(blob_files a) "$WORK/image-a/manifest"; do TOTAL=$((TOTAL + $(stat -c %s "$f"))); done

# Pushes image `name` to `base` as `repo:v1`: POST, then PUT with the bytes.
push_image() {
  local name=$1 base=$2 repo=$3 f location sep
  for f in $(blob_files "$name"); do
    location=$(curl -fsS -X POST -D - -o /dev/null "$base/v2/$repo/blobs/uploads/" |
      tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    [[ $location == http* ]] || location=$base$location
    sep='?'; [[ $location == *\?* ]] && sep='&'
    curl -fsS -o /dev/null -X PUT -H 'content-type: application/octet-stream' \
      --data-binary @"$f" "$location${sep}digest=$(digest_of "$f")"
  done
  curl -fsS -o /dev/null -X PUT -H 'content-type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$WORK/image-$name/manifest" "$base/v2/$repo/manifests/v1"
}
push_image a "$UPSTREAM" bench/a
push_image b "$UPSTREAM" bench/b

# --- pulls -----------------------------------------------------------------------
ACCEPT='application/vnd.oci.image.manifest.v1+json'
# One pull of image `name` as `repo:v1` from `base`: one curl process, one
# connection; prints the seconds it took. Fails unless every body had its
# full length.
pull() {
  local name=$1 base=$2 repo=$3 args=() f d t0 t1 sizes expected=
  args+=(-H "accept: $ACCEPT" -o /dev/null "$base/v2/$repo/manifests/v1")
  for f in "$WORK/image-$name/manifest" $(blob_files "$name"); do expected+="$(stat -c %s "$f") "; done
  for d in $(cat "$WORK/image-$name/digests"); do args+=(-o /dev/null "$base/v2/$repo/blobs/$d"); done
  sync
  t0=$(now_ns)
  sizes=$(curl -fsS -w '%{size_download} ' "${args[@]}")
  t1=$(now_ns)
  [[ $sizes == "$expected" ]] || { echo "pull $base/$repo: got sizes [$sizes], want [$expected]" >&2; return 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'
}

start_berth() {
  local dir=$WORK/berth port
  rm -rf "$dir"
  mkdir -p "$dir"
  port=$(free_port)
  BERTH_DATA_DIR=$dir BERTH_AUTH_ENABLED=false BERTH_LOG_LEVEL=warn RUST_LOG=warn \
    BERTH_LISTEN=127.0.0.1:$port \
    BERTH_UPSTREAMS="[{\"name\":\"up\",\"url\":\"$UPSTREAM\",\"access\":\"public\"},{\"name\":\"link\",\"url\":\"$LINK\",\"access\":\"public\"}]" \
    "$BERTH_BIN" serve >>"$WORK/berth.log" 2>&1 &
  BERTH_PID=$!
  BERTH=http://127.0.0.1:$port
  wait_http "$BERTH/v2/"
}
stop_berth() { kill "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true; BERTH_PID=; }

# Times `a` and `b` (each "base repo") in the order given by the round.
pair() {
  local round=$1 a=$2 b=$3
  if ((round % 2)); then
    tb=$(pull $b); ta=$(pull $a)
  else
    ta=$(pull $a); tb=$(pull $b)
  fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mbs() { awk -v s="$1" -v b="$TOTAL" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)
echo "berth: $("$BERTH_BIN" --version 2>/dev/null) ($BERTH_BIN)"
echo "upstream: $("$REGISTRY_BIN" --version 2>/dev/null | head -n1); link: $RATE_MBPS MB/s"
echo "images: $BLOB_COUNT blobs each (layers of $LAYERS_MIB MiB), $TOTAL bytes; $ROUNDS rounds; $(nproc) cores, $cpu"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-5s %9s %9s %9s %9s %9s %9s   %s\n' round direct first d-link f-link local cached load
declare -a D F DL FL L C
for r in $(seq 1 "$ROUNDS"); do
  start_berth
  push_image l "$BERTH" bench/local
  pair "$r" "a $UPSTREAM bench/a" "a $BERTH up/bench/a"; D+=("$ta"); F+=("$tb")
  pair "$r" "b $LINK bench/b" "b $BERTH link/bench/b"; DL+=("$ta"); FL+=("$tb")
  pair "$r" "l $BERTH bench/local" "a $BERTH up/bench/a"; L+=("$ta"); C+=("$tb")
  stop_berth
  printf '%-5s %9s %9s %9s %9s %9s %9s   %s\n' "$r" "${D[-1]}" "${F[-1]}" "${DL[-1]}" "${FL[-1]}" "${L[-1]}" "${C[-1]}" \
    "$(cut -d' ' -f1 /proc/loadavg)"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

ratio_line() { # name, baseline times, measured times (space-separated)
  local name=$1 base=($2) meas=($3) mb mm per=() k
  mb=$(printf '%s\n' "${base[@]}" | median)
  mm=$(printf '%s\n' "${meas[@]}" | median)
  for k in "${!base[@]}"; do per+=("$(awk -v a="${meas[$k]}" -v b="${base[$k]}" 'BEGIN { printf "%.3f", a / b }')"); done
  printf '| %s | %.3f s (%s MB/s) | %.3f s (%s MB/s) | %.2f× | %s× |\n' "$name" "$mb" "$(mbs "$mb")" "$mm" "$(mbs "$mm")" \
    "$(awk -v a="$mm" -v b="$mb" 'BEGIN { print a / b }')" "$(printf '%s\n' "${per[@]}" | median)"
}
echo
echo "| time, medians of $ROUNDS | baseline | through the cache | time ratio | per-round ratio |"
echo "|---|---:|---:|---:|---:|"
ratio_line "first pull / direct from the upstream, loopback" "${D[*]}" "${F[*]}"
ratio_line "first pull / direct, $RATE_MBPS MB/s link" "${DL[*]}" "${FL[*]}"
ratio_line "cached pull / local pull" "${L[*]}" "${C[*]}"
