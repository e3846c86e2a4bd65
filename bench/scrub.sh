#!/usr/bin/env bash
# Scrub speed against this machine's single-core sha256 rate (issue 14: at
# least 80 % of it, without a rate limit, on warm data).
#
#   cargo build --release -p berth
#   bash bench/scrub.sh [SIZE_MIB=1024] [ROUNDS=3]
#
# Fills a fresh registry (SQLite + filesystem, in a temp directory on the
# work disk) with SIZE_MIB of 16 MiB blobs over HTTP, reads the data once so
# it is in the page cache, then measures:
#   - openssl:   `openssl speed -evp sha256` on 16 KiB buffers, one core (the
#                machine's single-core sha256 rate, SHA-NI where the CPU has it);
#   - sha256sum: coreutils hashing the same blob files, one process;
#   - scrub:     `berth scrub` wall time over the same data (the whole command:
#                opening the database, listing, reading, hashing, the report).
# Prints each rate (MiB/s, median of ROUNDS) and scrub / openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
rounds=${2:-3}
berth=${BERTH_BIN:-target/release/berth}
[ -x "$berth" ] || { echo "no $berth: cargo build --release -p berth" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-scrub-bench.XXXXXX")
cleanup() {
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BERTH_DATA_DIR="$work/data" BERTH_AUTH_ENABLED=false BERTH_LOG_LEVEL=warn
BERTH_LISTEN="127.0.0.1:$port" "$berth" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

blobs=$((size_mib / 16))
echo "filling: $blobs blobs of 16 MiB"
for i in $(seq "$blobs"); do
    head -c $((16 << 20)) /dev/urandom >"$work/blob"
    digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
    curl -fs -o /dev/null -X POST --data-binary @"$work/blob" -H 'content-type: application/octet-stream' \
        "http://127.0.0.1:$port/v2/bench/scrub/blobs/uploads/?digest=$digest"
done
rm -f "$work/blob"
bytes=$((blobs * (16 << 20)))
files=$(find "$work/data/blobs/blobs" -type f)
cat $files >/dev/null  # warm the page cache

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mibs() { awk -v b="$bytes" -v s="$1" 'BEGIN {printf "%.0f", b / s / 1048576}'; }
now() { date +%s.%N; }

openssl_rates=() sum_rates=() scrub_rates=()
for r in $(seq "$rounds"); do
    # openssl prints "sha256  ...  <16384-byte rate>k" in 1000s of bytes per second.
    k=$(openssl speed -evp sha256 -bytes 16384 -seconds 2 2>/dev/null | awk '/^sha256/ {print $NF}' | tr -d k)
    openssl_rates+=("$(awk -v k="$k" 'BEGIN {printf "%.0f", k * 1000 / 1048576}')")
    t0=$(now); cat $files | sha256sum >/dev/null; t1=$(now)
    sum_rates+=("$(mibs "$(echo "$t1 - $t0" | bc -l)")")
    t0=$(now); "$berth" scrub >"$work/scrub.out"; t1=$(now)
    grep -q "no problems found" "$work/scrub.out" || { cat "$work/scrub.out"; exit 1; }
    scrub_rates+=("$(mibs "$(echo "$t1 - $t0" | bc -l)")")
    echo "round $r: openssl ${openssl_rates[-1]} MiB/s, sha256sum ${sum_rates[-1]} MiB/s, berth scrub ${scrub_rates[-1]} MiB/s"
done
o=$(printf '%s\n' "${openssl_rates[@]}" | median)
s=$(printf '%s\n' "${sum_rates[@]}" | median)
b=$(printf '%s\n' "${scrub_rates[@]}" | median)
echo
echo "| data | openssl sha256, 1 core | sha256sum | berth scrub | scrub / openssl |"
echo "|---|---|---|---|---|"
printf '| %d MiB in %d blobs, warm | %s MiB/s | %s MiB/s | %s MiB/s | %.2f |\n' \
    "$size_mib" "$blobs" "$o" "$s" "$b" "$(echo "$b / $o" | bc -l)"
