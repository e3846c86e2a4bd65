#!/usr/bin/env bash
# bench/backup.sh: how long `berth backup` takes next to a plain `cp -r` of
# the data directory (issue #14: "a backup of a 1 GiB registry takes no more
# than 1.5x a plain cp -r of its data directory").
#
#   bench/backup.sh                       # builds target/release/berth if missing
#   BERTH_BIN=path/to/berth SIZE_MIB=1024 ROUNDS=5 bench/backup.sh
#
# 1. Starts `berth serve` (SQLite + filesystem storage, auth off) on a fresh
#    data directory under WORK (default: a temp dir in $TMPDIR or /tmp).
# 2. Fills it over HTTP with about SIZE_MIB MiB (default 1024) of images of
#    mixed blob sizes, pushed with curl along the OCI push flow (each blob a
#    monolithic `POST /v2/<repo>/blobs/uploads/?digest=`, then the manifest
#    PUT by tag), in 40 repositories. Per image: a JSON config and 1-6
#    random layers, 55 % of them 1-64 KiB, 35 % 64 KiB-1 MiB, 10 % 1-24 MiB;
#    every 5th image also mounts a 24 MiB base layer (stored once). The
#    defaults give about 1 GiB in 200 images, 900 blobs.
# 3. With the server still running (backups run online), times for each
#    destination, in ROUNDS rounds (default 5) whose order alternates:
#      cp -r DATA DEST          and      berth backup --to DEST
#    removing DEST after each (untimed) and running `sync` before each timed
#    command (untimed), so one command's writeback does not land in the
#    other's time. Destinations:
#      link   DEST beside DATA, same filesystem: the backup hard-links blobs
#      tmpfs  DEST in /dev/shm, another filesystem: the backup copies (into
#             memory, so flushing costs nothing)
#      ext4   DEST on an ext4 image under WORK on a loop device with direct
#             I/O (root only; skipped otherwise or with LOOP=0): another
#             disk-backed filesystem whose flushes reach the disk. There the
#             backup's data is on disk when it returns (it ends with syncfs)
#             and cp's is not: `sync -f DEST` right after cp is timed too,
#             and reported as "cp -r + sync"
#    On the copying destinations `berth backup --jobs 1` is timed as well
#    (one thread instead of the default 2-4), and on the link case's backup
#    `berth restore` into a fresh directory (copies and verifies every
#    digest), once per round each.
# 4. Prints a Markdown table of the medians and the ratio backup / cp -r,
#    and the machine it ran on. Everything under WORK is removed at the end
#    unless KEEP=1.
#
# Needs: curl, sha256sum, GNU coreutils; about 3 x SIZE_MIB of disk under
# WORK (data, one copy, the ext4 image) and SIZE_MIB of memory in /dev/shm.
# Takes about 3 minutes on 2 cores for the defaults.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
LOOP=${LOOP:-1}
KEEP=${KEEP:-0}

if [[ -z ${BERTH_BIN:-} ]]; then
  BERTH_BIN=$ROOT/target/release/berth
  if [[ ! -x $BERTH_BIN ]]; then
    echo ".. cargo build --release -p berth" >&2
    (cd "$ROOT" && cargo build --release -q -p berth)
  fi
fi
[[ -x $BERTH_BIN ]] || { echo "BERTH_BIN=$BERTH_BIN is not executable" >&2; exit 2; }

WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/berth-backup-bench.XXXXXX")}
mkdir -p "$WORK"
SHM=$(mktemp -d /dev/shm/berth-backup-bench.XXXXXX)
DATA=$WORK/data
MNT=$WORK/ext4
SERVER_PID=
MOUNTED=0
LOOPDEV=

