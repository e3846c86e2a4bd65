#!/usr/bin/env bash
# Berth's web pages in a real browser (issue #11): Debian's chromium and
# chromedriver driven by Selenium (pages.py) against a `berth serve` with
# authentication on. The script signs in as alice, creates a token on the
# tokens page, pushes images with skopeo using it, browses to the package,
# its versions and version v1 (layers and sizes), deletes tag `latest`
# through the page, signs out and checks the private pages are gone; a
# second browser with JavaScript off signs in and reads the versions page;
# no console message may report a Content Security Policy violation.
#
#   conformance/browser/run.sh                  # builds Berth with cargo
#   BERTH_BIN=path/to/berth conformance/browser/run.sh
#   BERTH_BROWSER_DOCS=1 conformance/browser/run.sh   # also rewrite docs/screenshot-*.png
#
# Installs what is missing (apt: chromium chromium-driver skopeo; pip:
# selenium) unless BERTH_BROWSER_NO_INSTALL=1; apt needs root. Nothing is
# downloaded by Selenium itself. Screenshots, the server log and the console
# log go to ${BERTH_TEST_OUTPUT:-target/test-output}/browser/. Prints
# "PASS step" / "FAIL step: reason" lines and exits 1 on a failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$(date +%s)

echo "== web pages in a real browser (conformance/browser)"

