#!/usr/bin/env bash
# Runs every SQL example of the documentation: each ```sql block of docs/*.md, in order, in psql
# against a fresh database of a throwaway cluster, as that database's owner (not a superuser: the
# managed install), after the page's setup (tests/docs/<page>.setup.sql, if any: the tables and
# roles the examples talk about). A block fenced ```sql must succeed; a block fenced
# ```sql fails must raise an error (it shows one). Other fences (```text, ```bash) are not run.
# Usage: bash scripts/doctest.sh [PORT]   (scripts/test.sh passes its client-test cluster's port;
# without one, a cluster is started on TENANCY_GOLDEN_PORT+6).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
if [ -n "${1:-}" ]; then
  port=$1
else
  port=$(( ${TENANCY_GOLDEN_PORT:-28817} + 6 )); dir="${TENANCY_TMP:-/tmp}/tenancy-doctest-${TENANCY_PG_MAJOR:-15}"
  cluster_start "$dir" "$port"; trap 'cluster_stop "$dir"' EXIT
fi
mkdir -p target/doctest
pages=0; blocks_total=0
for page in README.md docs/*.md; do
  name=$(basename "$page" .md); db="doc_$name"; script="target/doctest/$name.sql"
  # The psql script: each block between \echo markers; a "fails" block runs with ON_ERROR_STOP off
  # and must leave :ERROR true.
  blocks=$(python3 - "$page" "$script" <<'PY'
import re, sys
page, out = sys.argv[1], sys.argv[2]
text = open(page).read()
parts, n = [], 0
for m in re.finditer(r'^```sql( fails)?[ \t]*\n(.*?)^```[ \t]*$', text, flags=re.S | re.M):
    n += 1
    line = text.count('\n', 0, m.start()) + 1
    body = m.group(2)
    parts.append(f"\\echo 'doctest: {page}:{line}'\n")
    if m.group(1):
        parts.append("\\set ON_ERROR_STOP 0\n" + body + "\\set ON_ERROR_STOP 1\n"
                     f"\\if :ERROR\n\\else\n\\echo 'doctest FAILED: the block at {page}:{line} should fail and did not'\nSELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid());\n\\endif\n")
    else:
        parts.append(body)
open(out, 'w').write("\\set ON_ERROR_STOP 1\n\\pset pager off\n" + ''.join(parts))
print(n)
PY
)
  [ "$blocks" = 0 ] && continue
  PGOPTIONS="-c client_min_messages=warning" cluster_psql "$port" -q <<SQL >/dev/null
DROP DATABASE IF EXISTS "$db";
DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doc_owner') THEN CREATE ROLE doc_owner LOGIN CREATEROLE CREATEDB; END IF; END \$\$;
CREATE DATABASE "$db" OWNER doc_owner;
SQL
  setup="tests/docs/$name.setup.sql"
  if [ -f "$setup" ]; then
    cluster_psql "$port" -q -d "$db" -f "$setup" > "target/doctest/$name.setup.log" 2>&1 \
      || { echo "doctest $page: its setup failed"; tail -20 "target/doctest/$name.setup.log"; exit 1; }
  fi
  if PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$port" -U doc_owner -d "$db" -X \
       -v VERBOSITY=terse -f "$script" > "target/doctest/$name.log" 2>&1 \
     && ! grep -q '^doctest FAILED' "target/doctest/$name.log"; then
    echo "doctest $page ... ok ($blocks blocks)"
  else
    echo "doctest $page ... FAILED (after $(grep '^doctest: ' "target/doctest/$name.log" | tail -1 | cut -d' ' -f2))"
    tail -25 "target/doctest/$name.log"; exit 1
  fi
  pages=$((pages + 1)); blocks_total=$((blocks_total + blocks))
done
echo "doctest: $pages pages, $blocks_total SQL blocks run"
