# Source this file to start a throwaway PostgreSQL server for the tests that run against one
# (the feedback store, export and the load test): `source .ci/postgres.sh`. It installs the
# Debian package when missing, starts a fresh cluster on a free 127.0.0.1 port as the
# `postgres` user, exports its URL as CLOSEDLOOP_TEST_POSTGRES_URL (the tests read it) and
# stops the server when the sourcing shell exits. Needs root (CI runs as root); elsewhere it
# says why it did nothing, and the PostgreSQL tests skip with that reason.
closedloop_start_postgres() {
  if [ "$(id -u)" != 0 ]; then
    echo "postgres: not root, no throwaway server; the PostgreSQL tests will skip" >&2
    return 0
  fi
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "postgres: installing the Debian package postgresql" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin port
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  CLOSEDLOOP_PG_DIR=$(mktemp -d /tmp/closedloop-pg.XXXXXX)
  chown postgres "$CLOSEDLOOP_PG_DIR"
  runuser -u postgres -- "$bin/initdb" -D "$CLOSEDLOOP_PG_DIR/data" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$CLOSEDLOOP_PG_DIR/data" -l "$CLOSEDLOOP_PG_DIR/log" -w \
    -o "-k /tmp -p $port -h 127.0.0.1 -c max_connections=200" start >/dev/null
  CLOSEDLOOP_PG_BIN=$bin
  trap closedloop_stop_postgres EXIT
  export CLOSEDLOOP_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  echo "postgres: $("$bin/postgres" --version) on 127.0.0.1:$port (CLOSEDLOOP_TEST_POSTGRES_URL)" >&2
}

closedloop_stop_postgres() {
  if [ -n "${CLOSEDLOOP_PG_DIR:-}" ]; then
    runuser -u postgres -- "$CLOSEDLOOP_PG_BIN/pg_ctl" -D "$CLOSEDLOOP_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$CLOSEDLOOP_PG_DIR"
  fi
}

closedloop_start_postgres
