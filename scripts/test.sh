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

echo "== guards: every shipped install script starts with sql/guard.sql, every upgrade script with sql/upgrade-guard.sql"
guard_checks=0
for f in sql/versions/tenancy--*.sql; do
  case "$(basename "$f")" in
    # an upgrade script: the guard follows the \echo line and one blank line
    tenancy--*--*.sql) g=sql/upgrade-guard.sql; from=$(( $(grep -n '^\\echo ' "$f" | head -1 | cut -d: -f1) + 2 )) ;;
    *) g=sql/guard.sql; from=1 ;;
  esac
  if ! cmp -s -n "$(wc -c < "$g")" <(tail -n "+$from" "$f") "$g"; then
    echo "guard missing or changed at the top of $f (expected the text of $g)"; exit 1
  fi
  guard_checks=$((guard_checks + 1))
done
echo "guards: $guard_checks scripts checked"

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
