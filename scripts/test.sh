#!/usr/bin/env bash
# Runs every test of tenancy against real PostgreSQL servers:
#   1. in-database tests   (cargo pgrx test: #[pg_test] functions, each in a rolled-back transaction)
#   2. golden SQL tests    (tests/sql/*.sql in psql, compared with tests/expected/*.out)
#   3. client tests        (pgrx-tests/: real roles, real COMMITs, real connections)
#   4. seed conversions    (examples/seed_*.sql: a runbook's conversion done with tenancy, then
#                           its validation checklist as assertions)
# This is the README's test command, and .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== in-database tests (cargo pgrx test)"
if [ "$(id -u)" = 0 ]; then
  # initdb refuses root: the test cluster runs as "postgres".
  cargo pgrx test pg15 --runas postgres --pgdata /tmp/tenancy-pgrx-test-data
else
  cargo pgrx test pg15
fi

# cargo pgrx test installed its own build (with the test functions); put the real one back.
bash scripts/setup.sh

echo "== golden SQL tests"
bash scripts/golden.sh

echo "== client tests"
source scripts/cluster.sh
port="${TENANCY_TEST_PORT:-28819}"
cluster_start /tmp/tenancy-client-tests "$port"
trap 'cluster_stop /tmp/tenancy-client-tests' EXIT
TENANCY_TEST_PORT="$port" cargo test -p tenancy-client-tests --test '*' -- --test-threads=2 --nocapture

echo "== seed conversions (examples/seed_*.sql: each ends with its runbook's checklist as assertions)"
mkdir -p target/seeds
for f in examples/seed_*.sql; do
  db=$(basename "$f" .sql)
  cluster_psql "$port" -q -c "DROP DATABASE IF EXISTS \"$db\"" -c "CREATE DATABASE \"$db\"" >/dev/null
  if cluster_psql "$port" -d "$db" -f "$f" > "target/seeds/$db.log" 2>&1 \
     && grep -q 'checklist: every item passed' "target/seeds/$db.log"; then
    echo "seed $db ... ok ($(grep -o 'checklist: [0-9]* composite indexes[^"]*' "target/seeds/$db.log" | head -1))"
  else
    echo "seed $db ... FAILED"; tail -30 "target/seeds/$db.log"; exit 1
  fi
done
