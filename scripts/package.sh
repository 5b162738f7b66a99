#!/usr/bin/env bash
# Builds the release artifacts of tenancy for one PostgreSQL major (default 15):
#   target/packages/postgresql-<major>-tenancy_<version>_<arch>.deb
#       Debian's layout (/usr/lib/postgresql/<major>/lib, /usr/share/postgresql/<major>/extension),
#       every install and upgrade script, Depends: postgresql-<major>
#   target/packages/tenancy-<version>-pg<major>-<arch>.tar.gz
#       lib/tenancy.so, extension/*, install.sh (copies into pg_config's --pkglibdir and
#       --sharedir/extension of the pg_config in PATH, or $PG_CONFIG)
# Usage: bash scripts/package.sh [major]     (17 and 18: the servers scripts/pgversions.sh builds)
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:-${TENANCY_PG:-15}}"
if [ "$major" = 15 ]; then
  pg_config="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
else
  pg_config="${TENANCY_PG_CACHE:-/var/cache/tenancy}/pg$major/bin/pg_config"
fi
[ -x "$pg_config" ] || { echo "package: no pg_config for PostgreSQL $major at $pg_config" >&2; exit 1; }
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
arch=$(dpkg --print-architecture)
out=target/packages; stage="$out/stage-pg$major"
rm -rf "$stage"; mkdir -p "$out" "$stage"

echo "package: building tenancy $version for PostgreSQL $major (release)"
cargo pgrx package --pg-config "$pg_config" --out-dir "$stage/pgrx" >"$stage/build.log" 2>&1 \
  || { tail -30 "$stage/build.log"; exit 1; }
so=$(find "$stage/pgrx" -name tenancy.so | head -1)
ext=$(dirname "$(find "$stage/pgrx" -name tenancy.control | head -1)")
[ -f "$so" ] && [ -f "$ext/tenancy--$version.sql" ] || { echo "package: pgrx produced no tenancy.so / install script" >&2; exit 1; }

files() { # DEST_LIB DEST_EXT
  install -D -m 0755 "$so" "$1/tenancy.so"
  install -D -m 0644 "$ext/tenancy.control" "$2/tenancy.control"
  install -m 0644 "$ext/tenancy--$version.sql" "$2/"
  # Earlier releases' install scripts and every upgrade script (ALTER EXTENSION tenancy UPDATE).
  install -m 0644 sql/versions/tenancy--*.sql "$2/"
}

# The Debian package.
deb="$stage/deb"; pkg="postgresql-$major-tenancy"
files "$deb/usr/lib/postgresql/$major/lib" "$deb/usr/share/postgresql/$major/extension"
install -D -m 0644 README.md "$deb/usr/share/doc/$pkg/README.md"
cat > "$deb/usr/share/doc/$pkg/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tenancy
License: $(grep -m1 '^license' Cargo.toml | cut -d'"' -f2 || echo 'see README.md')
COPY
mkdir -p "$deb/DEBIAN"
cat > "$deb/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Section: database
Priority: optional
Architecture: $arch
Depends: postgresql-$major, libc6 (>= 2.34), libgcc-s1
Installed-Size: $(du -sk "$deb/usr" | cut -f1)
Maintainer: tenancy developers <tenancy@localhost>
Description: multi-tenancy for an existing PostgreSQL $major database
 tenancy turns a single-tenant PostgreSQL database into a multi-tenant one from
 inside the database (organizations, memberships, an online backfill, a linter)
 and isolates every tenant's rows with Row-Level Security. A trusted extension:
 a database owner runs CREATE EXTENSION tenancy.
CONTROL
debfile="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$deb" "$debfile" >/dev/null
echo "package: $debfile"

# The tarball.
tb="$stage/tenancy-$version-pg$major-$arch"
files "$tb/lib" "$tb/extension"
install -m 0644 README.md "$tb/README.md"
cat > "$tb/install.sh" <<'INSTALL'
#!/bin/sh
# Installs tenancy into the PostgreSQL whose pg_config is $PG_CONFIG (default: pg_config in PATH).
set -eu
cd "$(dirname "$0")"
PG_CONFIG="${PG_CONFIG:-pg_config}"
libdir=$("$PG_CONFIG" --pkglibdir); extdir="$("$PG_CONFIG" --sharedir)/extension"
want=$(sed -n 's/^PGMAJOR=//p' lib/.pgmajor)
have=$("$PG_CONFIG" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
[ "$want" = "$have" ] || { echo "install.sh: built for PostgreSQL $want, $PG_CONFIG is PostgreSQL $have" >&2; exit 1; }
install -m 0755 lib/tenancy.so "$libdir/tenancy.so"
install -m 0644 extension/* "$extdir/"
echo "tenancy installed into $libdir and $extdir"
INSTALL
chmod 0755 "$tb/install.sh"
echo "PGMAJOR=$major" > "$tb/lib/.pgmajor"
tarfile="$out/tenancy-$version-pg$major-$arch.tar.gz"
tar -C "$stage" --owner=0 --group=0 -czf "$tarfile" "$(basename "$tb")"
echo "package: $tarfile"