cleanup() {
  set +e
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  ((MOUNTED)) && umount "$MNT"
  [[ -n $LOOPDEV ]] && losetup -d "$LOOPDEV"
  rm -rf "$SHM"
  if [[ $KEEP != 1 ]]; then
    rm -rf "$WORK"
  else
    echo ".. kept $WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

# ---------------------------------------------------------------------------
# The registry

export BERTH_DATA_DIR=$DATA BERTH_AUTH_ENABLED=false BERTH_LOG_FORMAT=json RUST_LOG=warn,berth=info
BERTH_LISTEN=127.0.0.1:0 "$BERTH_BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
  grep -q '"berth ready"' "$WORK/server.log" 2>/dev/null && break
  sleep 0.1
done
LISTEN=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$WORK/server.log" | head -n1)
[[ -n $LISTEN ]] || { echo "berth did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
BASE=http://$LISTEN
echo ".. $("$BERTH_BIN" --version 2>/dev/null || echo berth) ($BERTH_BIN) on $BASE, data in $DATA"

# ---------------------------------------------------------------------------
# Filling it

RANDOM=14 # the same sizes every run (the bytes are random)
BLOBS=$WORK/gen
mkdir -p "$BLOBS"
PUSHED_BYTES=0
PUSHED_BLOBS=0

# push_blob REPO FILE -> prints "digest size"
push_blob() {
  local repo=$1 file=$2 hex size status
  hex=$(sha256sum "$file" | cut -d' ' -f1)
  size=$(stat -c %s "$file")
  status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" "$BASE/v2/$repo/blobs/uploads/?digest=sha256:$hex")
  [[ $status == 201 ]] || { echo "blob push to $repo answered $status" >&2; return 1; }
  echo "sha256:$hex $size"
}

layer_size() { # -> LAYER_SIZE (no subshell: it would reseed RANDOM)
  local r=$((RANDOM % 100)) kib
  if ((r < 55)); then
    kib=$((1 + RANDOM % 64))
  elif ((r < 90)); then
    kib=$((64 + RANDOM % (1024 - 64)))
  else
    kib=$((1024 + RANDOM % (24 * 1024 - 1024)))
  fi
  LAYER_SIZE=$((kib * 1024 + RANDOM % 1024))
}

descriptor() { # MEDIATYPE "digest size"
  local d=${2% *} s=${2#* }
  printf '{"mediaType":"%s","digest":"%s","size":%s}' "$1" "$d" "$s"
}

head -c $((24 * 1024 * 1024)) /dev/urandom >"$BLOBS/base"
BASE_LAYER=
target=$((SIZE_MIB * 1024 * 1024))
images=0
t0=$(now_ns)
while ((PUSHED_BYTES < target)); do
  repo=bench/app$((images % 40))
  tag=v$images
  layers=()
  if ((images == 0)); then
    BASE_LAYER=$(push_blob "$repo" "$BLOBS/base")
    PUSHED_BYTES=$((PUSHED_BYTES + ${BASE_LAYER#* }))
    PUSHED_BLOBS=$((PUSHED_BLOBS + 1))
    layers+=("$BASE_LAYER")
  elif ((images % 5 == 0)); then
    # Cross-repository mount: stored once, linked again.
    status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST \
      "$BASE/v2/$repo/blobs/uploads/?mount=${BASE_LAYER% *}&from=bench/app0")
    [[ $status == 201 ]] || { echo "blob mount into $repo answered $status" >&2; exit 1; }
    layers+=("$BASE_LAYER")
  fi
  n=$((1 + RANDOM % 6))
  for ((l = 0; l < n; l++)); do
    layer_size
    head -c "$LAYER_SIZE" /dev/urandom >"$BLOBS/layer"
    d=$(push_blob "$repo" "$BLOBS/layer")
    layers+=("$d")
    PUSHED_BYTES=$((PUSHED_BYTES + ${d#* }))
    PUSHED_BLOBS=$((PUSHED_BLOBS + 1))
  done
  diff_ids=$(printf '"%s",' "${layers[@]% *}")
  printf '{"architecture":"amd64","os":"linux","config":{"Labels":{"bench":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$repo:$tag" "${diff_ids%,}" >"$BLOBS/config"
  config=$(push_blob "$repo" "$BLOBS/config")
  PUSHED_BYTES=$((PUSHED_BYTES + ${config#* }))
  PUSHED_BLOBS=$((PUSHED_BLOBS + 1))
  entries=""
  for d in "${layers[@]}"; do
    entries+=$(descriptor application/vnd.oci.image.layer.v1.tar+gzip "$d"),
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$(descriptor application/vnd.oci.image.config.v1+json "$config")" "${entries%,}" >"$BLOBS/manifest"
  status=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$BLOBS/manifest" "$BASE/v2/$repo/manifests/$tag")
  [[ $status == 201 ]] || { echo "manifest PUT $repo:$tag answered $status" >&2; exit 1; }
  images=$((images + 1))
done
rm -rf "$BLOBS"
sync
files=$(find "$DATA" -type f | wc -l)
echo ".. pushed $images images, $PUSHED_BLOBS distinct blobs, $((PUSHED_BYTES / 1024 / 1024)) MiB in $((($(now_ns) - t0) / 1000000000))s;" \
  "data directory: $(du -sh "$DATA" | cut -f1), $files files"

# ---------------------------------------------------------------------------
# Destinations

declare -A DEST_DIR=([link]=$WORK/dest [tmpfs]=$SHM/dest)
CASES=(link tmpfs)
if [[ $LOOP == 1 && $(id -u) == 0 ]]; then
  truncate -s $(((SIZE_MIB * 3 / 2 + 512) * 1024 * 1024)) "$WORK/ext4.img"
  mkfs.ext4 -q -F "$WORK/ext4.img"
  mkdir -p "$MNT"
  # Direct I/O: the loop device writes through to the disk instead of into
  # the page cache of its backing file, so a flush is a real one.
  if LOOPDEV=$(losetup --direct-io=on --find --show "$WORK/ext4.img" 2>"$WORK/mount.err") &&
    mount "$LOOPDEV" "$MNT" 2>>"$WORK/mount.err"; then
    MOUNTED=1
    DEST_DIR[ext4]=$MNT/dest
    CASES+=(ext4)
  else
    echo ".. ext4 case skipped: cannot loop-mount ($(cat "$WORK/mount.err"))"
  fi
else
  echo ".. ext4 case skipped (needs root and LOOP=1)"
fi

declare -A TIMES=()
record() { TIMES[$1]+="$2 "; } # KEY NANOSECONDS

time_cp() { # CASE
  local dest=${DEST_DIR[$1]} a b c
  sync
  a=$(now_ns)
  cp -r "$DATA" "$dest"
  b=$(now_ns)
  record "$1/cp" $((b - a))
  if [[ $1 == ext4 ]]; then
    sync -f "$dest"
    c=$(now_ns)
    record "$1/cp+sync" $((c - a))
  fi
  rm -rf "$dest"
}

time_backup() { # CASE ROUND
  local dest=${DEST_DIR[$1]} a b out
  sync
  a=$(now_ns)
  out=$("$BERTH_BIN" backup --to "$dest" 2>"$WORK/backup.err") || { cat "$WORK/backup.err" >&2; exit 1; }
  b=$(now_ns)
  record "$1/backup" $((b - a))
  [[ $2 == 1 ]] && echo ".. $1: $out"
  if [[ $1 != link ]]; then
    # One thread, to see what the parallel copy buys.
    rm -rf "$dest"
    sync
    a=$(now_ns)
    "$BERTH_BIN" backup --jobs 1 --to "$dest" >/dev/null 2>"$WORK/backup.err" || { cat "$WORK/backup.err" >&2; exit 1; }
    b=$(now_ns)
    record "$1/backup-j1" $((b - a))
  fi
  if [[ $1 == link ]]; then
    local restored=$WORK/restored
    sync
    a=$(now_ns)
    BERTH_DATA_DIR=$restored "$BERTH_BIN" restore --from "$dest" >"$WORK/restore.out" 2>"$WORK/restore.err" ||
      { cat "$WORK/restore.out" "$WORK/restore.err" >&2; exit 1; }
    b=$(now_ns)
    record "$1/restore" $((b - a))
    [[ $2 == 1 ]] && echo ".. restore: $(cat "$WORK/restore.out")"
    rm -rf "$restored"
  fi
  rm -rf "$dest"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for c in "${CASES[@]}"; do
    if ((round % 2)); then
      time_cp "$c"
      time_backup "$c" "$round"
    else
      time_backup "$c" "$round"
      time_cp "$c"
    fi
  done
  echo ".. round $round/$ROUNDS done"
done

median_s() { # KEY -> seconds, 2 decimals
  tr ' ' '\n' <<<"${TIMES[$1]}" | grep . | sort -n |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m / 1e9 }'
}

echo
echo "## berth backup against cp -r ($(du -sh "$DATA" | cut -f1) data directory, $files files; medians of $ROUNDS rounds)"
echo
echo "| destination | cp -r | berth backup | backup / cp -r | berth backup --jobs 1 |"
echo "|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  cp_s=$(median_s "$c/cp")
  b_s=$(median_s "$c/backup")
  case $c in
    link) label="same filesystem (backup hard-links)" ;;
    tmpfs) label="tmpfs /dev/shm (backup copies)" ;;
    ext4) label="another ext4 (loop device, direct I/O; backup copies and syncs)" ;;
  esac
  j1=-
  [[ $c != link ]] && j1=$(median_s "$c/backup-j1")s
  echo "| $label | ${cp_s}s | ${b_s}s | $(awk -v a="$b_s" -v b="$cp_s" 'BEGIN { printf "%.2f", a / b }') | $j1 |"
  if [[ $c == ext4 ]]; then
    cs_s=$(median_s "ext4/cp+sync")
    echo "| the same, cp -r followed by sync -f | ${cs_s}s | ${b_s}s | $(awk -v a="$b_s" -v b="$cs_s" 'BEGIN { printf "%.2f", a / b }') | $j1 |"
  fi
done
echo
echo "berth restore (copy and verify every digest, from the same-filesystem backup): $(median_s link/restore)s median"
echo
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ { print $2 }') GiB memory," \
  "$(uname -sr), data on $(df -T "$DATA" | awk 'NR == 2 { print $2 " (" $1 ")" }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
