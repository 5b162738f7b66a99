#!/usr/bin/env bash
# Runs every test of tenancy against real PostgreSQL servers:
#   1. in-database tests   (cargo pgrx test: #[pg_test] functions, each in a rolled-back transaction)
#   2. golden SQL tests    (tests/sql/*.sql in psql, compared with tests/expected/*.out)
#   3. client tests        (pgrx-tests/: real roles, real COMMITs, real connections)
#   4. seed conversions    (examples/seed_*.sql: a runbook's conversion done with tenancy, then
#                           its validation checklist as assertions)
#   5. documentation       (scripts/doctest.sh: every ```sql block of README.md and docs/*.md runs)
#   6. packages            (scripts/package-test.sh: the release .deb and tarball built, installed
#                           into the server, CREATE EXTENSION, upgrades from 0.1.0 and 0.2.0, smoke)
# This is the README's test command, and .ci/run runs exactly this.
#
# PostgreSQL 15 (Debian's) by default. TENANCY_PG=18 runs every layer on PostgreSQL 18 instead,
# built from Debian's source package by scripts/pgversions.sh (cached in /var/cache/tenancy);
# TENANCY_PG=all runs 15, 17 and 18.
set -euo pipefail
cd "$(dirname "$0")/.."

# TENANCY_PG_OPTIONAL=1: a major that cannot be built here (its source is not on the mirror) is
# reported as skipped instead of failing the run (.ci/run sets it for 17 and 18).
if [ "${TENANCY_PG:-15}" = all ]; then
  for v in 15 17 18; do TENANCY_PG=$v bash "$0"; done
  exit 0
fi
major="${TENANCY_PG:-15}"
if [ "$major" = 15 ]; then
  export PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
  offset=0
else
  if ! PG_VERSIONS="$major" bash scripts/pgversions.sh; then
    if [ "${TENANCY_PG_OPTIONAL:-0}" = 1 ]; then
      echo "== PostgreSQL $major: skipped: it could not be built here (scripts/pgversions.sh failed; see its output above)"
      exit 0
    fi
    echo "PostgreSQL $major could not be built (scripts/pgversions.sh)" >&2; exit 1
  fi
  export PG_CONFIG="${TENANCY_PG_CACHE:-/var/cache/tenancy}/pg$major/bin/pg_config"
  offset=$(( (major - 15) * 100 ))
fi
export PG_BIN="$("$PG_CONFIG" --bindir)"
# The client tools of the same major (psql, pg_dump) and pg_config for the tests.
export PATH="$PG_BIN:$PATH" TENANCY_PG_BIN="$PG_BIN" TENANCY_PG_CONFIG="$PG_CONFIG" TENANCY_PG_MAJOR="$major"
export TENANCY_GOLDEN_PORT=$(( ${TENANCY_GOLDEN_PORT:-28817} + offset ))
export TENANCY_TEST_PORT=$(( ${TENANCY_TEST_PORT:-28819} + offset ))
echo "== PostgreSQL $major ($("$PG_CONFIG" --version), $PG_CONFIG)"
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
echo "== module graph (scripts/modcycles.py: the modules of src/ depend on each other one way, no cycle)"
if ! modgraph=$(python3 scripts/modcycles.py src); then
  echo "$modgraph"; echo "modcycles: break the cycle (move the item that closes it to the module that owns its concern)"; exit 1
