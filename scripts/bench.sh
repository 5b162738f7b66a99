#!/usr/bin/env bash
# The benchmark suite (issue 6). Builds its own data set on a throwaway cluster and prints, as
# ratios measured side by side in the same run (the variants alternate round by round; medians):
#   1. policy overhead   tenancy's context and membership policies, and two hand-written policies
#                        from the guides, vs no RLS and a hand-written WHERE organization_id = ...
#   2. backfill          tenancy.backfill vs ALTER TABLE + one UPDATE, and the latency of a
#                        concurrent writer: one organization for every row (the metadata-only
#                        path), and the organization derived from a parent row (the batched fill)
#   3. integrity         validate_client_data_integrity() vs the hand-written queries
#   4. function cost     get_user_organization_id / validate_client_access vs plain SQL functions
#   5. lifecycle         erase_organization vs hand-written DELETEs in foreign-key order,
#                        export_organization vs COPY (SELECT ...) per table, organization_usage()
#                        vs a hand-written GROUP BY per table
# then writes the figures to BENCHMARKS.md.
#
#   bash scripts/bench.sh            # 1,000 organizations, 10,000 users, 5M rows (< 30 min on 2 cores)
#   bash scripts/bench.sh --quick    # 100 organizations, 1,000 users, 200k rows (a few minutes)
#   bash scripts/bench.sh --lifecycle [--quick]   # part 5 alone, printed (BENCHMARKS.md untouched)
#   bash scripts/bench.sh --backfill [--quick]    # part 2 alone, printed (BENCHMARKS.md untouched)
#   bash scripts/bench.sh --policy [--quick]      # part 1 alone, printed (BENCHMARKS.md untouched)
#
# It uses the tenancy installed in the system PostgreSQL 15 (scripts/setup.sh installs it) and
# needs only psql, pgbench (both come with postgresql-15) and awk. Environment:
# TENANCY_BENCH_PORT (28840), TENANCY_BENCH_DIR (/tmp/tn-bench; the copy of PostgreSQL goes to
# <dir>-pg), TENANCY_BENCH_OUT (BENCHMARKS.md), TENANCY_BENCH_MAX_WAL_SIZE (8GB; less where the
# disk is short: the full size writes tens of GB of WAL), TENANCY_BENCH_KEEP=1 (keep the cluster's
# data directory afterwards; by default it is removed, the results in <dir>/run stay).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
source scripts/cluster.sh

SIZE=full
ONLY=""
for arg in "$@"; do
  case "$arg" in
    --quick) SIZE=quick ;;
    --lifecycle) ONLY=lifecycle ;;
    --backfill) ONLY=backfill ;;
    --policy) ONLY=policy ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $arg (use --quick, --lifecycle, --backfill, --policy)" >&2; exit 2 ;;
  esac
done

if [ "$SIZE" = quick ]; then
  N_ORGS=100; N_USERS=1000; N_ROWS=200000
  ROUNDS=5; SECS=1          # policy overhead and function cost: rounds, seconds per pgbench run
  SLOW_ROUNDS=2             # rounds of (d1), (d2) on the shapes where they scan the whole table
  FN_CALLS=20000            # function cost: calls in one statement
  FN_ROUNDS=3
  BF_ROUNDS=2               # backfill: rounds (fresh copies each)
  WRITER_BASE_SECS=3        # backfill: the writer alone, seconds per copy
  INTEGRITY_ROUNDS=3
  LC_ORGS=20; LC_PER_ORG=5000   # lifecycle: background organizations and their shipments (+2 documents each)
  LC_SIZE=20000                 # lifecycle: shipments of the measured organization (+2 documents each)
  LC_ROUNDS=3
else
  N_ORGS=1000; N_USERS=10000; N_ROWS=5000000
  ROUNDS=9; SECS=3
  SLOW_ROUNDS=2
  FN_CALLS=100000
  FN_ROUNDS=5
  BF_ROUNDS=2
  WRITER_BASE_SECS=10
  INTEGRITY_ROUNDS=5
  LC_ORGS=100; LC_PER_ORG=20000
  LC_SIZE=200000
  LC_ROUNDS=7                   # single rounds vary by ±20% on a 2-CPU VM (the first reads a cold cache): the median of 7
fi
K_MAX=$(( N_USERS / N_ORGS - 1 ))
PORT="${TENANCY_BENCH_PORT:-28840}"
DIR="${TENANCY_BENCH_DIR:-/tmp/tn-bench}"
OUT="${TENANCY_BENCH_OUT:-$ROOT/BENCHMARKS.md}"
RUN="$DIR/run"
PGCOPY="$DIR-pg"
DB=postgres
START_TS=$(date +%s)

