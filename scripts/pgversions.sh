#!/usr/bin/env bash
# Builds the PostgreSQL majors of the version matrix that Debian 12 does not ship, from Debian
# source packages, into cached prefixes, and registers them with cargo pgrx (keeping pg15):
#   PostgreSQL 17: source package postgresql-17 of suite trixie -> /var/cache/tenancy/pg17
#   PostgreSQL 18: source package postgresql-18 of suite sid    -> /var/cache/tenancy/pg18
# Idempotent: a version whose <prefix>/bin/pg_config exists is not built again, and cargo pgrx init
# runs only when ~/.pgrx/config.toml lacks one of them. Needs root (apt-get, the cache directory);
# the prefixes are world-readable so that test clusters can run as "postgres".
#
# The build is upstream PostgreSQL as Debian ships it (the .orig tarball), without the Debian
# patches: those move pkglibdir to /usr/lib/postgresql/<major>/lib and the socket directory to
# /var/run/postgresql, which would take the build out of its prefix.
#
# Environment: PG_VERSIONS (default "17 18"), TENANCY_PG_CACHE (default /var/cache/tenancy),
# JOBS (make -j, default 2). Builds run under nice -n 19.
# Usage afterwards: cargo pgrx test pg17 --runas postgres --pgdata /tmp/tenancy-pgrx-test-17
set -euo pipefail

CACHE="${TENANCY_PG_CACHE:-/var/cache/tenancy}"
VERSIONS="${PG_VERSIONS:-17 18}"
JOBS="${JOBS:-2}"
SRC_LIST=/etc/apt/sources.list.d/tenancy-src.list
PG15_DEFAULT=/usr/lib/postgresql/15/bin/pg_config
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"

say() { echo "pgversions: $*"; }
run() { echo "pgversions: \$ $*"; "$@"; }
die() { echo "pgversions: error: $*" >&2; exit 1; }

suite_of() {
  case "$1" in
    17) echo trixie ;;
    18) echo sid ;;
    *) die "no Debian suite known for PostgreSQL $1 (known: 17 trixie, 18 sid)" ;;
  esac
}

# --- 1. which versions need building ---------------------------------------------------------
to_build=()
failed=()
for v in $VERSIONS; do
  suite_of "$v" >/dev/null
  if [ -x "$CACHE/pg$v/bin/pg_config" ]; then
    say "PostgreSQL $v: $CACHE/pg$v/bin/pg_config exists ($("$CACHE/pg$v/bin/pg_config" --version)), not building"
  else
    to_build+=("$v")
  fi
done

