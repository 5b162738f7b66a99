#!/usr/bin/env bash
# The demo: installs what is missing, starts a throwaway Postgres cluster, installs tenancy as
# a database owner who is not superuser, converts a small single-tenant app, and shows it.
# TENANCY_DEMO_KEEP=1 leaves the cluster running (psql -h 127.0.0.1 -p 28816 -U tracehub tracehub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/cluster.sh
dir=/tmp/tenancy-demo; port="${TENANCY_DEMO_PORT:-28816}"
cluster_start "$dir" "$port"
[ "${TENANCY_DEMO_KEEP:-0}" = 1 ] || trap 'cluster_stop "$dir"' EXIT
cluster_psql "$port" -q -c "CREATE ROLE tracehub LOGIN" -c "CREATE DATABASE tracehub OWNER tracehub" \
  -c "CREATE ROLE tracehub_app" -c "GRANT tracehub_app TO tracehub"
psql -h 127.0.0.1 -p "$port" -U tracehub -d tracehub -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION tenancy"
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$port" -U tracehub -d tracehub -X -f examples/demo.sql
echo "demo: done"