log() { printf '[bench %4ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }
die() { printf 'bench: FAILED: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

WRITER_PID=""
cleanup() {
  [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null
  cluster_stop "$DIR"
  rm -rf "$PGCOPY"
  # The full-size cluster takes ~10 GB: the results stay in $RUN, the data goes unless kept.
  [ "${TENANCY_BENCH_KEEP:-0}" = 1 ] || rm -rf "$DIR/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a copy of PostgreSQL and tenancy, taken now -----------------------------------------------
# scripts/setup.sh may reinstall tenancy while the benchmark runs (on a shared development
# machine, a new build replacing tenancy.so under a running server breaks it): the cluster runs
# from a private copy of the installed PostgreSQL 15 with tenancy, so the whole run measures one
# build. PostgreSQL finds its lib and share directories relative to its binaries.
snapshot_pg() {
  local bindir libdir sharedir d stamp try
  bindir=$("$PG_BIN/pg_config" --bindir); libdir=$("$PG_BIN/pg_config" --pkglibdir); sharedir=$("$PG_BIN/pg_config" --sharedir)
  [ -f "$libdir/tenancy.so" ] || die "tenancy is not installed in $libdir: run scripts/setup.sh first"
  for try in 1 2 3 4 5 6; do
    stamp=$(stat -c '%Y %s' "$libdir/tenancy.so" "$sharedir"/extension/tenancy--*.sql)
    rm -rf "$PGCOPY"
    for d in "$bindir" "$libdir" "$sharedir"; do mkdir -p "$PGCOPY$(dirname "$d")"; cp -a "$d" "$PGCOPY$(dirname "$d")/"; done
    if [ "$stamp" = "$(stat -c '%Y %s' "$libdir/tenancy.so" "$sharedir"/extension/tenancy--*.sql)" ] &&
       cmp -s "$libdir/tenancy.so" "$PGCOPY$libdir/tenancy.so"; then
      PG_BIN="$PGCOPY$bindir"
      return 0
    fi
    log "tenancy is being reinstalled; copying again in 10 s"
    sleep 10
  done
  die "tenancy kept changing while it was copied"
}
snapshot_pg
PGBENCH="$PG_BIN/pgbench"

# --- the cluster ---------------------------------------------------------------------------------
# fsync = off comes from scripts/cluster.sh (a throwaway cluster). shared_buffers holds the five
# copies of the tenant table with their indexes (4.4 GB at full size), which are loaded into it
# before measuring: the figures are CPU costs, not the luck of which copy the OS cache kept.
# Autovacuum is off: every table is vacuumed and analyzed after loading, and nothing measured
# should race with it.
SHARED_BUFFERS=6GB; [ "$SIZE" = quick ] && SHARED_BUFFERS=1GB
CLUSTER_CONF=("shared_buffers = $SHARED_BUFFERS" "effective_cache_size = 8GB" "work_mem = 16MB"
              "maintenance_work_mem = 512MB" "max_wal_size = ${TENANCY_BENCH_MAX_WAL_SIZE:-8GB}" "checkpoint_timeout = 30min"
              "autovacuum = off")
log "starting a cluster in $DIR on port $PORT ($SIZE size)"
# cluster_start recreates $DIR: the previous run's results are kept in $DIR/run.previous.
if [ -d "$RUN" ]; then rm -rf "$DIR.run.previous"; mv "$RUN" "$DIR.run.previous"; fi
cluster_start "$DIR" "$PORT" "${CLUSTER_CONF[@]}" || die "could not start the cluster"
mkdir -p "$RUN"
if [ -d "$DIR.run.previous" ]; then mv "$DIR.run.previous" "$RUN/previous"; rm -rf "$RUN/previous/previous"; fi

q() { cluster_psql "$PORT" -d "$DB" -qAt "$@"; }                     # as postgres (catalog owner)
q_app() { cluster_psql "$PORT" -d "$DB" -U bench_app -qAt "$@"; }    # as the application's role

# pgbench; prints its tps or its "latency average" in ms. Any failed transaction aborts the run.
pgb() { # tps|latency USER SCRIPT [pgbench args...]
  local what="$1" user="$2" script="$3"; shift 3
  local out rc=0
  out=$("$PGBENCH" -h 127.0.0.1 -p "$PORT" -U "$user" -n "$@" -f "$script" "$DB" 2>&1) || rc=$?
  if [ "$rc" != 0 ] || ! grep -q '^number of failed transactions: 0 ' <<<"$out"; then
    printf '%s\n' "$out" >&2
    die "pgbench failed (exit $rc): $*"
  fi
  case "$what" in
    tps) awk '/^tps = / { print $3 }' <<<"$out" ;;
    latency) awk '/^latency average = / { print $4 }' <<<"$out" ;;
  esac
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.4f\n", a / b }'; }
verdict() { awk -v v="$1" -v t="$2" -v op="${3:-<=}" 'BEGIN { if (v == "" || v == "nan") { print "n/a"; exit }
  ok = (op == "<=") ? (v + 0 <= t + 0) : (v + 0 >= t + 0); print ok ? "PASS" : "MISS" }'; }
fmt() { awk -v v="$1" -v d="${2:-2}" 'BEGIN { if (v == "" || v == "nan") print "n/a"; else printf "%.*f\n", d, v }'; }
num() { awk -v v="$1" 'BEGIN { s = sprintf("%d", v); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); print s }'; }
now() { date +%s.%N; }
mb() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }   # kB -> MB
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }
# the median of the values of an associative array over rounds: med ARRAY KEY_PREFIX ROUNDS
med() { local -n arr="$1"; local r; for (( r = 0; r < $3; r++ )); do if [ -n "${arr[$2,$r]:-}" ]; then echo "${arr[$2,$r]}"; fi; done | median; }

# The report, one markdown section per part (the parts run in the order 1, 3, 4, 2: the backfill
# registers and drops tables, which the integrity part must not see).
declare -a MD1=() MD2=() MD3=() MD4=() MD5=()
SECTION=1
md() { local -n sec="MD$SECTION"; sec+=("$*"); }

# ==================================================================================================
# 5. Lifecycle (a function: run after the other parts, or alone with --lifecycle)
# ==================================================================================================
# Two tables of their own (lc_shipments, lc_documents: bench/lifecycle/setup.sql), converted and
# isolated, with background organizations. Each round fills two organizations with the same rows
# (LC_SIZE shipments, two documents each) and erases one with CALL tenancy.erase_organization and
# the other with the hand-written DELETEs, children first (in alternating order); it exports a
# third one with export_organization and with COPY (SELECT * ...) per table, both to /dev/null on
# the client (psql's \copy); and times organization_usage() against one GROUP BY per tenant table.
# Times are wall-clock around one psql call each; ratios are of medians over the rounds.
lifecycle_part() {
  SECTION=5
  log "lifecycle: $LC_ORGS background organizations of $(num "$LC_PER_ORG") shipments, measured organizations of $(num "$LC_SIZE") (+ 2 documents each)"
  q -v n_orgs="$LC_ORGS" -v per_org="$LC_PER_ORG" -f bench/lifecycle/setup.sql >/dev/null
  local r t0 org_t org_h org_x order w
  declare -gA LC=()
  for (( r = 0; r < LC_ROUNDS; r++ )); do
    org_t="dddddddd-0000-4000-8000-0000000000$(printf '%02d' $(( 3 * r + 1 )))"
    org_h="dddddddd-0000-4000-8000-0000000000$(printf '%02d' $(( 3 * r + 2 )))"
    org_x="dddddddd-0000-4000-8000-0000000000$(printf '%02d' $(( 3 * r + 3 )))"
    for o in "$org_t" "$org_h" "$org_x"; do
      q -c "SELECT tenancy.create_organization('LC $o', 'lc-$o', id => '$o'); SELECT lc_fill('$o', $LC_SIZE);" >/dev/null
    done
    q -c "VACUUM ANALYZE lc_shipments, lc_documents" >/dev/null
    q -c "SELECT tenancy.deactivate_organization('$org_t')" >/dev/null
    order=(tenancy hand); (( r % 2 )) && order=(hand tenancy)
    for w in "${order[@]}"; do
      q -c "CHECKPOINT" >/dev/null   # neither side pays for the other's dirty buffers
      t0=$(now)
      if [ "$w" = tenancy ]; then
        PGOPTIONS="-c client_min_messages=warning" q -c "CALL tenancy.erase_organization('$org_t')" >/dev/null
      else
        q -c "DELETE FROM lc_documents WHERE organization_id = '$org_h'" -c "DELETE FROM lc_shipments WHERE organization_id = '$org_h'" >/dev/null
      fi
      LC[erase-$w,$r]=$(elapsed "$t0" "$(now)")
    done
    [ "$(q -c "SELECT count(*) FROM lc_shipments WHERE organization_id IN ('$org_t', '$org_h')")" = 0 ] || die "lifecycle: rows left after the erase"
    order=(tenancy hand); (( r % 2 )) && order=(hand tenancy)
    for w in "${order[@]}"; do
      q -c "CHECKPOINT" >/dev/null
      t0=$(now)
      if [ "$w" = tenancy ]; then
        PGOPTIONS="-c client_min_messages=warning" \
          q -c "\copy (SELECT * FROM tenancy.export_organization('$org_x')) TO '/dev/null' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')" >/dev/null
      else
        q -c "\copy (SELECT * FROM lc_shipments WHERE organization_id = '$org_x') TO '/dev/null'" \
          -c "\copy (SELECT * FROM lc_documents WHERE organization_id = '$org_x') TO '/dev/null'" >/dev/null
      fi
      LC[export-$w,$r]=$(elapsed "$t0" "$(now)")
    done
    PGOPTIONS="-c client_min_messages=warning" q -c "SELECT tenancy.deactivate_organization('$org_x')" \
      -c "CALL tenancy.erase_organization('$org_x', batch_size => 100000)" >/dev/null
    # The registered tables that exist (part 2 drops its copies; their registry rows stay).
    q -At -c "SELECT format('SELECT %I, count(*) FROM %s GROUP BY 1;', t.tenant_column, t.relid) FROM tenancy.tenant_tables t
               WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.relid::oid)" >"$RUN/usage-hand.sql"
    order=(tenancy hand); (( r % 2 )) && order=(hand tenancy)
    for w in "${order[@]}"; do
      t0=$(now)
      if [ "$w" = tenancy ]; then q -c "SELECT * FROM tenancy.organization_usage()" >/dev/null; else q -f "$RUN/usage-hand.sql" >/dev/null; fi
      LC[usage-$w,$r]=$(elapsed "$t0" "$(now)")
    done
    log "lifecycle round $((r + 1)): erase ${LC[erase-tenancy,$r]} s vs ${LC[erase-hand,$r]} s, export ${LC[export-tenancy,$r]} s vs ${LC[export-hand,$r]} s, usage ${LC[usage-tenancy,$r]} s vs ${LC[usage-hand,$r]} s"
  done
  local e_t e_h x_t x_h u_t u_h rows e_thr x_thr u_rat
  e_t=$(med LC erase-tenancy "$LC_ROUNDS"); e_h=$(med LC erase-hand "$LC_ROUNDS")
  x_t=$(med LC export-tenancy "$LC_ROUNDS"); x_h=$(med LC export-hand "$LC_ROUNDS")
  u_t=$(med LC usage-tenancy "$LC_ROUNDS"); u_h=$(med LC usage-hand "$LC_ROUNDS")
  e_thr=$(ratio "$e_h" "$e_t"); x_thr=$(ratio "$x_h" "$x_t"); u_rat=$(ratio "$u_t" "$u_h")
  rows=$(( 3 * LC_SIZE ))
  say "== 5. Lifecycle ($(num "$rows") rows per measured organization; throughput ratios higher is better, the usage time ratio lower)"
  say "$(printf 'erase_organization vs DELETEs in foreign-key order: %.2f s vs %.2f s, throughput %.3f [>= 0.8 %s]' "$e_t" "$e_h" "$e_thr" "$(verdict "$e_thr" 0.8 '>=')")"
  say "$(printf 'export_organization vs COPY (SELECT ...) per table:  %.2f s vs %.2f s, throughput %.3f [>= 0.8 %s]' "$x_t" "$x_h" "$x_thr" "$(verdict "$x_thr" 0.8 '>=')")"
  say "$(printf 'organization_usage() vs GROUP BY per table:          %.3f s vs %.3f s, time %.3f [<= 1.5 %s]' "$u_t" "$u_h" "$u_rat" "$(verdict "$u_rat" 1.5)")"
  md "## 5. Lifecycle: erase, export, usage"
  md ""
  md "\`lc_shipments\` and \`lc_documents\` (\`bench/lifecycle/setup.sql\`: two documents per shipment, \`ON DELETE CASCADE\`, converted and isolated),"
  md "$LC_ORGS background organizations of $(num "$LC_PER_ORG") shipments; each measured organization has $(num "$LC_SIZE") shipments and $(num $(( 2 * LC_SIZE ))) documents."
  md "Per round: two identical organizations, one erased by \`CALL tenancy.erase_organization\` (default batches of 50,000 rows, a COMMIT each; the documents, a cascaded child, go with their shipments: about 16,666 shipments a batch),"
  md "the other by the hand-written \`DELETE FROM lc_documents WHERE organization_id = ...; DELETE FROM lc_shipments WHERE ...\` (children first,"
  md "as the superuser); a third exported by \`\\copy (SELECT * FROM tenancy.export_organization(...)) TO '/dev/null'\` and by \`\\copy (SELECT * FROM t"
  md "WHERE organization_id = ...) TO '/dev/null'\` per table; \`organization_usage()\` against one \`SELECT organization_id, count(*) ... GROUP BY 1\` per"
  md "registered tenant table. Wall-clock time of one psql call each, after a CHECKPOINT (erase, export), alternating which goes first; medians of $LC_ROUNDS rounds."
  md ""
  md "| | tenancy | hand-written | ratio | target |"
  md "|---|---:|---:|---:|---|"
  md "| erase ($(num "$rows") rows), throughput | $(fmt "$e_t" 2) s | $(fmt "$e_h" 2) s | $(fmt "$e_thr" 3) | ≥ 0.8 **$(verdict "$e_thr" 0.8 '>=')** |"
  md "| export ($(num "$rows") rows), throughput | $(fmt "$x_t" 2) s | $(fmt "$x_h" 2) s | $(fmt "$x_thr" 3) | ≥ 0.8 **$(verdict "$x_thr" 0.8 '>=')** |"
  md "| usage (every registered tenant table), time | $(fmt "$u_t" 3) s | $(fmt "$u_h" 3) s | $(fmt "$u_rat" 3) | ≤ 1.5 **$(verdict "$u_rat" 1.5)** |"
  md ""
}

if [ "$ONLY" = lifecycle ]; then
  q -c "CREATE EXTENSION tenancy" >/dev/null
  lifecycle_part
  printf '%s\n' "${MD5[@]}" >"$RUN/lifecycle.md"
  log "part 5 alone: $RUN/lifecycle.md (BENCHMARKS.md untouched)"
  exit 0
fi

# --- the data set --------------------------------------------------------------------------------
log "creating the data set: $N_ORGS organizations, $N_USERS users, $(num "$N_ROWS") rows"
q -c "CREATE EXTENSION tenancy" >/dev/null
q -v n_orgs="$N_ORGS" -v n_users="$N_USERS" -v n_rows="$N_ROWS" -f bench/setup.sql >/dev/null
if [ "$ONLY" != backfill ]; then
  log "one copy of the tenant table per policy variant, indexes, policies"
  q -f bench/variants.sql >/dev/null
