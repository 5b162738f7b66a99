#!/usr/bin/env bash
# Installs what tenancy needs on Debian 12 and builds + installs the extension.
# Idempotent: skips whatever is already there. Works as root or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"

packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo pgbouncer)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is missing; install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
if ! cargo pgrx --version 2>/dev/null | grep -q ' 0\.18\.1'; then
  echo "setup: installing cargo-pgrx 0.18.1 (about 10 minutes on 2 cores)"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
fi

# The extension goes into the system Postgres (pg_config --pkglibdir / --sharedir).
profile_flag=()
[ "${TENANCY_RELEASE:-0}" = 1 ] && profile_flag=(--release)
if [ -w "$("$PG_CONFIG" --pkglibdir)" ] && [ -w "$("$PG_CONFIG" --sharedir)/extension" ]; then
  cargo pgrx install --pg-config "$PG_CONFIG" "${profile_flag[@]}" >/dev/null
else
  cargo pgrx install --pg-config "$PG_CONFIG" "${profile_flag[@]}" --sudo >/dev/null
fi
# Earlier versions' install scripts and the upgrade scripts (ALTER EXTENSION tenancy UPDATE).
ext_dir="$("$PG_CONFIG" --sharedir)/extension"
if [ -w "$ext_dir" ]; then
  cp sql/versions/tenancy--*.sql "$ext_dir/"
else
  sudo cp sql/versions/tenancy--*.sql "$ext_dir/"
fi
echo "setup: tenancy $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2) installed into $("$PG_CONFIG" --sharedir)/extension"