if [ "${#to_build[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "building needs root (apt-get, $CACHE); run: sudo $0"

  # --- 2. build dependencies (all from Debian 12) ----------------------------------------------
  deps=(build-essential dpkg-dev pkg-config bison flex perl libreadline-dev zlib1g-dev libssl-dev)
  missing=()
  for p in "${deps[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "build dependencies present: ${deps[*]}"
  fi

  # --- 3. deb-src entries, on the Debian mirror this machine already uses ----------------------
  mirror="$(grep -h -s -E '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    | grep -o -E 'https?://[^][ ]+' | sed 's:/*$::' | grep -E '/debian$' | head -n1 || true)"
  [ -n "$mirror" ] || die "found no Debian archive (a URI ending in /debian) in /etc/apt/sources.list*"
  want="# Written by tenancy scripts/pgversions.sh: source packages only, for building PostgreSQL."
  suites=()
  for v in $VERSIONS; do
    s="$(suite_of "$v")"
    [[ " ${suites[*]-} " == *" $s "* ]] || suites+=("$s")
  done
  for s in "${suites[@]}"; do
    want+=$'\n'"deb-src $mirror $s main"
  done
  if [ "$(cat "$SRC_LIST" 2>/dev/null)" != "$want" ]; then
    say "writing $SRC_LIST (mirror $mirror, suites ${suites[*]})"
    printf '%s\n' "$want" >"$SRC_LIST"
  fi
  # Refresh only this file's indexes; the machine's other lists are left as they are.
  run apt-get update -qq -o Dir::Etc::sourcelist="$SRC_LIST" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0

  umask 022
  mkdir -p "$CACHE/src" "$CACHE/build"
  # build_one MAJOR: download, unpack, build and install one version; non-zero if that failed.
  # (Called in an || list, where set -e does not apply: every step checks its own status.)
  build_one() {
    local v="$1" s prefix srcdir builddir log start dsc
    s="$(suite_of "$v")"
    prefix="$CACHE/pg$v"
    srcdir="$CACHE/src/pg$v"
    builddir="$CACHE/build/pg$v"
    log="$CACHE/build/pg$v.log"
    start=$SECONDS

    # --- 4. source package ---------------------------------------------------------------------
    mkdir -p "$srcdir"
    if ! ls "$srcdir"/postgresql-"$v"_*.dsc >/dev/null 2>&1; then
      say "PostgreSQL $v: downloading source package postgresql-$v/$s into $srcdir"
      if ! (cd "$srcdir" && run apt-get source -qq --download-only "postgresql-$v/$s"); then
        echo "pgversions: error: PostgreSQL $v: apt-get source postgresql-$v/$s failed (see above)" >&2
        return 1
      fi
    fi
    dsc="$(ls "$srcdir"/postgresql-"$v"_*.dsc | sort -V | tail -n1)"
    say "PostgreSQL $v: unpacking $(basename "$dsc") (upstream source, Debian patches not applied)"
    rm -rf "$builddir"
    run dpkg-source --no-copy --skip-patches -x "$dsc" "$builddir" >/dev/null || return 1

    # --- 5. configure, make, make install --------------------------------------------------------
    say "PostgreSQL $v: building into $prefix (log: $log)"
    : >"$log"
    (
      cd "$builddir" &&
        run nice -n 19 ./configure --prefix="$prefix" --without-icu --with-openssl >>"$log" 2>&1 &&
        run nice -n 19 make -j"$JOBS" >>"$log" 2>&1 &&
        run nice -n 19 make install >>"$log" 2>&1
    ) || { tail -n 40 "$log" >&2; echo "pgversions: error: PostgreSQL $v: build failed, log in $log" >&2; return 1; }
    run chmod -R a+rX "$prefix" || return 1
    say "PostgreSQL $v: built in $((SECONDS - start)) s: $("$prefix/bin/pg_config" --version)"
    rm -rf "$builddir"
  }
  for v in "${to_build[@]}"; do
    build_one "$v" || failed+=("$v")
  done
fi

# --- 6. cargo pgrx init, keeping pg15 --------------------------------------------------------
finish() {
  if [ "${#failed[@]}" -gt 0 ]; then
    die "not built: PostgreSQL ${failed[*]} (see above)"
  fi
  exit 0
}
if ! cargo pgrx --version >/dev/null 2>&1; then
  say "cargo pgrx is not installed yet: skipping cargo pgrx init (run scripts/setup.sh, then this again)"
  finish
fi
toml_value() { # toml_value KEY: the string value of KEY in $PGRX_CONFIG, if any
  sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"?([^\"]*)\"?[[:space:]]*$/\1/p" "$PGRX_CONFIG" 2>/dev/null | head -n1
}
init_args=()
need_init=0
have=()
for v in $VERSIONS; do
  pg_config="$CACHE/pg$v/bin/pg_config"
  [ -x "$pg_config" ] || continue
  have+=("pg$v")
  init_args+=(--pg"$v" "$pg_config")
  [ "$(toml_value "pg$v")" = "$pg_config" ] || need_init=1
done
if [ "${#have[@]}" = 0 ]; then
  finish
elif [ "$need_init" = 0 ]; then
  say "$PGRX_CONFIG already has ${have[*]}: not running cargo pgrx init"
  finish
fi
pg15="$(toml_value pg15)"
if [ -z "$pg15" ]; then
  [ -x "$PG15_DEFAULT" ] || die "$PGRX_CONFIG has no pg15 and $PG15_DEFAULT is missing: run scripts/setup.sh first"
  pg15="$PG15_DEFAULT"
fi
# cargo pgrx init rewrites the ports with its defaults unless they are given again.
for key in base_port base_testing_port; do
  value="$(toml_value "$key")"
  [ -z "$value" ] || init_args+=(--"${key//_/-}" "$value")
done
run cargo pgrx init --pg15 "$pg15" "${init_args[@]}"
say "$PGRX_CONFIG now:"
cat "$PGRX_CONFIG"
finish
