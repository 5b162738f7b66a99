#!/usr/bin/env bash
# Golden SQL tests: what a DBA types in psql. Each tests/sql/NAME.sql runs in a fresh database
# of a throwaway cluster; its output must equal tests/expected/NAME.out.
# TENANCY_BLESS=1 rewrites the expected files from the actual output.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
port="${TENANCY_GOLDEN_PORT:-28817}"
major="${TENANCY_PG_MAJOR:-15}"
dir="${TENANCY_TMP:-/tmp}/tenancy-golden-$major"
cluster_start "$dir" "$port" || exit 1
trap 'cluster_stop "$dir"' EXIT
mkdir -p target/golden
passed=0; failed=0
for f in tests/sql/*.sql; do
  name=$(basename "$f" .sql)
  db="golden_${name}"
  PGOPTIONS="-c client_min_messages=warning" cluster_psql "$port" -q -c "DROP DATABASE IF EXISTS \"$db\"" -c "CREATE DATABASE \"$db\"" >/dev/null
  # -a echoes the statements; errors are part of the expected output (ON_ERROR_STOP off).
  PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$port" -U postgres -d "$db" -X -a -q \
    -v VERBOSITY=default -f "$f" > "target/golden/$name.out" 2>&1
  # Output that legitimately differs on another major lives in tests/expected/pgNN/NAME.out.
  expected="tests/expected/$name.out"
  [ -f "tests/expected/pg$major/$name.out" ] && expected="tests/expected/pg$major/$name.out"
  if [ "${TENANCY_BLESS:-0}" = 1 ]; then cp "target/golden/$name.out" "$expected"; fi
  if diff -u "$expected" "target/golden/$name.out" > "target/golden/$name.diff"; then
    echo "golden $name ... ok"; passed=$((passed+1))
  else
    echo "golden $name ... FAILED"; cat "target/golden/$name.diff"; failed=$((failed+1))
  fi
done
echo "golden: $passed passed, $failed failed"
[ "$failed" = 0 ]
