//! `tenancy.validate_client_data_integrity()`: one row per registered tenant table.
//!
//! Each table is read once: a single scan counts rows, NULL tenant values, tenant values that
//! name no organization (an anti-join against tenancy.organizations) and rows whose foreign key
//! points at another tenant's row (a join per foreign key to another tenant table, on the
//! parent's key). The rest comes from the catalogs. Plain SELECTs take ACCESS SHARE locks only,
//! so writers are never blocked.
//!
//! Who reads the rows, so that the report is honest and can be run safely by anyone:
//! * a table the caller may not SELECT is not read: its row says so (`note`) and is not ok;
//! * for a tenancy administrator (also outside any SECURITY DEFINER function), the scan runs
//!   with row-level security bypassed, so that it sees every row, *only* when it can run no code
//!   of the table's owner: every table it reads is a plain or partitioned table (no foreign
//!   table anywhere in its tree) and every column it compares has a built-in type (no
//!   user-defined cast or operator). It then runs as the bootstrap superuser in a
//!   security-restricted operation, and returns counts only;
//! * an administrator whose table fails that test gets a scan as the table's owner (in a
//!   security-restricted operation: the owner's policies run with the owner's rights, never the
//!   administrator's); anybody else gets a scan with their own rights, as their own SELECT would;
//! * `saw_every_row` says whether row-level security hid rows from that scan; a report that
//!   could not see every row is never ok.
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::errors::{spi, Error};
use crate::security::{self, AsRole};

/// table_name, tenant_column, total_rows, null_rows, orphan_rows, cross_tenant_rows, not_null,
/// fk_validated, tenant_index, rls_enabled, rls_forced, policies_complete, saw_every_row, ok, note
type IntegrityRow = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    Option<String>,
);

struct Registered {
    label: String,
    oid: Option<pg_sys::Oid>,
    column: String,
    column_type: String,
}

fn registered(only: Option<pg_sys::Oid>) -> Vec<Registered> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT coalesce(c.oid::regclass::text, t.relid::oid::text), c.oid, \
                    t.tenant_column::text, t.column_type \
               FROM tenancy.tenant_tables t LEFT JOIN pg_catalog.pg_class c ON c.oid = t.relid \
              WHERE $1 IS NULL OR t.relid::oid = $1 \
              ORDER BY 1",
            None,
            &[only.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(Registered {
                label: r.get::<String>(1)?.unwrap_or_default(),
                oid: r.get::<pg_sys::Oid>(2)?,
                column: r.get::<String>(3)?.unwrap_or_default(),
                column_type: r.get::<String>(4)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }))
}

/// What the catalogs say about a tenant table: NOT NULL, a validated foreign key to the
/// organizations, an index leading with the tenant column, RLS enabled and forced, and a
/// permissive policy for each of SELECT, INSERT, UPDATE, DELETE. For a partitioned table, RLS
/// and the policies must hold on every partition too (a partition read directly is checked
/// against its own policies, not its parent's).
const CATALOG_FACTS: &str = include_str!("queries/catalog_facts.sql");

/// A foreign key from a tenant table to another tenant table that does not carry the tenant
/// column.
struct CrossFk {
    parent: pg_sys::Oid,
    parent_name: String,
    parent_column: String,
    columns: Vec<String>,
    parent_columns: Vec<String>,
}

/// Foreign keys from the table to other tenant tables that do not carry the tenant column: a
/// row can point at another tenant's row.
const CROSS_FKS: &str =
    "SELECT con.confrelid, con.confrelid::pg_catalog.regclass::pg_catalog.text, p.tenant_column::pg_catalog.text, \
        tenancy._att_names(con.conrelid, con.conkey), tenancy._att_names(con.confrelid, con.confkey) \
   FROM pg_catalog.pg_constraint con \
   JOIN tenancy.tenant_tables p ON p.relid = con.confrelid::pg_catalog.regclass \
   JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attname = $2::pg_catalog.name \
  WHERE con.conrelid = $1 AND con.contype = 'f' AND con.confrelid <> con.conrelid AND NOT a.attnum = ANY (con.conkey) \
  ORDER BY con.conname";

