#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for the demo, the tests and the benchmark.
# Source it, then: cluster_start DIR PORT; cluster_psql PORT [psql args]; cluster_stop DIR.
# Postgres refuses to run as root: as root, the cluster runs as the "postgres" user.
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() { # DIR PORT [extra postgresql.conf lines...]
  local dir="$1" port="$2"; shift 2
  cluster_stop "$dir" 2>/dev/null || true
  rm -rf "$dir"; mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "fsync = off"
    echo "max_connections = 200"
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  # Rust panics carry backtraces into error DETAILs when RUST_BACKTRACE is set: keep errors clean.
  as_pg env RUST_BACKTRACE=0 "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null \
    || { cat "$dir/server.log"; return 1; }
}

cluster_stop() { # DIR
  [ -d "$1/data" ] && as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1
  return 0
}

cluster_psql() { # PORT [psql args...]
  local port="$1"; shift
  psql -h 127.0.0.1 -p "$port" -U postgres -X -v ON_ERROR_STOP=1 "$@"
}