fi
H=$(q -c "SELECT h FROM bench_meta")
ACTUAL_ROWS=$(q -c "SELECT actual_rows FROM bench_meta")
[ "$ACTUAL_ROWS" = "$N_ROWS" ] || die "t_a has $ACTUAL_ROWS rows, expected $N_ROWS"
# The pgbench scripts compute each tenant's last row from n_rows and h: check that it exists.
missing=$(q -c "SELECT count(*) FROM generate_series(1, $N_ORGS) o
                 WHERE NOT EXISTS (SELECT 1 FROM t_a WHERE id = greatest(1, floor($N_ROWS::float8 / ($H::float8 * o)))::bigint * 10000 + o)")
[ "$missing" = 0 ] || die "$missing tenants lack the row the pgbench scripts compute as their last one"
TABLE_MB=$(q -c "SELECT pg_total_relation_size('t_a') / 1048576")
SKEW=$(q -c "SELECT format('largest tenant %s rows, median %s, smallest %s', to_char(max(n), 'FM999,999,999'),
                to_char(percentile_disc(0.5) WITHIN GROUP (ORDER BY n), 'FM999,999,999'), to_char(min(n), 'FM999,999,999')) FROM bench_sizes")
log "data set ready: t_a is ${TABLE_MB} MB with its indexes; $SKEW"
PGB_VARS=(-D "n_orgs=$N_ORGS" -D "k_max=$K_MAX" -D "n_rows=$N_ROWS" -D "h=$H")

# Parts 1, 3 and 4 (skipped by --backfill).
if [ "$ONLY" != backfill ]; then
# ==================================================================================================
# 1. Policy overhead
# ==================================================================================================
SECTION=1
VARIANTS=(a b c d1 d2)
declare -A V_TABLE=([a]=t_a [b]=t_ctx [c]=t_mem [d1]=t_fn [d2]=t_uid [m]=t_mem [e]=t_e [e2]=t_uid)
declare -A V_SET=([a]=plain [b]=tenancy [c]=tenancy [d1]=plain [d2]=plain [m]=tenancy-user [e]=plain-user [e2]=plain-user)
SHAPES=(point list range agg page)
declare -A S_DESC=([point]="point lookup by id" [list]="list page, newest 20: ORDER BY created_at DESC LIMIT 20"
                   [range]="range scan, 30 days, ORDER BY created_at DESC LIMIT 20"
                   [agg]="per-tenant aggregate, GROUP BY status"
                   [page]="list-page transaction: 30-day aggregate + newest 20")
TENANT_FILTER="organization_id = 'bbbbbbbb-0000-4000-8000-:og'"
VARS_FILE=bench/policy/vars.pgbench

# A variant's transaction: BEGIN, the context, the query (one or two statements), END. Only (a)
# filters by hand; every other variant leaves the tenant to its policies.
block_of() { # VARIANT SHAPE
  local v="$1" s="$2" tenant=true
  [ "$v" = a ] && tenant="$TENANT_FILTER"
  echo "BEGIN;"
  cat "bench/policy/set-${V_SET[$v]}.sql"
  sed -e "s/@TABLE@/${V_TABLE[$v]}/" -e "s/@TENANT@/$tenant/" "bench/policy/$s.sql"
  echo "END;"
}
# How many SQL statements a variant's transaction has (pgbench -r reports one latency each).
statements_of() { # VARIANT SHAPE
  echo $(( 2 + $(grep -c ';$' "bench/policy/set-${V_SET[$1]}.sql") + $(grep -c ';$' "bench/policy/$2.sql") ))
}
# A pgbench script: the variables (one tenant, user, row and day: $VARS_FILE), then one
# transaction per variant given, in that order.
script_of() { # FILE SHAPE VARIANT...
  local f="$1" s="$2" v; shift 2
  { cat "$VARS_FILE"; for v in "$@"; do block_of "$v" "$s"; done; } >"$f"
}

# The same transaction with fixed values, run once in psql as bench_app; the query's rows go to OUT.
check_rows() { # VARIANT SHAPE OUT
  local v="$1" s="$2" out="$3" tenant=true
  [ "$v" = a ] && tenant="$TENANT_FILTER"
  local subst=(-e "s/:ug\b/$SAMPLE_UG/g" -e "s/:og\b/$SAMPLE_OG/g" -e "s/:id\b/$SAMPLE_ID/g" -e "s/:d\b/$SAMPLE_D/g")
  {
    echo "BEGIN;"
    echo "\\o /dev/null"
    sed "${subst[@]}" "bench/policy/set-${V_SET[$v]}.sql"
    echo "\\o $out"
    sed -e "s/@TABLE@/${V_TABLE[$v]}/" -e "s/@TENANT@/$tenant/" "bench/policy/$s.sql" | sed "${subst[@]}"
    echo "\\o"
    echo "END;"
  } | q_app -F '|' >/dev/null || die "the check transaction of variant $v, $s failed"
}

SAMPLE_O=$(( N_ORGS >= 7 ? 7 : 1 ))
SAMPLE_OG=$(( 100000000000 + SAMPLE_O ))
SAMPLE_UG=$(( 100000000000 + SAMPLE_O + N_ORGS ))      # k = 1: a member
SAMPLE_N=$(q -c "SELECT n FROM bench_sizes WHERE o = $SAMPLE_O")
SAMPLE_ID=$(( (SAMPLE_N / 2) * 10000 + SAMPLE_O ))
SAMPLE_D=100
log "policy overhead: does every variant return its baseline's rows? (tenant $SAMPLE_O, $SAMPLE_N rows)"
for s in "${SHAPES[@]}"; do
  # (b) ... (d2) against (a); across the user's organizations, (m) and (e2) against (e).
  for pair in "a:b c d1 d2" "e:m e2"; do
    base=${pair%%:*}
    check_rows "$base" "$s" "$RUN/check-$base-$s.out"
    base_n=$(wc -l <"$RUN/check-$base-$s.out")
    [ "$base_n" -gt 0 ] || die "the baseline ($base) returns no rows for $s: the benchmark would measure an empty result"
    for v in ${pair#*:}; do
      check_rows "$v" "$s" "$RUN/check-$v-$s.out"
      if ! cmp -s "$RUN/check-$base-$s.out" "$RUN/check-$v-$s.out"; then
        diff "$RUN/check-$base-$s.out" "$RUN/check-$v-$s.out" | head -20 >&2
        die "variant $v returns other rows than its baseline ($base) for $s (tenant $SAMPLE_O): see $RUN/check-*-$s.out"
      fi
    done
  done
  log "  $s: every variant returns its baseline's $base_n row(s)"
done

# Measuring. Each pgbench transaction of the main runs picks one tenant (user, row, day) and runs
# the transactions of (a), (b), (c) for it back to back (and of (d1), (d2) on the point lookup),
# in an order rotated round by round; pgbench -r gives the mean latency of every statement, and a
# variant's time is the sum over its statements (BEGIN ... END). So the variants are measured
# at the same moments (other work on the machine hits them alike) and on the same tenants (the
# few huge ones weigh the same in each). A variant's figure is the median over the rounds of
# time(variant) / time(baseline).
# (d1), (d2) and (e2) take up to seconds per transaction on the shapes where they read the whole
# table: there they run alone, SLOW_ROUNDS rounds, and are compared with the median time of the
# baseline in the main runs.
paired() { # SHAPE ROUND VARIANT... -> the time (ms) of each variant, in the order given
  local s="$1" r="$2" f out rc=0 v counts=""; shift 2
  f="$RUN/policy-$s-$(basename "$VARS_FILE" .pgbench)-round$r-$1.pgbench"
  script_of "$f" "$s" "$@"
  for v in "$@"; do counts+="$(statements_of "$v" "$s") "; done
  out=$("$PGBENCH" -h 127.0.0.1 -p "$PORT" -U bench_app -n -M simple -c 2 -j 2 -T "$SECS" -r "${PGB_VARS[@]}" -f "$f" "$DB" 2>&1) || rc=$?
  if [ "$rc" != 0 ] || ! grep -q '^number of failed transactions: 0 ' <<<"$out"; then
    printf '%s\n' "$out" >&2; die "pgbench $f failed (exit $rc)"
  fi
  # statement lines: "<latency ms> <failures> <command>"; SQL commands only (not \set)
  awk -v counts="$counts" 'BEGIN { n = split(counts, c, " "); i = 1; left = c[1] }
                 /^ +[0-9.]+ +[0-9]+ +[^\\ ]/ && $3 !~ /^\\/ { if (i > n) { bad = 1; exit } t[i] += $1; if (--left == 0) { i++; left = c[i] } }
                 END { if (bad || i != n + 1) { print "bad"; exit } for (j = 1; j <= n; j++) printf "%s%.4f", (j > 1 ? " " : ""), t[j]; print "" }' <<<"$out"
}
# Rounds of paired runs of a baseline and the variants after it, each shape; SLOW variants run
# alone on every shape but the point lookup. Fills the latencies LAT_<tag> and the ratios
# RAT_<tag> (variant-shape,round).
policy_rounds() { # TAG VARS_FILE "BASE V..." "SLOW..."
  local tag="$1" vars="$2" set_=($3) slow=($4) s r n i v line base order lat
  VARS_FILE="$vars"
  base=${set_[0]}
  declare -gA "LAT_$tag=()" "RAT_$tag=()"
  local -n L="LAT_$tag" R="RAT_$tag"
  for (( r = 0; r < ROUNDS; r++ )); do
    for s in "${SHAPES[@]}"; do
      local vs=("${set_[@]}"); [ "$s" = point ] && vs+=("${slow[@]}")
      n=${#vs[@]}; order=(); for (( i = 0; i < n; i++ )); do order+=("${vs[$(( (i + r) % n ))]}"); done
      read -r -a lat < <(paired "$s" "$r" "${order[@]}")
      [ "${lat[0]}" != bad ] || die "could not read pgbench's per-statement latencies for $s"
      line=""
      for (( i = 0; i < n; i++ )); do L[${order[$i]}-$s,$r]="${lat[$i]}"; line+=" ${order[$i]}=${lat[$i]}"; done
      for v in "${vs[@]:1}"; do R[$v-$s,$r]=$(ratio "${L[$v-$s,$r]}" "${L[$base-$s,$r]}"); done
      if [ "$s" != point ] && (( r < SLOW_ROUNDS )) && (( ${#slow[@]} )); then
        line+="; alone:"
        for v in "${slow[@]}"; do
          script_of "$RUN/policy-$v-$s.pgbench" "$s" "$v"
          L[$v-$s,$r]=$(pgb latency bench_app "$RUN/policy-$v-$s.pgbench" -M simple -c 2 -j 2 -T "$SECS" "${PGB_VARS[@]}")
          line+=" $v=${L[$v-$s,$r]}"
        done
      fi
      log "  $tag round $(( r + 1 ))/$ROUNDS $s, ms per transaction:$line"
    done
  done
  for s in "${SHAPES[@]}"; do
    [ "$s" = point ] && continue
    local b_med; b_med=$(med "LAT_$tag" "$base-$s" "$ROUNDS")
    for v in "${slow[@]}"; do for (( r = 0; r < SLOW_ROUNDS; r++ )); do R[$v-$s,$r]=$(ratio "${L[$v-$s,$r]}" "$b_med"); done; done
  done
}
log "policy overhead: $ROUNDS rounds x ${#SHAPES[@]} shapes, ${SECS} s per run (pgbench -c 2 -j 2 -M simple -r, the variants paired per tenant)"
log "policy overhead, cold memo (a tenant and one of its 10 members at random per transaction)"
policy_rounds cold bench/policy/vars.pgbench "a b c" "d1 d2"
log "policy overhead, warm memo (100 tenants, 3 members each, recurring)"
policy_rounds warm bench/policy/vars-warm.pgbench "a b c" ""
log "policy overhead, the largest tenant"
policy_rounds largest bench/policy/vars-largest.pgbench "a b c" ""
log "across a user's organizations (no organization chosen): tenancy's membership mode (m) vs hand-written secure RLS (e), (e2)"
policy_rounds across bench/policy/vars.pgbench "e m" "e2"
# Where (b)'s time goes on the point lookup: its statements vs (a)'s, from one more paired run.
VARS_FILE=bench/policy/vars.pgbench
script_of "$RUN/policy-point-break.pgbench" point a b
BREAK=$(awk '/^ +[0-9.]+ +[0-9]+ +SELECT (set_config|tenancy.set_organization)/ { k = ($0 ~ /tenancy/); if (!(k in s)) s[k] = $1 }
             /^ +[0-9.]+ +[0-9]+ +SELECT id, .* FROM t_a / { qa = $1 } /^ +[0-9.]+ +[0-9]+ +SELECT id, .* FROM t_ctx / { qb = $1 }
             END { print s[0], qa, s[1], qb }' < <("$PGBENCH" -h 127.0.0.1 -p "$PORT" -U bench_app -n -M simple -c 2 -j 2 -T "$SECS" -r \
               "${PGB_VARS[@]}" -f "$RUN/policy-point-break.pgbench" "$DB" 2>&1))
read -r BA_SET BA_Q BB_SET BB_Q <<<"$BREAK"
SET_RATIO=$(ratio "$BB_SET" "$BA_SET")

say ""
say "== 1. Policy overhead: time per transaction relative to (a); lower is better"
md "## 1. Policy overhead"
md ""
md "Every pgbench transaction (\`-c 2 -j 2 -M simple\`) picks a tenant uniformly at random (small and large tenants alike), a member or viewer"
md "of it, and one of its rows or days, and runs \`BEGIN; SET LOCAL <user>; SELECT <organization>; <query>; END;\` as \`bench_app\`, which owns no table:"
md ""
md "- (a) **no RLS**: \`SET LOCAL app.user_id\`, \`SELECT set_config('app.organization_id', ..., true)\`, the query with a hand-written \`WHERE organization_id = '<org>'\`;"
md "- (b) **tenancy, \`mode => 'context'\`** (the default since 0.3.0) and (c) **tenancy, \`mode => 'membership'\`** (the default of 0.2.0): \`SET LOCAL tenancy.user_id\`, \`SELECT tenancy.set_organization(...)\`, the query without a tenant filter;"
md "- (d1) **per-row membership function**, basejump's form: \`USING (public.has_role_on_account(organization_id))\`, a SQL function (SECURITY DEFINER, pinned search_path) checking a memberships table for \`current_setting('app.user_id')::uuid\`;"
md "- (d2) **unwrapped auth.uid()**, Supabase's guide form: \`USING (organization_id IN (SELECT organization_id FROM members WHERE user_id = public.uid()))\`;"
md "  (d1) and (d2) set \`app.user_id\` and the organization like (a); the query has no tenant filter."
md ""
md "Each variant has its own identical copy of the table (same rows and physical order, primary key, \`(organization_id, created_at)\` index), and"
md "returned exactly its baseline's rows for a sample tenant (checked before measuring). Each pgbench transaction picks one tenant and runs the"
md "transactions of (a), (b), (c) — and (d1), (d2) on the point lookup — for it back to back, in an order rotated round by round; \`pgbench -r\`"
md "gives each statement's mean latency, and a variant's time is the sum over its statements. So the variants are measured at the same"
md "moments and on the same tenants. ${SECS} s per shape and round, $ROUNDS rounds; a figure is the median over the rounds of time(variant) / time(a),"
md "a **time ratio**: 1.00 = as fast as (a), lower is better. On the shapes other than the point lookup, where they read the whole table, (d1) and (d2)"
md "run alone ($SLOW_ROUNDS rounds), and their mean latency is divided by (a)'s median time. Three workloads: a **cold** memo (a tenant and one of"
md "its members at random per transaction, among $(num "$N_USERS") users), a **warm** one (100 tenants spread over the sizes, 3 members each, recurring:"
md "a pooled application server) and **the largest tenant** alone."
md ""
declare -A RATIO=()
for tag in cold warm largest; do
  local_desc=$([ "$tag" = cold ] && echo "cold memo" || { [ "$tag" = warm ] && echo "warm memo" || echo "the largest tenant"; })
  if [ "$tag" = cold ]; then
    md "**${local_desc}**"; md ""
    md "| query | (a) ms per transaction | (b)/(a) context (default) | target | (c)/(a) membership | (d1)/(a) | (d2)/(a) |"
    md "|---|---:|---:|---|---:|---:|---:|"
  else
    md "**${local_desc}**"; md ""
    md "| query | (a) ms per transaction | (b)/(a) context (default) | target | (c)/(a) membership |"
    md "|---|---:|---:|---|---:|"
  fi
  say "-- $local_desc"
  for s in "${SHAPES[@]}"; do
    a_med=$(med "LAT_$tag" "a-$s" "$ROUNDS")
    for v in b c d1 d2; do RATIO[$tag,$v,$s]=$(med "RAT_$tag" "$v-$s" "$ROUNDS"); done
    vb=$(verdict "${RATIO[$tag,b,$s]}" 1.05)
    if [ "$tag" = cold ]; then
      say "$(printf '%-56s (a) %7.3f ms  (b)/(a) %6.3f [<= 1.05 %s]  (c)/(a) %6.3f  (d1)/(a) %8.1f  (d2)/(a) %7.1f' \
        "${S_DESC[$s]}" "$a_med" "${RATIO[$tag,b,$s]}" "$vb" "${RATIO[$tag,c,$s]}" "${RATIO[$tag,d1,$s]}" "${RATIO[$tag,d2,$s]}")"
      md "| ${S_DESC[$s]} | $(fmt "$a_med" 3) | $(fmt "${RATIO[$tag,b,$s]}" 3) | ≤ 1.05 **$vb** | $(fmt "${RATIO[$tag,c,$s]}" 3) | $(fmt "${RATIO[$tag,d1,$s]}" 1) | $(fmt "${RATIO[$tag,d2,$s]}" 1) |"
    else
      say "$(printf '%-56s (a) %7.3f ms  (b)/(a) %6.3f [<= 1.05 %s]  (c)/(a) %6.3f' \
        "${S_DESC[$s]}" "$a_med" "${RATIO[$tag,b,$s]}" "$vb" "${RATIO[$tag,c,$s]}")"
      md "| ${S_DESC[$s]} | $(fmt "$a_med" 3) | $(fmt "${RATIO[$tag,b,$s]}" 3) | ≤ 1.05 **$vb** | $(fmt "${RATIO[$tag,c,$s]}" 3) |"
    fi
  done
  md ""
done
md "The target: context mode, ≤ 1.05 on every shape (the default mode, which is context since 0.3.0, with a chosen organization: ≤ 1.10; (b)"
md "is held to the stricter one). Membership mode with a chosen organization (c) has no target of its own: it serves pages across organizations."
md ""
say "-- across a user's organizations (no organization chosen), time relative to (e)"
md "**Across all of a user's organizations** (no organization chosen; the query reads every organization the user belongs to; in this data"
md "set each user belongs to one): (m) **tenancy, \`mode => 'membership'\`**, only \`SET LOCAL tenancy.user_id\`; (e) the fastest hand-written"
md "secure form of Supabase's RLS performance guide, \`organization_id = ANY (ARRAY(SELECT organization_id FROM members WHERE user_id = (SELECT auth.uid())))\`"
md "with an index on \`members (user_id)\`; (e2) the guide's common form, \`organization_id IN (SELECT ... WHERE user_id = auth.uid())\` (run alone"
md "outside the point lookup). Both (e) forms only set \`app.user_id\`. Time ratios against (e), cold memo:"
md ""
md "| query | (e) ms per transaction | (m)/(e) | target | (e2)/(e) |"
md "|---|---:|---:|---|---:|"
for s in "${SHAPES[@]}"; do
  e_med=$(med LAT_across "e-$s" "$ROUNDS")
  RATIO[across,m,$s]=$(med RAT_across "m-$s" "$ROUNDS"); RATIO[across,e2,$s]=$(med RAT_across "e2-$s" "$ROUNDS")
  vm=$(verdict "${RATIO[across,m,$s]}" 1.00)
  say "$(printf '%-56s (e) %7.3f ms  (m)/(e) %6.3f [<= 1.00 %s]  (e2)/(e) %8.1f' "${S_DESC[$s]}" "$e_med" "${RATIO[across,m,$s]}" "$vm" "${RATIO[across,e2,$s]}")"
  md "| ${S_DESC[$s]} | $(fmt "$e_med" 3) | $(fmt "${RATIO[across,m,$s]}" 3) | ≤ 1.00 **$vm** | $(fmt "${RATIO[across,e2,$s]}" 1) |"
done
md ""
say "$(printf 'choosing the organization, point lookup (pgbench -r, ms): tenancy.set_organization %s vs set_config %s, ratio %.3f [<= 1.5 %s]; query %s (b) vs %s (a)' \
  "$BB_SET" "$BA_SET" "$SET_RATIO" "$(verdict "$SET_RATIO" 1.5)" "$BB_Q" "$BA_Q")"
md "Where (b)'s extra time goes on the point lookup (pgbench \`-r\`, mean latency per statement, one more paired run): choosing the"
md "organization takes $BB_SET ms with \`tenancy.set_organization\` (b) and $BA_SET ms with \`set_config\` (a), a ratio of $(fmt "$SET_RATIO" 3)"
md "(target ≤ 1.5 **$(verdict "$SET_RATIO" 1.5)**); the query $BB_Q ms (b) and $BA_Q ms (a), the difference being the policy's"
md "\`(SELECT tenancy.policy_organization_id('read'))\`, run once per statement."
md ""
md "Scripts: \`bench/policy/\` (assembled per variant by \`scripts/bench.sh\`), tables, functions and policies: \`bench/variants.sql\`, data: \`bench/setup.sql\`."
md ""

if [ "$ONLY" = policy ]; then
  printf '%s\n' "${MD1[@]}" >"$RUN/policy.md"
  log "part 1 alone: $RUN/policy.md (BENCHMARKS.md untouched)"
  exit 0
fi

# ==================================================================================================
# 3. Integrity
# ==================================================================================================
SECTION=3
log "integrity: t_integrity, a copy with a nullable tenant column and some NULL and orphaned rows"
q -f bench/integrity/setup.sql >/dev/null
TABLES=$(q -c "SELECT c.oid::regclass::text FROM tenancy.tenant_tables t JOIN pg_class c ON c.oid = t.relid::oid ORDER BY 1")
echo "SELECT * FROM tenancy.validate_client_data_integrity('public.t_integrity');" >"$RUN/integrity-tenancy-one.sql"
sed "s/@TABLE@/public.t_integrity/g" bench/integrity/hand.sql >"$RUN/integrity-hand-one.sql"
echo "SELECT * FROM tenancy.validate_client_data_integrity();" >"$RUN/integrity-tenancy-all.sql"
for t in $TABLES; do sed "s/@TABLE@/$t/g" bench/integrity/hand.sql; done >"$RUN/integrity-hand-all.sql"
MINE=$(q -F ' ' -c "SELECT total_rows, null_rows, orphan_rows FROM tenancy.validate_client_data_integrity('public.t_integrity')")
THEIRS=$(q -f "$RUN/integrity-hand-one.sql" | paste -sd' ')
[ "$MINE" = "$THEIRS" ] || die "validate_client_data_integrity says '$MINE', the hand-written queries '$THEIRS'"
read -r _ n_null n_orphan <<<"$MINE"
[ "$n_null" -gt 0 ] && [ "$n_orphan" -gt 0 ] || die "t_integrity should have NULL and orphaned rows: $MINE"
N_TABLES=$(wc -w <<<"$TABLES")
log "integrity: both count total/NULL/orphaned = $MINE; $INTEGRITY_ROUNDS rounds"
declare -A LAT=() IRAT=()
for (( r = 0; r < INTEGRITY_ROUNDS; r++ )); do
  order=(tenancy-one hand-one tenancy-all hand-all)
  (( r % 2 )) && order=(hand-one tenancy-one hand-all tenancy-all)
  for w in "${order[@]}"; do LAT[$w,$r]=$(pgb latency postgres "$RUN/integrity-$w.sql" -c 1 -t 1); done
  IRAT[one,$r]=$(ratio "${LAT[tenancy-one,$r]}" "${LAT[hand-one,$r]}")
  IRAT[all,$r]=$(ratio "${LAT[tenancy-all,$r]}" "${LAT[hand-all,$r]}")
  log "  round $(( r + 1 ))/$INTEGRITY_ROUNDS (ms): one table ${LAT[tenancy-one,$r]} vs ${LAT[hand-one,$r]}; all ${LAT[tenancy-all,$r]} vs ${LAT[hand-all,$r]}"
done
I_ONE=$(med IRAT one "$INTEGRITY_ROUNDS"); I_ALL=$(med IRAT all "$INTEGRITY_ROUNDS")
say ""
say "== 3. Integrity: time of validate_client_data_integrity / time of the hand-written queries; lower is better"
say "one table ($(num "$N_ROWS") rows):  $(fmt "$I_ONE" 3) [<= 1.1 $(verdict "$I_ONE" 1.1)]  ($(fmt "$(med LAT tenancy-one "$INTEGRITY_ROUNDS")" 0) ms vs $(fmt "$(med LAT hand-one "$INTEGRITY_ROUNDS")" 0) ms)"
say "all $N_TABLES registered tables:  $(fmt "$I_ALL" 3) [<= 1.1 $(verdict "$I_ALL" 1.1)]  ($(fmt "$(med LAT tenancy-all "$INTEGRITY_ROUNDS")" 0) ms vs $(fmt "$(med LAT hand-all "$INTEGRITY_ROUNDS")" 0) ms)"
md "## 3. Integrity"
md ""
md "\`tenancy.validate_client_data_integrity(...)\` vs the three queries it replaces (\`bench/integrity/hand.sql\`: \`count(*)\`,"
md "\`count(*) WHERE organization_id IS NULL\`, and the anti-join counting rows whose organization is not in \`tenancy.organizations\`), each side"
md "run by pgbench (\`-c 1 -t 1\`), $INTEGRITY_ROUNDS rounds alternating; median of the per-round time ratios (lower is better). Both count the"
md "same (checked): total, NULL, orphaned = \`$MINE\` on \`t_integrity\`, a $(num "$N_ROWS")-row copy with a nullable tenant column."
md ""
md "| scope | tenancy | hand-written | ratio | target |"
md "|---|---:|---:|---:|---|"
md "| one table: \`validate_client_data_integrity('t_integrity')\` | $(fmt "$(med LAT tenancy-one "$INTEGRITY_ROUNDS")" 0) ms | $(fmt "$(med LAT hand-one "$INTEGRITY_ROUNDS")" 0) ms | $(fmt "$I_ONE" 3) | ≤ 1.1 **$(verdict "$I_ONE" 1.1)** |"
md "| all $N_TABLES registered tables ($(num "$N_ROWS") rows each): \`validate_client_data_integrity()\` | $(fmt "$(med LAT tenancy-all "$INTEGRITY_ROUNDS")" 0) ms | $(fmt "$(med LAT hand-all "$INTEGRITY_ROUNDS")" 0) ms | $(fmt "$I_ALL" 3) | ≤ 1.1 **$(verdict "$I_ALL" 1.1)** |"
md ""

# ==================================================================================================
# 4. Function cost
# ==================================================================================================
SECTION=4
log "function cost: plain SQL equivalents; $(num "$FN_CALLS") calls per statement, and one per statement"
q -v n_users="$N_USERS" -v n_orgs="$N_ORGS" -v n_calls="$FN_CALLS" -f bench/functions/setup.sql >/dev/null
DIFF=$(q -c "SELECT count(*) FROM public.bench_calls
              WHERE tenancy.get_user_organization_id(u) IS DISTINCT FROM public.sql_get_user_organization_id(u)
                 OR tenancy.validate_client_access(u, o) IS DISTINCT FROM public.sql_validate_client_access(u, o)")
[ "$DIFF" = 0 ] || die "the plain SQL functions disagree with tenancy's on $DIFF of the calls"
read -r FN_ORGS FN_GRANTED FN_NULLS < <(q -F ' ' -c "SELECT count(DISTINCT tenancy.get_user_organization_id(u)),
    count(*) FILTER (WHERE tenancy.validate_client_access(u, o)), count(*) FILTER (WHERE tenancy.get_user_organization_id(u) IS NULL) FROM public.bench_calls")
log "function cost: both agree on all calls ($FN_ORGS distinct organizations, $FN_GRANTED accesses granted, $FN_NULLS users without one)"
declare -A FN=() FRAT=()
for (( r = 0; r < FN_ROUNDS; r++ )); do
  for f in get access; do
    order=(tenancy sql); (( r % 2 )) && order=(sql tenancy)
    for w in "${order[@]}"; do
      ms=$(pgb latency postgres "bench/functions/$f-$w-loop.sql" -c 1 -t 1)
      FN[$f-$w-loop,$r]=$(awk -v n="$FN_CALLS" -v ms="$ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
      FN[$f-$w-stmt,$r]=$(pgb tps postgres "bench/functions/$f-$w.pgbench" -M prepared -c 2 -j 2 -T "$SECS" -D "n_users=$N_USERS" -D "n_orgs=$N_ORGS")
    done
    for how in loop stmt; do FRAT[$f-$how,$r]=$(ratio "${FN[$f-tenancy-$how,$r]}" "${FN[$f-sql-$how,$r]}"); done
  done
  log "  round $(( r + 1 ))/$FN_ROUNDS calls/s, tenancy vs SQL: get ${FN[get-tenancy-loop,$r]} vs ${FN[get-sql-loop,$r]} (in a statement), $(fmt "${FN[get-tenancy-stmt,$r]}" 0) vs $(fmt "${FN[get-sql-stmt,$r]}" 0) (per statement);" \
      "access ${FN[access-tenancy-loop,$r]} vs ${FN[access-sql-loop,$r]}, $(fmt "${FN[access-tenancy-stmt,$r]}" 0) vs $(fmt "${FN[access-sql-stmt,$r]}" 0)"
done
say ""
say "== 4. Function cost: calls per second, tenancy / plain SQL (> 1: tenancy is faster)"
md "## 4. Function cost"
md ""
md "Calls per second of tenancy's two lookup functions and of plain \`LANGUAGE sql STABLE\` functions with the same semantics"
md "(\`bench/functions/setup.sql\`: default active membership in an active organization, else the earliest active one; an active membership"
md "in an active organization), checked to agree on all $(num "$FN_CALLS") (user, organization) pairs of the test, as the catalog owner:"
md "$(num "$FN_CALLS") calls in one statement (\`SELECT count(f(u)) FROM bench_calls\`, the cost of the function itself), and one call per statement"
md "(pgbench \`-M prepared -c 2 -j 2\`, random users, what an application sees). $FN_ROUNDS rounds alternating; medians of the per-round ratios."
md ""
md "| function | calls | tenancy calls/s | plain SQL calls/s | tenancy / SQL |"
md "|---|---|---:|---:|---:|"
for f in get access; do
  label="tenancy.get_user_organization_id(uuid)"; [ "$f" = access ] && label="tenancy.validate_client_access(uuid, uuid)"
  for how in loop stmt; do
    hw="$(num "$FN_CALLS") in one statement"; [ "$how" = stmt ] && hw="one per statement"
    tn=$(med FN "$f-tenancy-$how" "$FN_ROUNDS"); sq=$(med FN "$f-sql-$how" "$FN_ROUNDS"); rt=$(med FRAT "$f-$how" "$FN_ROUNDS")
    say "$(printf '%-44s %-26s tenancy %9.0f/s  SQL %9.0f/s  tenancy/SQL %6.3f' "$label" "$hw" "$tn" "$sq" "$rt")"
    md "| \`$label\` | $hw | $(fmt "$tn" 0) | $(fmt "$sq" 0) | $(fmt "$rt" 3) |"
  done
done
md ""
fi  # parts 1, 3 and 4

# ==================================================================================================
# 2. Backfill
# ==================================================================================================
SECTION=2
BACKFILL_SIG='tenancy.backfill(regclass,uuid,name,text,regclass,name,integer,interval,interval,integer,boolean)'
BF_ORG=$(q -c "SELECT bench_org(1)")
WRITER_RATE=100          # writer transactions per second, over 2 clients

# Latencies (ms) of the writer's transactions that started in [T0, T1] (epoch seconds), from
# pgbench --log lines "client tx latency_us script epoch_s epoch_us [lag_us]": the time stamp is
# the end of the transaction, the latency counted from its scheduled start (-R).
writer_stats() { # T0 T1 LOGFILE... -> "n p50 p99 max"
  local t0="$1" t1="$2"; shift 2
  cat "$@" | awk -v t0="$t0" -v t1="$t1" 'NF >= 6 && $3 ~ /^[0-9]+$/ { end = $5 + $6 / 1e6; start = end - $3 / 1e6;
      if (start >= t0 && start <= t1) print $3 / 1000 }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "0 nan nan nan"; exit }
      i50 = int(0.50 * NR + 0.999999); i99 = int(0.99 * NR + 0.999999);
      printf "%d %.1f %.1f %.1f\n", NR, v[i50], v[i99], v[NR] }'
}
writer_start() { # TABLE LOGPREFIX SECONDS
  sed "s/@TABLE@/$1/" bench/backfill/writer.pgbench >"$RUN/writer-$1.pgbench"
  rm -f "$2".*
  ( cd "$RUN" && exec "$PGBENCH" -h 127.0.0.1 -p "$PORT" -U postgres -n -M simple -c 2 -j 2 -R "$WRITER_RATE" -T "$3" \
      -l --log-prefix="$2" "${PGB_VARS[@]}" -f "$RUN/writer-$1.pgbench" "$DB" >"$2-stdout.txt" 2>&1 ) &
  WRITER_PID=$!
}
# A writer started for longer than needed is interrupted a few seconds after the migration ended
# (pgbench then loses its last buffered log lines, which are outside the measured window).
writer_stop() {
  sleep 3
  kill -TERM "$WRITER_PID" 2>/dev/null || true
  wait "$WRITER_PID" 2>/dev/null || true
  WRITER_PID=""
}
writer_alone() { # TABLE ROUND KIND: the writer alone on a fresh copy, no migration running
  writer_start "$1" "$RUN/wlog-alone-$3-$2" "$WRITER_BASE_SECS"
  wait "$WRITER_PID" || { cat "$RUN/wlog-alone-$3-$2-stdout.txt" >&2; die "the writer failed on $1"; }
  WRITER_PID=""
}

# MIGRATION (backfill | hand | fast) on a fresh copy, with or without the writer; figures go to
# BF[<key>-...,ROUND], key = tp-<migration> (no writer) or wl-<migration> (writer running).
declare -A BF=()
migrate() { # MIGRATION ROUND WRITER(yes|no)
  local m="$1" r="$2" w="$3" key tbl t0 t1 rc=0
  key=$([ "$w" = yes ] && echo "wl-$m" || echo "tp-$m"); tbl="bf_${key//-/_}_$r"
  q -v tbl="$tbl" -f bench/backfill/copy.sql >/dev/null
  if [ "$w" = yes ]; then
    writer_alone "$tbl" "$r" "$m"
    writer_start "$tbl" "$RUN/wlog-$key-$r" 1800
    sleep 1
  fi
  t0=$(now)
  case "$m" in
    backfill) q -c "CALL tenancy.backfill('public.$tbl', '$BF_ORG')" >"$RUN/$key-$r.out" 2>&1 || rc=$? ;;
    hand) { echo '\timing on'; cat bench/backfill/hand.sql; } | q -v tbl="$tbl" -v org="$BF_ORG" >"$RUN/$key-$r.out" 2>&1 || rc=$? ;;
    fast) q -v tbl="$tbl" -v org="$BF_ORG" -f bench/backfill/fast_default.sql >"$RUN/$key-$r.out" 2>&1 || rc=$? ;;
  esac
  t1=$(now)
  [ "$w" = yes ] && writer_stop
  [ "$rc" = 0 ] || { cat "$RUN/$key-$r.out" >&2; die "migration '$m' of $tbl failed"; }
  BF[$key-time,$r]=$(elapsed "$t0" "$t1")
  if [ "$w" = yes ]; then
    read -r BF[$key-n,$r] BF[$key-p50,$r] BF[$key-p99,$r] BF[$key-max,$r] < <(writer_stats "$t0" "$t1" "$RUN/wlog-$key-$r".*)
  fi
  case "$m" in
    hand)  # \timing prints one "Time: <ms> ms" per statement; the third is the UPDATE
      BF[$key-update,$r]=$(awk '/^Time: / { n++; if (n == 3) printf "%.3f", $2 / 1000 }' "$RUN/$key-$r.out") ;;
    backfill)
      BF_NOTICE=$(grep -m1 -B1 'pending_statements' "$RUN/$key-$r.out" | paste -sd' ' || true)
      # tenancy.migration_log: one 'backfill' row per phase that ended (details.phase), timed
      q -F '|' -c "SELECT details->>'phase', status, round(extract(epoch FROM finished_at - started_at)::numeric, 3), details
                     FROM tenancy.migration_log WHERE operation = 'backfill' AND table_name IN ('public.$tbl', '$tbl') ORDER BY id" \
        >"$RUN/$key-$r.log"
      BF[$key-fill,$r]=$(awk -F'|' '$1 == "filling" && $3 != "" { s += $3; n++ } END { if (n) printf "%.3f", s }' "$RUN/$key-$r.log")
      BF[$key-batches,$r]=$(awk -F'|' '$1 == "filling" { if (match($4, /"batches": [0-9]+/)) print substr($4, RSTART + 11, RLENGTH - 11) }' "$RUN/$key-$r.log")
      [ "$w" = no ] && BF_PHASES=$(awk -F'|' '$3 != "" && $3 + 0 >= 0.05 { printf "%s%s %.1f s", sep, $1, $3; sep = ", " }' "$RUN/$key-$r.log")
      # Finish as the NOTICE says: the index statements (CONCURRENTLY), then a second CALL.
      BF_PENDING=$(q -c "SELECT statement FROM tenancy.pending_statements()" | paste -sd';')
      t0=$(now)
      { echo "SELECT statement FROM tenancy.pending_statements() \\gexec"; echo "CALL tenancy.backfill('public.$tbl');"; } |
        q >"$RUN/$key-finish-$r.out" 2>&1 || { cat "$RUN/$key-finish-$r.out" >&2; die "finishing the backfill of $tbl failed"; }
      BF[$key-finish,$r]=$(elapsed "$t0" "$(now)")
      ;;
  esac
  # Every row has the organization, and the column is NOT NULL.
  local bad
  bad=$(q -c "SELECT count(*) FROM public.$tbl WHERE organization_id IS DISTINCT FROM '$BF_ORG'")
  [ "$bad" = 0 ] || die "after migration '$m', $bad rows of $tbl lack organization $BF_ORG"
  [ "$(q -c "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'public.$tbl'::regclass AND attname = 'organization_id'")" = t ] ||
    die "after migration '$m', $tbl.organization_id is nullable"
  q -c "DROP TABLE public.$tbl" >/dev/null
}

# The derived case on a fresh copy of bf_dsrc: tenancy.backfill (parent => bf_parent; with the
# writer, organization_id => the fallback for the rows it inserts without a parent) or the
# hand-written ADD COLUMN + UPDATE ... FROM bf_parent. Figures: BF[d<key>-...,ROUND].
# The backend's private memory (RssAnon of /proc/<pid>/status: palloc'd memory, caches; not the
# shared buffers it touched) is sampled every 0.2 s while a derived backfill is in its filling
# phase (its committed record says 'filling' before and after the reading; the other phases, such
# as a foreign key's validation whose hash table grows with the parent, are not the fill):
# BF[dtp-backfill-rss,ROUND], its largest value in kB.
rss_sampler() { # APPLICATION_NAME TABLE OUTFILE: the largest RssAnon (kB) of that backend while it fills TABLE
  local app="$1" tbl="$2" out="$3" pid="" max=0 v i p1 p2
  local phase="SELECT details->'backfill'->>'phase' FROM tenancy.tenant_tables WHERE relid::oid = to_regclass('public.$tbl')::oid"
  for (( i = 0; i < 400 && ${#pid} == 0; i++ )); do
    pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$app' LIMIT 1")
    [ -n "$pid" ] || sleep 0.05
  done
  echo 0 >"$out"
  [ -n "$pid" ] || return 0
  while [ -e "/proc/$pid" ]; do
    p1=$(q -c "$phase" 2>/dev/null || true)
    v=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    p2=$(q -c "$phase" 2>/dev/null || true)
    if [ "$p1" = filling ] && [ "$p2" = filling ] && [ -n "$v" ] && (( v > max )); then
      max=$v; echo "$max" >"$out"
    fi
    sleep 0.2
  done
}
migrate_derived() { # MIGRATION(backfill|hand) ROUND WRITER(yes|no) [ROWS: the first ROWS rows of bf_dsrc; default all]
  local m="$1" r="$2" w="$3" rows="${4:-ALL}" key tbl t0 t1 rc=0 bad sampler=""
  key=$([ "$w" = yes ] && echo "dwl-$m" || echo "dtp-$m"); tbl="bf_${key//-/_}_$r"
  q -v tbl="$tbl" -v rows="$rows" -f bench/backfill/copy_derived.sql >/dev/null
  if [ "$w" = yes ]; then
    writer_start "$tbl" "$RUN/wlog-$key-$r" 1800
    sleep 1
  fi
  t0=$(now)
  case "$m" in
    backfill)
      if [ "$w" = yes ]; then
        q -c "CALL tenancy.backfill('public.$tbl', '$BF_ORG', parent => 'public.bf_parent')" >"$RUN/$key-$r.out" 2>&1 || rc=$?
      else
        rss_sampler "tenancy_bench_fill_$r" "$tbl" "$RUN/$key-$r.rss" & sampler=$!
        PGAPPNAME="tenancy_bench_fill_$r" q -c "CALL tenancy.backfill('public.$tbl', parent => 'public.bf_parent')" >"$RUN/$key-$r.out" 2>&1 || rc=$?
        wait "$sampler"
        BF[$key-rss,$r]=$(cat "$RUN/$key-$r.rss")
      fi ;;
    hand) { echo '\timing on'; cat bench/backfill/hand_derived.sql; } | q -v tbl="$tbl" >"$RUN/$key-$r.out" 2>&1 || rc=$? ;;
  esac
  t1=$(now)
  [ "$w" = yes ] && writer_stop
  [ "$rc" = 0 ] || { cat "$RUN/$key-$r.out" >&2; die "derived migration '$m' of $tbl failed"; }
  BF[$key-time,$r]=$(elapsed "$t0" "$t1")
  if [ "$w" = yes ]; then
    read -r BF[$key-n,$r] BF[$key-p50,$r] BF[$key-p99,$r] BF[$key-max,$r] < <(writer_stats "$t0" "$t1" "$RUN/wlog-$key-$r".*)
  fi
  case "$m" in
    hand) BF[$key-update,$r]=$(awk '/^Time: / { n++; if (n == 2) printf "%.3f", $2 / 1000 }' "$RUN/$key-$r.out") ;;
    backfill)
      q -F '|' -c "SELECT details->>'phase', status, round(extract(epoch FROM finished_at - started_at)::numeric, 3), details
                     FROM tenancy.migration_log WHERE operation = 'backfill' AND table_name IN ('public.$tbl', '$tbl') ORDER BY id" \
        >"$RUN/$key-$r.log"
      BF[$key-fill,$r]=$(awk -F'|' '$1 == "filling" && $3 != "" { s += $3; n++ } END { if (n) printf "%.3f", s }' "$RUN/$key-$r.log")
      BF[$key-batches,$r]=$(awk -F'|' '$1 == "filling" { if (match($4, /"batches": [0-9]+/)) print substr($4, RSTART + 11, RLENGTH - 11) }' "$RUN/$key-$r.log")
      BF[$key-batchsize,$r]=$(awk -F'|' '$1 == "planned" && $2 == "started" { if (match($4, /"batch_size": [0-9]+/)) print substr($4, RSTART + 14, RLENGTH - 14) }' "$RUN/$key-$r.log")
      # Stopped at awaiting_indexes: undone, so that pending_statements() forgets the table.
      q -c "SELECT tenancy.rollback('public.$tbl')" >/dev/null ;;
  esac
  bad=$(q -c "SELECT count(*) FROM public.$tbl c LEFT JOIN public.bf_parent p ON p.id = c.parent_id
               WHERE c.organization_id IS DISTINCT FROM coalesce(p.organization_id, '$BF_ORG')")
  [ "$bad" = 0 ] || die "after derived migration '$m', $bad rows of $tbl lack their parent's organization"
  q -c "DROP TABLE public.$tbl" >/dev/null
}

say ""
say "== 2. Backfill"
md "## 2. Backfill"
md ""
if [ "$(q -c "SELECT to_regprocedure('$BACKFILL_SIG') IS NOT NULL")" != t ]; then
  say "backfill: tenancy.backfill not installed, skipped"
  log "backfill: tenancy.backfill not installed, skipped"
  md "backfill: tenancy.backfill not installed, skipped (the installed tenancy has no \`$BACKFILL_SIG\`)."
  md ""
else
  log "backfill: fresh copies of the single-tenant table ($(num "$N_ROWS") rows, no organization_id), $BF_ROUNDS rounds"
  q -v n_orgs="$N_ORGS" -f bench/backfill/setup.sql >/dev/null
  for (( r = 0; r < BF_ROUNDS; r++ )); do
    # throughput: the two alone, order alternating
    order=(backfill hand); (( r % 2 )) && order=(hand backfill)
    for m in "${order[@]}"; do migrate "$m" "$r" no; done
    BF[thr,$r]=$(ratio "${BF[tp-hand-time,$r]}" "${BF[tp-backfill-time,$r]}")
    # No 'filling' phase on the metadata-only path: n/a.
    BF[fillthr,$r]=nan; [ -n "${BF[tp-backfill-fill,$r]}" ] && BF[fillthr,$r]=$(ratio "${BF[tp-hand-update,$r]}" "${BF[tp-backfill-fill,$r]}")
    # latency: the writer alone on each copy, then during each migration
    for m in "${order[@]}" fast; do migrate "$m" "$r" yes; done
    read -r BF[alone-n,$r] BF[alone-p50,$r] BF[alone-p99,$r] BF[alone-max,$r] < <(writer_stats 0 1e12 "$RUN"/wlog-alone-*-"$r".*)
    BF[wthr,$r]=$(ratio "${BF[wl-hand-time,$r]}" "${BF[wl-backfill-time,$r]}")
    BF[fixed,$r]=$(ratio "${BF[tp-backfill-time,$r]}" "${BF[tp-hand-time,$r]}")
    # derived: the fill alone, order alternating, then with the writer
    for m in "${order[@]}"; do migrate_derived "$m" "$r" no; done
    migrate_derived backfill "$r" yes
    # memory: the same fill of a fifth of the rows, for its backend's peak private memory
    (( r == 0 )) && migrate_derived backfill small no $(( N_ROWS / 5 ))
    BF[dthr,$r]=$(ratio "${BF[dtp-hand-update,$r]}" "${BF[dtp-backfill-fill,$r]}")
    log "  round $(( r + 1 ))/$BF_ROUNDS, derived: fill ${BF[dtp-backfill-fill,$r]} s in ${BF[dtp-backfill-batches,$r]} batches of ${BF[dtp-backfill-batchsize,$r]} rows," \
        "UPDATE ... FROM parent ${BF[dtp-hand-update,$r]} s; with the writer: first CALL ${BF[dwl-backfill-time,$r]} s, writer p50/p99/max ms" \
        "${BF[dwl-backfill-p50,$r]}/${BF[dwl-backfill-p99,$r]}/${BF[dwl-backfill-max,$r]}"
    log "  round $(( r + 1 ))/$BF_ROUNDS: alone: first CALL ${BF[tp-backfill-time,$r]} s (fill ${BF[tp-backfill-fill,$r]} s in ${BF[tp-backfill-batches,$r]} batches), hand-written ${BF[tp-hand-time,$r]} s (UPDATE ${BF[tp-hand-update,$r]} s);" \
        "with the writer: first CALL ${BF[wl-backfill-time,$r]} s, hand-written ${BF[wl-hand-time,$r]} s, fast default ${BF[wl-fast-time,$r]} s;" \
        "writer p50/p99/max ms: alone ${BF[alone-p50,$r]}/${BF[alone-p99,$r]}/${BF[alone-max,$r]}, backfill ${BF[wl-backfill-p50,$r]}/${BF[wl-backfill-p99,$r]}/${BF[wl-backfill-max,$r]}," \
        "hand-written ${BF[wl-hand-p50,$r]}/${BF[wl-hand-p99,$r]}/${BF[wl-hand-max,$r]}, fast default ${BF[wl-fast-p50,$r]}/${BF[wl-fast-p99,$r]}/${BF[wl-fast-max,$r]}"
  done
  THR=$(med BF thr "$BF_ROUNDS"); FILLTHR=$(med BF fillthr "$BF_ROUNDS"); WTHR=$(med BF wthr "$BF_ROUNDS"); W99=$(med BF wl-backfill-p99 "$BF_ROUNDS")
  V_THR=$(verdict "$THR" 0.8 '>='); V_FILL=$(verdict "$FILLTHR" 0.8 '>='); V_W99=$(verdict "$W99" 50)
  FIXED=$(med BF fixed "$BF_ROUNDS"); V_FIXED=$(verdict "$FIXED" 0.05)
  WMAX=$(med BF wl-backfill-max "$BF_ROUNDS"); V_WMAX=$(verdict "$WMAX" 1000)
  DTHR=$(med BF dthr "$BF_ROUNDS"); V_DTHR=$(verdict "$DTHR" 1.0 '>=')
  DW99=$(med BF dwl-backfill-p99 "$BF_ROUNDS"); V_DW99=$(verdict "$DW99" 50)
  DBATCH=$(med BF dtp-backfill-batchsize "$BF_ROUNDS")
  RSS_BIG=$(med BF dtp-backfill-rss "$BF_ROUNDS"); RSS_SMALL=${BF[dtp-backfill-rss,small]:-0}
  RSS_RATIO=$(ratio "$RSS_BIG" "$RSS_SMALL"); V_RSS=$(verdict "$RSS_RATIO" 1.10)
  DBATCH_MS=$(awk -v f="$(med BF dtp-backfill-fill "$BF_ROUNDS")" -v b="$(med BF dtp-backfill-batches "$BF_ROUNDS")" 'BEGIN { if (b > 0) printf "%.0f", 1000 * f / b }')
  BATCH_MS=$(awk -v f="$(med BF tp-backfill-fill "$BF_ROUNDS")" -v b="$(med BF tp-backfill-batches "$BF_ROUNDS")" 'BEGIN { if (b > 0) printf "%.0f", 1000 * f / b }')
  say "throughput, backfill / one UPDATE (time of the hand-written steps / of the first CALL): $(fmt "$THR" 3) [>= 0.8 $V_THR]"
  say "throughput, fill phase only (UPDATE statement / 'filling' in migration_log):          $(fmt "$FILLTHR" 3) [>= 0.8 $V_FILL]"
  say "throughput with the writer running:                                                    $(fmt "$WTHR" 3)"
  say "concurrent writer p99 during the backfill: $(fmt "$W99" 1) ms [<= 50 ms $V_W99] (alone: $(med BF alone-p99 "$BF_ROUNDS") ms; during the hand-written UPDATE: $(med BF wl-hand-p99 "$BF_ROUNDS") ms)"
  say "fixed organization, first CALL / the hand-written runbook (time):                       $(fmt "$FIXED" 3) [<= 0.05 $V_FIXED] ($(fmt "$(med BF tp-backfill-time "$BF_ROUNDS")" 2) s / $(fmt "$(med BF tp-hand-time "$BF_ROUNDS")" 2) s)"
  say "concurrent writer max during the backfill: $(fmt "$WMAX" 1) ms [<= lock_timeout 1000 ms $V_WMAX]"
  say "derived (parent FK), one UPDATE ... FROM parent / 'filling' in migration_log:          $(fmt "$DTHR" 3) [>= 1.0 $V_DTHR] ($(fmt "$(med BF dtp-hand-update "$BF_ROUNDS")" 2) s / $(fmt "$(med BF dtp-backfill-fill "$BF_ROUNDS")" 2) s, batches of $DBATCH rows, ${DBATCH_MS} ms each)"
  say "concurrent writer p99 during the derived backfill: $(fmt "$DW99" 1) ms [<= 50 ms $V_DW99] (max $(fmt "$(med BF dwl-backfill-max "$BF_ROUNDS")" 1) ms)"
  say "memory, the backend's peak private memory (RssAnon) during the derived fill, $(num "$N_ROWS") rows / $(num $(( N_ROWS / 5 ))) rows: $(fmt "$RSS_RATIO" 3) [<= 1.10 $V_RSS] ($(mb "$RSS_BIG") MB / $(mb "$RSS_SMALL") MB)"
  wl() { echo "$(fmt "$(med BF "$1-p50" "$BF_ROUNDS")" 1) / ${2:-}$(fmt "$(med BF "$1-p99" "$BF_ROUNDS")" 1)${2:-} / $(fmt "$(med BF "$1-max" "$BF_ROUNDS")" 1) ms ($(fmt "$(med BF "$1-n" "$BF_ROUNDS")" 0) transactions)"; }
  md "$(num "$N_ROWS") rows (the tenant table before multi-tenancy: no \`organization_id\`), every row set to one organization, on fresh identical"
  md "copies: the first \`CALL tenancy.backfill('t', '<org>')\` (defaults: batch_size 10000, build_indexes false, so it stops at \`awaiting_indexes\`)"
  md "vs the hand-written runbook (\`bench/backfill/hand.sql\`: ADD COLUMN, SET DEFAULT, \`UPDATE t SET organization_id = '<org>'\`, SET NOT NULL,"
  md "ADD FOREIGN KEY, each in its own transaction). Throughput: the two alone, order alternating. Latency: a writer (\`bench/backfill/writer.pgbench\`:"
  md "UPDATE one row and INSERT one per transaction, pgbench \`-c 2 -R $WRITER_RATE\`, latency counted from the scheduled start) writes to the table"
  md "while it is migrated; \"alone\" is the same writer for $WRITER_BASE_SECS s on each copy before its migration. $BF_ROUNDS rounds; medians."
  md ""
  md "| figure | value | target |"
  md "|---|---:|---|"
  md "| throughput, backfill / one UPDATE: all hand-written steps $(fmt "$(med BF tp-hand-time "$BF_ROUNDS")" 1) s / first CALL $(fmt "$(med BF tp-backfill-time "$BF_ROUNDS")" 1) s | $(fmt "$THR" 3) | ≥ 0.8 **$V_THR** |"
  md "| throughput, fill phase only: the UPDATE statement $(fmt "$(med BF tp-hand-update "$BF_ROUNDS")" 1) s / the \`filling\` phase in \`tenancy.migration_log\` $(fmt "$(med BF tp-backfill-fill "$BF_ROUNDS")" 1) s ($(med BF tp-backfill-batches "$BF_ROUNDS") batches, ${BATCH_MS} ms each) | $(fmt "$FILLTHR" 3) | ≥ 0.8 **$V_FILL** |"
  md "| throughput with the writer running: $(fmt "$(med BF wl-hand-time "$BF_ROUNDS")" 1) s / $(fmt "$(med BF wl-backfill-time "$BF_ROUNDS")" 1) s (the hand-written UPDATE blocks the writer; the backfill shares the machine with it) | $(fmt "$WTHR" 3) | |"
  md "| writer p50 / p99 / max, alone | $(wl alone) | |"
  md "| writer p50 / p99 / max, during the backfill's first CALL | $(wl wl-backfill '**') | p99 ≤ 50 ms **$V_W99** |"
  md "| writer p50 / p99 / max, during the hand-written migration | $(wl wl-hand) | |"
  md "| fixed organization: first CALL $(fmt "$(med BF tp-backfill-time "$BF_ROUNDS")" 2) s / all hand-written steps $(fmt "$(med BF tp-hand-time "$BF_ROUNDS")" 1) s (the metadata-only path) | $(fmt "$FIXED" 3) | ≤ 0.05 **$V_FIXED** |"
  md "| writer max during the backfill's first CALL | $(fmt "$WMAX" 1) ms | ≤ lock_timeout 1000 ms **$V_WMAX** |"
  md "| derived (\`parent =>\`, \`bench/backfill/copy_derived.sql\`): \`UPDATE ... FROM parent\` $(fmt "$(med BF dtp-hand-update "$BF_ROUNDS")" 1) s / the \`filling\` phase $(fmt "$(med BF dtp-backfill-fill "$BF_ROUNDS")" 1) s (batches of $DBATCH rows, ${DBATCH_MS} ms each) | $(fmt "$DTHR" 3) | ≥ 1.0 **$V_DTHR** |"
  md "| writer p50 / p99 / max, during the derived backfill's first CALL (with a fallback organization for its rows) | $(wl dwl-backfill '**') | p99 ≤ 50 ms **$V_DW99** |"
  md "| memory: the backend's peak private memory (\`RssAnon\` in /proc/<pid>/status, sampled every 0.2 s; not the shared buffers it read) while the derived backfill is in its filling phase: $(num "$N_ROWS") rows $(mb "$RSS_BIG") MB / of $(num $(( N_ROWS / 5 ))) rows $(mb "$RSS_SMALL") MB | $(fmt "$RSS_RATIO" 3) | ≤ 1.10 **$V_RSS** |"
  md "| the index statements of \`pending_statements()\` + the second CALL | $(fmt "$(med BF tp-backfill-finish "$BF_ROUNDS")" 1) s | |"
  md "| for comparison: \`ADD COLUMN ... NOT NULL DEFAULT '<org>'\` + FK \`NOT VALID\` + \`VALIDATE\` (\`bench/backfill/fast_default.sql\`), with the writer | $(fmt "$(med BF wl-fast-time "$BF_ROUNDS")" 2) s, writer $(wl wl-fast) | |"
  md ""
  md "Phases of a first CALL taking 0.05 s or more (\`tenancy.migration_log\`): $BF_PHASES."
  if [ -n "${BF_NOTICE:-}" ]; then md "It ended with: \`${BF_NOTICE}\`"; fi
  md "\`pending_statements()\` then gave: \`${BF_PENDING:-none}\`."
  md ""
fi

if [ "$ONLY" = backfill ]; then
  printf '%s\n' "${MD2[@]}" >"$RUN/backfill.md"
  log "part 2 alone: $RUN/backfill.md (BENCHMARKS.md untouched)"
  exit 0
fi

lifecycle_part

# ==================================================================================================
# BENCHMARKS.md
# ==================================================================================================
ELAPSED=$(( $(date +%s) - START_TS ))
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
RAM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
PGV=$(q -c "SHOW server_version")
EXTV=$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'")
SO="$("$PG_BIN/pg_config" --pkglibdir)/tenancy.so"
SO_BUILD="tenancy.so installed $(date -u -r "$SO" '+%Y-%m-%d %H:%M UTC') (the run used a copy taken at its start)"
# Which build it was: the copy taken at the start is compared with cargo's outputs.
if cmp -s "$SO" "$ROOT/target/release/libtenancy.so"; then
  SO_BUILD+=", cargo's **release** profile (\`TENANCY_RELEASE=1 bash scripts/setup.sh\`)"
elif cmp -s "$SO" "$ROOT/target/debug/libtenancy.so"; then
  SO_BUILD+=", **cargo's dev profile, unoptimized** (what \`scripts/setup.sh\` installs unless \`TENANCY_RELEASE=1\`)"
else
  SO_BUILD+=", a build that is neither of this checkout's target/release nor target/debug"
fi
CMD="bash scripts/bench.sh"; [ "$SIZE" = quick ] && CMD+=" --quick"
{
  echo "# Benchmarks"
  echo ""
  if [ "$SIZE" = quick ]; then
    echo "**Quick run** (reduced data set, few rounds: a smoke test, not the reference figures). Written by \`$CMD\`."
  else
    echo "Written by \`$CMD\`. Every figure is a ratio of variants measured side by side in the same run, alternating round by round."
  fi
  echo ""
  echo '```bash'
  echo "bash scripts/setup.sh   # PostgreSQL 15 with pgbench, tenancy installed"
  echo "$CMD"
  echo '```'
  echo ""
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC'); the run took $(( ELAPSED / 60 )) min $(( ELAPSED % 60 )) s |"
  echo "| machine | $(nproc) CPUs ($CPU), $RAM RAM; other work was running on it |"
  echo "| PostgreSQL | $PGV; a throwaway cluster with **fsync = off** (scripts/cluster.sh), $(printf '%s, ' "${CLUSTER_CONF[@]}" | sed 's/, $//'), synchronous_commit on; the rest default (JIT on, 2 parallel workers per gather) |"
  echo "| tenancy | $EXTV; $SO_BUILD |"
  echo "| data | $(num "$N_ORGS") organizations, $(num "$N_USERS") users (+20 with deactivated or inactive memberships), $(num "$N_ROWS") rows in the tenant table with Zipf-sized tenants ($SKEW), ${TABLE_MB} MB with its indexes; one copy per variant |"
  echo ""
  printf '%s\n' "${MD1[@]}" "${MD2[@]}" "${MD3[@]}" "${MD4[@]}" "${MD5[@]}"
} >"$OUT"
log "wrote $OUT"
log "done in $(( ELAPSED / 60 )) min $(( ELAPSED % 60 )) s"