OUT=${BERTH_TEST_OUTPUT:-$ROOT/target/test-output}/browser
[[ $OUT == /* ]] || OUT=$PWD/$OUT
rm -rf "$OUT"
mkdir -p "$OUT"

fail_setup() {
  echo "FAIL setup ($*)"
  exit 1
}

# ---------------------------------------------------------------------------
# Tools

APT_PACKAGES=(chromium chromium-driver skopeo)

install_tools() {
  local missing=() p out
  for p in "${APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed"* ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo ".. apt-get install ${missing[*]}"
    [[ $(id -u) == 0 ]] || fail_setup "apt-get install ${missing[*]} needs root"
    if ! out=$(export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
      echo "$out" | tail -n 20
      fail_setup "apt-get install ${missing[*]}"
    fi
  fi
  if ! python3 -c 'import selenium' 2>/dev/null; then
    echo ".. pip install selenium"
    # A Debian-managed python3 refuses plain `pip install` (PEP 668).
    python3 -m pip install -q --disable-pip-version-check selenium 2>/dev/null ||
      python3 -m pip install -q --disable-pip-version-check --break-system-packages selenium ||
      fail_setup "pip install selenium"
  fi
}

if [[ ${BERTH_BROWSER_NO_INSTALL:-0} != 1 ]]; then
  install_tools
fi
for tool in /usr/bin/chromium /usr/bin/chromedriver; do
  [[ -x $tool ]] || fail_setup "$tool missing (apt-get install chromium chromium-driver)"
done
command -v skopeo >/dev/null || fail_setup "skopeo missing"
PY=$(python3 -c 'import sys; print(sys.executable)')
"$PY" -c 'import selenium' 2>/dev/null || fail_setup "python3 cannot import selenium"

if [[ -z ${BERTH_BIN:-} ]]; then
  echo ".. cargo build -p berth"
  (cd "$ROOT" && cargo build -q -p berth) || fail_setup "cargo build -p berth"
  BERTH_BIN=$(cd "$ROOT" && cargo metadata -q --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/berth
fi
[[ -x $BERTH_BIN ]] || { echo "BERTH_BIN=$BERTH_BIN is not executable" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Berth with authentication on, in a scratch data directory

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-browser.XXXXXX")
mkdir -p "$WORK/home"
# skopeo run as root keeps a blob-info cache in /var/lib/containers/cache (no
# flag moves it): remove it afterwards unless it was there before.
VAR_LIB_CONTAINERS_EXISTED=0
[[ -e /var/lib/containers ]] && VAR_LIB_CONTAINERS_EXISTED=1
BERTH_PID=

cleanup() {
  local rc=$? i
  set +e
  if [[ -n $BERTH_PID ]] && kill -0 "$BERTH_PID" 2>/dev/null; then
    kill -TERM "$BERTH_PID"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$BERTH_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BERTH_PID" 2>/dev/null
  fi
  [[ -n $BERTH_PID ]] && wait "$BERTH_PID" 2>/dev/null
  if [[ $(id -u) == 0 && $VAR_LIB_CONTAINERS_EXISTED == 0 && -d /var/lib/containers ]]; then
    rm -rf /var/lib/containers/cache
    rmdir /var/lib/containers 2>/dev/null
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keep skopeo's and Chromium's configuration out of the real home directory.
export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_CACHE_HOME=$WORK/home/.cache
unset REGISTRY_AUTH_FILE DOCKER_CONFIG

USER_NAME=alice
USER_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
ADMIN_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
# For the README screenshots the pages should show a tidy pull command
# (localhost:5000/alice/demo:v1): use port 5000 if it is free.
LISTEN=127.0.0.1:0
if [[ ${BERTH_BROWSER_DOCS:-0} == 1 ]] &&
  "$PY" -c 'import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 5000)); s.listen()' 2>/dev/null; then
  LISTEN=127.0.0.1:5000
fi
BERTH_ENV=(
  BERTH_DATA_DIR="$WORK/data"
  BERTH_LISTEN=$LISTEN
  BERTH_LOG_FORMAT=json
  BERTH_AUTH_ENABLED=true
  BERTH_UI_ENABLED=true
  BERTH_ADMIN_PASSWORD="$ADMIN_PASSWORD"
)
LOG=$OUT/berth-serve.log

printf '%s\n' "$USER_PASSWORD" | env "${BERTH_ENV[@]}" "$BERTH_BIN" user add "$USER_NAME" --password-stdin \
  >"$OUT/berth-cli.log" 2>&1 || { cat "$OUT/berth-cli.log"; fail_setup "berth user add $USER_NAME"; }

env "${BERTH_ENV[@]}" "$BERTH_BIN" serve >"$LOG" 2>&1 &
BERTH_PID=$!
PORT=
for ((i = 0; i < 300; i++)); do
  PORT=$("$PY" - "$LOG" <<'EOF' 2>/dev/null || true
import json, sys
for line in open(sys.argv[1]):
    try:
        o = json.loads(line)
    except ValueError:
        continue
    if "berth ready" in (o.get("message"), o.get("fields", {}).get("message")):
        print(str(o.get("listen") or o.get("fields", {}).get("listen")).rsplit(":", 1)[1])
        break
EOF
)
  [[ -n $PORT ]] && break
  kill -0 "$BERTH_PID" 2>/dev/null || { tail -n 20 "$LOG"; fail_setup "berth serve exited"; }
  sleep 0.1
done
[[ -n $PORT ]] || { tail -n 20 "$LOG"; fail_setup "berth serve not ready after 30 s"; }
BASE=http://127.0.0.1:$PORT
echo ".. berth on $BASE (auth on), output in $OUT"

# ---------------------------------------------------------------------------
# The browser (skopeo always pushes to 127.0.0.1:PORT)

DOCS_ARGS=()
if [[ ${BERTH_BROWSER_DOCS:-0} == 1 ]]; then
  mkdir -p "$ROOT/docs"
  DOCS_ARGS=(--docs "$ROOT/docs")
  BASE=http://localhost:$PORT
fi

rc=0
BERTH_BROWSER_PASSWORD=$USER_PASSWORD SE_OFFLINE=true \
  "$PY" "$HERE/pages.py" --base "$BASE" --registry "127.0.0.1:$PORT" --user "$USER_NAME" --out "$OUT" "${DOCS_ARGS[@]}" || rc=$?

if grep -q '"level":"ERROR"' "$LOG"; then
  echo "FAIL berth serve logged errors:"
  grep '"level":"ERROR"' "$LOG" | tail -n 5
  ((rc == 0)) && rc=1
fi

ELAPSED=$(($(date +%s) - START))
if ((rc == 0)); then
  echo "PASS browser (${ELAPSED}s; screenshots in $OUT)"
else
  echo "FAIL browser (${ELAPSED}s; screenshots and logs in $OUT)"
fi
exit "$rc"
