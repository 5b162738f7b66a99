#!/usr/bin/env bash
# Regenerates the drafted part of sql/versions/tenancy--0.2.0--0.3.0.sql after a change to the
# extension's SQL or functions: builds and installs the extension (scripts/setup.sh, into
# $PG_CONFIG's PostgreSQL), then rewrites the script as
#   its first lines up to the drafted part (kept: the upgrade guard, then what the drafted
#   functions need first, written by hand: new types their arguments use, views that depend on
#   functions dropped there),
#   scripts/draft-upgrade.py's draft from 0.2.0's install script to the freshly generated 0.3.0 one,
#   the hand-written section from the line "-- Everything else 0.3.0 changed" on (kept).
# The upgrade test (pgrx-tests/tests/upgrade.rs) then checks that the result equals a fresh install.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG
bash scripts/setup.sh >/dev/null 2>&1
up=sql/versions/tenancy--0.2.0--0.3.0.sql
new="$("$PG_CONFIG" --sharedir)/extension/tenancy--0.3.0.sql"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# 0.2.0 as pgrx generated it: the shipped file without the install guard in front.
tail -c +"$(( $(wc -c < sql/guard.sql) + 1 ))" sql/versions/tenancy--0.2.0.sql > "$tmp/old.sql"
draft_start=$(grep -n '^-- Functions and procedures (drafted by scripts/draft-upgrade.py' "$up" | head -1 | cut -d: -f1)
manual=$(grep -n '^-- Everything else 0.3.0 changed' "$up" | cut -d: -f1)
{
  head -n "$((draft_start - 1))" "$up"
  python3 scripts/draft-upgrade.py "$tmp/old.sql" "$new"
  echo
  echo '----------------------------------------------------------------------------------------------'
  tail -n +"$manual" "$up"
} > "$tmp/up.sql"
mv "$tmp/up.sql" "$up"
# Install the new upgrade script too (setup.sh above copied the old one).
ext_dir="$("$PG_CONFIG" --sharedir)/extension"
if [ -w "$ext_dir" ]; then cp "$up" "$ext_dir/"; else sudo cp "$up" "$ext_dir/"; fi
echo "regen-upgrade: $up rewritten ($(wc -l < "$up") lines); run the upgrade test to check it"