/// How the scan of one table runs (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Row-level security bypassed, as the bootstrap superuser: only when no code of any owner
    /// can run.
    AllRows,
    /// As the table's owner, for an administrator whose table could run its owner's code.
    Owner(pg_sys::Oid),
    /// As the caller.
    Caller,
}

/// The type of column `column` of `rel` with domains resolved, if the column exists.
fn base_type(rel: pg_sys::Oid, column: &str) -> Option<pg_sys::Oid> {
    let typ = spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT a.atttypid FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = $1 AND a.attname = $2::pg_catalog.name AND a.attnum > 0 AND NOT a.attisdropped",
        &[rel.into(), column.into()],
    ))?;
    // SAFETY: a syscache lookup that resolves domains to the type they are based on.
    Some(unsafe { pg_sys::getBaseType(typ) })
}

/// Could a scan of these relations, comparing these columns, run code of their owners? Yes when a
/// relation in their inheritance trees is not a plain or partitioned table (a foreign table runs
/// its wrapper), or a compared column's type (after domains) is not built in (its casts and
/// operators would be its owner's).
pub(crate) fn owner_code_could_run(rels: &[pg_sys::Oid], columns: &[(pg_sys::Oid, &str)]) -> bool {
    let not_tables = spi(Spi::get_one_with_args::<bool>(
        "WITH RECURSIVE tree AS ( \
             SELECT r AS relid FROM pg_catalog.unnest($1::pg_catalog.oid[]) r \
             UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid) \
         SELECT EXISTS (SELECT 1 FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid \
                         WHERE c.relkind NOT IN ('r', 'p'))",
        &[rels.to_vec().into()],
    ))
    .unwrap_or(true);
    not_tables
        || columns
            .iter()
            .any(|(rel, col)| base_type(*rel, col).is_none_or(|t| t.to_u32() >= pg_sys::FirstNormalObjectId))
}

