#!/usr/bin/env bash
# Starts what the test suite needs and exports where to find it (source it):
#   docker-registry, htpasswd  installed if missing (berth-upstream's tests run against Distribution)
#   BERTH_TEST_POSTGRES_URL  the local PostgreSQL (started if stopped)
#   BERTH_TEST_S3_ENDPOINT   an S3-compatible server (moto, from PyPI) on a free loopback port
#   BERTH_TEST_S3_BUCKET     a bucket created in it
# The S3 server is stopped when the sourcing shell exits.

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
export BERTH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/test"

# Debian's docker-registry (Distribution 2.8) and htpasswd: berth-upstream's
# client tests run against it (they print "NOT RUN" without it), and so does
# the benchmark.
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry apache2-utils >/dev/null ||
        echo "warning: could not install docker-registry: berth-upstream's Distribution tests will say NOT RUN"
fi

if ! command -v moto_server >/dev/null 2>&1; then
    pip install --quiet --disable-pip-version-check 'moto[server]'
fi
moto_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_log=$(mktemp -t berth-moto.XXXXXX.log)
moto_server -H 127.0.0.1 -p "$moto_port" >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$moto_port/" && break
    sleep 0.2
done
export BERTH_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"
export BERTH_TEST_S3_BUCKET="berth-test"
curl -sf -X PUT -o /dev/null "$BERTH_TEST_S3_ENDPOINT/$BERTH_TEST_S3_BUCKET"
echo "services: Postgres at $BERTH_TEST_POSTGRES_URL, S3 (moto) at $BERTH_TEST_S3_ENDPOINT bucket $BERTH_TEST_S3_BUCKET"
