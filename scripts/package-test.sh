#!/usr/bin/env bash
# Builds (scripts/package.sh) and tests the release artifacts for one PostgreSQL major on this
# machine's real server:
#   15: the .deb is installed with dpkg -i into Debian's postgresql-15 (when PG_CONFIG is Debian's:
#       a private copy of the server gets the tarball, as below);
#   17, 18: Debian 12 has no postgresql-17/18 binary packages for the .deb to depend on, so the
#       .deb's layout and control file are checked, and the tarball's install.sh installs into the
#       server scripts/pgversions.sh built.
# Then, in a throwaway cluster of that server: a trusted CREATE EXTENSION by a non-superuser
# database owner and tests/package/smoke.sql; CREATE EXTENSION VERSION '0.1.0' and '0.2.0', each
# followed by ALTER EXTENSION UPDATE to the current version and the same smoke test. At the end the
# package is removed and the development build put back (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:-${TENANCY_PG:-15}}"
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
arch=$(dpkg --print-architecture)
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if [ "$major" = 15 ]; then
  pg_config="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
else
  pg_config="${TENANCY_PG_CACHE:-/var/cache/tenancy}/pg$major/bin/pg_config"
fi
export PG_BIN="$("$pg_config" --bindir)"
bash scripts/package.sh "$major"
deb="target/packages/postgresql-$major-tenancy_${version}_${arch}.deb"
tarball="target/packages/tenancy-$version-pg$major-$arch.tar.gz"

restore() {
  if dpkg -s "postgresql-$major-tenancy" >/dev/null 2>&1 && [ "${debian_server:-0}" = 1 ]; then
    $SUDO dpkg -r "postgresql-$major-tenancy" >/dev/null 2>&1
  fi
  PG_CONFIG="$pg_config" bash scripts/setup.sh >/dev/null 2>&1
}

# What the .deb holds, whichever server it can be installed into.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in "./usr/lib/postgresql/$major/lib/tenancy.so" "./usr/share/postgresql/$major/extension/tenancy.control" \
         "./usr/share/postgresql/$major/extension/tenancy--$version.sql"; do
  grep -qx "$f" <<<"$contents" || { echo "package: $deb lacks $f"; exit 1; }
done
for f in sql/versions/tenancy--*.sql; do
  grep -qx "./usr/share/postgresql/$major/extension/$(basename "$f")" <<<"$contents" \
    || { echo "package: $deb lacks $(basename "$f")"; exit 1; }
done
[ "$(dpkg-deb -f "$deb" Package)" = "postgresql-$major-tenancy" ] || { echo "package: wrong Package field"; exit 1; }
dpkg-deb -f "$deb" Depends | grep -q "postgresql-$major" || { echo "package: Depends lacks postgresql-$major"; exit 1; }
echo "package: $(basename "$deb"): $(grep -c . <<<"$contents") entries, Depends: $(dpkg-deb -f "$deb" Depends)"

trap restore EXIT
debian_server=0
[ "$pg_config" = "/usr/lib/postgresql/$major/bin/pg_config" ] && dpkg -s "postgresql-$major" >/dev/null 2>&1 && debian_server=1
if [ "$debian_server" = 1 ]; then
  $SUDO dpkg -i "$deb" >"$(dirname "$deb")/dpkg-install.log" 2>&1 || { cat "$(dirname "$deb")/dpkg-install.log"; exit 1; }
  dpkg -L "postgresql-$major-tenancy" | grep -qx "/usr/lib/postgresql/$major/lib/tenancy.so"
  echo "package: dpkg -i $(basename "$deb"): installed ($(dpkg-query -W -f '${Package} ${Version} ${Status}' "postgresql-$major-tenancy"))"
else
  t=$(mktemp -d); tar -C "$t" -xzf "$tarball"
  $SUDO env PG_CONFIG="$pg_config" sh "$t"/tenancy-*/install.sh
  rm -rf "$t"
  echo "package: $(basename "$tarball"): install.sh installed it into $("$pg_config" --pkglibdir)"
fi
cmp -s "$("$pg_config" --pkglibdir)/tenancy.so" <(tar -xzOf "$tarball" "tenancy-$version-pg$major-$arch/lib/tenancy.so") \
  || { echo "package: the installed tenancy.so is not the packaged one"; exit 1; }

source scripts/cluster.sh
dir="${TENANCY_TMP:-/tmp}/tenancy-package-$major"; port=$(( ${TENANCY_TEST_PORT:-28819} + 7 ))
cluster_start "$dir" "$port"
trap 'cluster_stop "$dir"; restore' EXIT
cluster_psql "$port" -q <<'SQL'
CREATE ROLE smoke_owner LOGIN;
CREATE ROLE smoke_app;
GRANT smoke_app TO smoke_owner;
CREATE DATABASE smoke OWNER smoke_owner;
CREATE DATABASE chain_010;
CREATE DATABASE chain_020;
SQL
smoke() { # DB USER
  local out
  out=$(psql -h 127.0.0.1 -p "$port" -U "$2" -d "$1" -X -q -f tests/package/smoke.sql 2>&1) || { echo "$out"; return 1; }
  grep -q '^smoke: ok' <<<"$out" || { echo "$out"; return 1; }
  echo "package smoke ($1, as $2): $(grep '^smoke:' <<<"$out")"
}
smoke smoke smoke_owner
for from in 0.1.0 0.2.0; do
  db="chain_${from//./}"
  cluster_psql "$port" -q -d "$db" -c "CREATE EXTENSION tenancy VERSION '$from'" -c "ALTER EXTENSION tenancy UPDATE"
  got=$(cluster_psql "$port" -d "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'")
  [ "$got" = "$version" ] || { echo "package: $from -> UPDATE gave $got, not $version"; exit 1; }
  echo "package upgrade: CREATE EXTENSION tenancy VERSION '$from'; ALTER EXTENSION tenancy UPDATE -> $got"
  smoke "$db" postgres
done
echo "package test (PostgreSQL $major): ok"