fn may_select(rel: pg_sys::Oid) -> bool {
    // SAFETY: a privilege check for the current role.
    unsafe {
        pg_sys::pg_class_aclcheck(rel, security::current_role(), pg_sys::ACL_SELECT as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Does row-level security hide rows of `rel` from the current role?
fn rls_hides_rows(rel: pg_sys::Oid) -> bool {
    spi(Spi::get_one_with_args::<bool>("SELECT pg_catalog.row_security_active($1)", &[rel.into()])).unwrap_or(true)
}

fn catalog_facts(oid: pg_sys::Oid, column: &str) -> [bool; 6] {
    spi(Spi::connect(|c| {
        let r = c.select(CATALOG_FACTS, Some(1), &[oid.into(), column.into()])?;
        let mut f = [false; 6];
        if !r.is_empty() {
            let r = r.first();
            for (i, v) in f.iter_mut().enumerate() {
                *v = r.get::<bool>(i + 1)?.unwrap_or(false);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(f)
    }))
}

fn cross_fks(oid: pg_sys::Oid, column: &str) -> Vec<CrossFk> {
    spi(Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(CROSS_FKS, None, &[oid.into(), column.into()])? {
            out.push(CrossFk {
                parent: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                parent_name: r.get::<String>(2)?.unwrap_or_default(),
                parent_column: r.get::<String>(3)?.unwrap_or_default(),
                columns: r.get::<Vec<String>>(4)?.unwrap_or_default(),
                parent_columns: r.get::<Vec<String>>(5)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// The one scan of a table: (total, NULL tenant, orphan tenant, crossing tenants). Built from
/// catalog facts only: relation names as regclass prints them (qualified and quoted under the
/// pinned search_path), every column quoted.
fn scan_sql(t: &Registered, fks: &[CrossFk]) -> String {
    let col = quote_identifier(&t.column);
    let key = if t.column_type == "text" { "slug" } else { "id" };
    let mut joins = String::new();
    let mut cross = Vec::new();
    for (i, fk) in fks.iter().enumerate() {
        let on: Vec<String> = fk
            .columns
            .iter()
            .zip(&fk.parent_columns)
            .map(|(c, p)| format!("p{i}.{} OPERATOR(pg_catalog.=) t.{}", quote_identifier(p), quote_identifier(c)))
            .collect();
        joins.push_str(&format!(" LEFT JOIN {} p{i} ON {}", fk.parent_name, on.join(" AND ")));
        cross.push(format!(
            "(p{i}.ctid IS NOT NULL AND p{i}.{} IS DISTINCT FROM t.{col})",
            quote_identifier(&fk.parent_column)
        ));
    }
    let cross_expr = if cross.is_empty() { "false".to_owned() } else { cross.join(" OR ") };
    format!(
        "SELECT pg_catalog.count(*)::pg_catalog.int8, \
                pg_catalog.count(*) FILTER (WHERE t.{col} IS NULL)::pg_catalog.int8, \
                pg_catalog.count(*) FILTER (WHERE t.{col} IS NOT NULL AND o.{key} IS NULL)::pg_catalog.int8, \
                pg_catalog.count(*) FILTER (WHERE {cross_expr})::pg_catalog.int8 \
           FROM {tbl} t LEFT JOIN tenancy.organizations o ON o.{key} OPERATOR(pg_catalog.=) t.{col}{joins}",
        tbl = t.label
    )
}

type Counts = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Run the scan as `reader`; also says whether row-level security hid rows from it.
fn scan(reader: Reader, sql: &str, rels: &[pg_sys::Oid]) -> (Counts, bool) {
    let run = || {
        let hidden = rels.iter().any(|r| rls_hides_rows(*r));
        let counts = spi(Spi::connect(|c| {
            // No row limit: with one, Postgres runs the query without parallel workers.
            let row = c.select(sql, None, &[])?.first();
            Ok::<_, pgrx::spi::SpiError>((
                row.get::<i64>(1)?,
                row.get::<i64>(2)?,
                row.get::<i64>(3)?,
                row.get::<i64>(4)?,
            ))
        }));
        (counts, !hidden)
    };
    match reader {
        Reader::AllRows => {
            let _su = AsRole::switch_to(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
            run()
        }
        Reader::Owner(owner) => {
            let _owner = AsRole::switch_to(owner);
            run()
        }
        Reader::Caller => run(),
    }
}

fn check(t: &Registered, admin: bool) -> IntegrityRow {
    let not_scanned = |note: String, facts: [bool; 6]| -> IntegrityRow {
        let [a, b, c, d, e, f] = facts;
        (t.label.clone(), t.column.clone(), None, None, None, None, a, b, c, d, e, f, false, false, Some(note))
    };
    let Some(oid) = t.oid else {
        return not_scanned("the table no longer exists".into(), [false; 6]);
    };
    let facts = catalog_facts(oid, &t.column);
    if !may_select(oid) {
        return not_scanned(format!("not read: {} may not SELECT from it", current_role_name()), facts);
    }
    let mut fks = cross_fks(oid, &t.column);
    let mut notes = Vec::new();
    let unreadable: Vec<String> = fks.iter().filter(|f| !may_select(f.parent)).map(|f| f.parent_name.clone()).collect();
    if !unreadable.is_empty() {
        fks.retain(|f| may_select(f.parent));
        notes.push(format!("cross-tenant references not counted: may not SELECT from {}", unreadable.join(", ")));
    }
    let mut rels = vec![oid];
    rels.extend(fks.iter().map(|f| f.parent));
    // The scan joins the organizations too: what their row-level security hides (to anybody but
    // an administrator) would count as orphans, so it counts for saw_every_row as well.
    rels.extend(crate::catalog::organizations_relid());
    let mut columns: Vec<(pg_sys::Oid, &str)> = vec![(oid, t.column.as_str())];
    for f in &fks {
        columns.push((f.parent, f.parent_column.as_str()));
        columns.extend(f.columns.iter().map(|c| (oid, c.as_str())));
        columns.extend(f.parent_columns.iter().map(|c| (f.parent, c.as_str())));
    }
    let reader = if !admin {
        Reader::Caller
    } else if owner_code_could_run(&rels, &columns) {
        notes.push("read as the table's owner: a table in its tree is not a plain table, or a compared column has a user-defined type".into());
        Reader::Owner(security::relation_owner(oid).map_or(security::current_role(), |(o, _)| o))
    } else {
        Reader::AllRows
    };
    let sql = scan_sql(t, &fks);
    let ((total, nulls, orphans, crossing), saw_every_row) = scan(reader, &sql, &rels);
    if !saw_every_row {
        notes.push("row-level security hid rows from this scan: the counts are of the visible rows only".into());
    }
    let [not_null, fk_validated, tenant_index, rls_enabled, rls_forced, policies_complete] = facts;
    let zero = |v: Option<i64>| v == Some(0);
    let ok = saw_every_row
        && unreadable.is_empty()
        && zero(nulls)
        && zero(orphans)
        && zero(crossing)
        && facts.iter().all(|f| *f);
    (
        t.label.clone(),
        t.column.clone(),
        total,
        nulls,
        orphans,
        crossing,
        not_null,
        fk_validated,
        tenant_index,
        rls_enabled,
        rls_forced,
        policies_complete,
        saw_every_row && unreadable.is_empty(),
        ok,
        (!notes.is_empty()).then(|| notes.join("; ")),
    )
}

fn current_role_name() -> String {
    spi(Spi::get_one::<String>("SELECT current_user::pg_catalog.text")).unwrap_or_default()
}

fn report(only: Option<pg_sys::Oid>) -> Vec<IntegrityRow> {
    // A tenancy administrator acting as itself (not through somebody's SECURITY DEFINER function).
    let admin = crate::context::acting_administrator();
    registered(only).iter().map(|t| check(t, admin)).collect()
}

/// One row per registered tenant table: total rows, rows with a NULL tenant, rows whose tenant
/// is not an existing organization, rows pointing (by a foreign key) at another tenant's row, the
/// catalog facts (NOT NULL, validated FK, tenant index, RLS enabled and forced, a policy for each
/// command), and ok when every count is zero and every fact holds.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx takes the result columns from the name!() list here: no type alias
pub fn validate_client_data_integrity() -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(tenant_column, String),
        name!(total_rows, Option<i64>),
        name!(null_rows, Option<i64>),
        name!(orphan_rows, Option<i64>),
        name!(cross_tenant_rows, Option<i64>),
        name!(not_null, bool),
        name!(fk_validated, bool),
        name!(tenant_index, bool),
        name!(rls_enabled, bool),
        name!(rls_forced, bool),
        name!(policies_complete, bool),
        name!(saw_every_row, bool),
        name!(ok, bool),
        name!(note, Option<String>),
    ),
> {
    TableIterator::new(report(None))
}

/// The same report for one table, which must be registered.
/// Internal: the public form is `tenancy.validate_client_data_integrity(tbl regclass)`.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx takes the result columns from the name!() list here: no type alias
pub fn _table_integrity(
    tbl: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(tenant_column, String),
        name!(total_rows, Option<i64>),
        name!(null_rows, Option<i64>),
        name!(orphan_rows, Option<i64>),
        name!(cross_tenant_rows, Option<i64>),
        name!(not_null, bool),
        name!(fk_validated, bool),
        name!(tenant_index, bool),
        name!(rls_enabled, bool),
        name!(rls_forced, bool),
        name!(policies_complete, bool),
        name!(saw_every_row, bool),
        name!(ok, bool),
        name!(note, Option<String>),
    ),
> {
    let rows = registered(Some(tbl));
    if rows.is_empty() {
        // Read-only SPI: this function is STABLE, so it must not assign a transaction id.
        let name: String = spi(Spi::connect(|c| {
            c.select("SELECT $1::pg_catalog.regclass::text", Some(1), &[tbl.into()])?.first().get_one::<String>()
        }))
        .unwrap_or_default();
        Error::not_registered("validate_client_data_integrity", &name)
    }
    TableIterator::new(report(Some(tbl)))
}