fi
echo "${modgraph##*$'\n'}"
# The checker itself: a cycle planted in a copy of src/ (errors, the lowest module, using the
# highest) must be found.
planted=$(mktemp -d)
cp src/*.rs "$planted/"
echo 'use crate::distribution as _planted;' >> "$planted/errors.rs"
if python3 scripts/modcycles.py "$planted" >/dev/null; then
  rm -rf "$planted"; echo "modcycles: a cycle planted in a copy of src/ (errors -> distribution) went unseen"; exit 1
fi
rm -rf "$planted"
echo "modcycles: a cycle planted in a copy of src/ is found"
echo "== error vocabulary (scripts/errors.py: src/errors.rs's conditions, the SQLSTATEs sql/*.sql raises, docs/errors.md agree)"
if ! errcheck=$(python3 scripts/errors.py); then
  echo "$errcheck"; echo "errors: raise through src/errors.rs's Error, and keep docs/errors.md's table to its conditions"; exit 1
fi
echo "$errcheck"
# The checker itself: a violation of each kind planted in a copy of the sources must be found.
python3 scripts/errors.py --self-check || exit 1
echo "== function length (scripts/longfns.py: no Rust or SQL function over 80 lines without a reason: in its leading comment)"
python3 scripts/longfns.py || exit 1
# The checker itself: a long function planted without a reason in a copy of the sources is found.
python3 scripts/longfns.py --self-check || exit 1
echo "== rustfmt (rustfmt.toml: 120 columns)"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check >/dev/null || { echo "rustfmt: run cargo fmt --all (cargo fmt --all --check shows the differences)"; exit 1; }
  echo "rustfmt: every file formatted"
else
  echo "rustfmt: skipped (cargo fmt is not installed: rustup component add rustfmt)"
fi
echo "== clippy (the extension with PostgreSQL $major's feature, and the client tests; warnings are errors)"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --quiet --workspace --all-targets --no-default-features --features "pg$major" -- -D warnings \
    || { echo "clippy: fix the warnings above (cargo clippy --workspace --all-targets -- -D warnings)"; exit 1; }
  echo "clippy: no warnings"
else
  echo "clippy: skipped (cargo clippy is not installed: rustup component add clippy)"
fi
cargo_version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
for v in $(python3 -c 'import json; m = json.load(open("META.json")); print(m["version"], *(p["version"] for p in m["provides"].values()))'); do
  [ "$v" = "$cargo_version" ] || { echo "META.json says version $v, Cargo.toml $cargo_version"; exit 1; }
done

# TENANCY_TMP (default /tmp) holds the throwaway clusters; TENANCY_SKIP_PGRX_TEST=1 skips layer 1
# (cargo pgrx test always uses port 32200+major, so two checkouts cannot run it at once).
tmp="${TENANCY_TMP:-/tmp}"
export TENANCY_TMP="$tmp"
# A full run needs ~10 GB (two cargo target trees, a release build, clusters of a few GB): say so
# at the start rather than fail with ENOSPC in the middle.
for d in "$tmp" .; do
  free_kb=$(df -Pk "$d" | awk 'NR == 2 { print $4 }')
  [ "$free_kb" -ge $(( 8 * 1024 * 1024 )) ] ||
    echo "WARNING: only $(( free_kb / 1024 )) MB free under $d; a full run needs about 10 GB"
done
echo "== in-database tests (cargo pgrx test)"
if [ "${TENANCY_SKIP_PGRX_TEST:-0}" = 1 ]; then
  echo "in-database tests: skipped (TENANCY_SKIP_PGRX_TEST=1)"
elif [ "$(id -u)" = 0 ]; then
  # initdb refuses root: the test cluster runs as "postgres".
  cargo pgrx test "pg$major" --runas postgres --pgdata "$tmp/tenancy-pgrx-test-data-$major"
else
  cargo pgrx test "pg$major"
fi

# cargo pgrx test installed its own build (with the test functions); put the real one back.
bash scripts/setup.sh

echo "== golden SQL tests"
bash scripts/golden.sh

echo "== client tests"
source scripts/cluster.sh
port="$TENANCY_TEST_PORT"
cluster_start "$tmp/tenancy-client-tests-$major" "$port"
# The client tests' cluster grows to a few GB: removed afterwards unless TENANCY_KEEP_CLUSTERS=1.
trap 'cluster_stop "$tmp/tenancy-client-tests-$major"; [ "${TENANCY_KEEP_CLUSTERS:-0}" = 1 ] || rm -rf "$tmp/tenancy-client-tests-$major"' EXIT
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

echo "== documentation (scripts/doctest.sh: every SQL example of README.md and docs/*.md, as written)"
bash scripts/doctest.sh "$port"

echo "== packages (scripts/package-test.sh: the .deb / tarball installed, CREATE EXTENSION, upgrades, smoke test)"
bash scripts/package-test.sh "$major"
