//! `tenancy.validate_client_data_integrity()`: one row per registered tenant table.
//!
//! Each table is read once: a single scan counts rows, NULL tenant values, tenant values that
//! name no organization (an anti-join against tenancy.organizations) and rows whose foreign key
//! points at another tenant's row (a join per foreign key to another tenant table, on the
//! parent's key). The rest comes from the catalogs. Plain SELECTs take ACCESS SHARE locks only,
//! so writers are never blocked.
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise, spi};

/// table_name, tenant_column, total_rows, null_rows, orphan_rows, cross_tenant_rows, not_null,
/// fk_validated, tenant_index, rls_enabled, rls_forced, policies_complete, ok
type IntegrityRow = (String, String, i64, i64, i64, i64, bool, bool, bool, bool, bool, bool, bool);

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
/// permissive policy for each of SELECT, INSERT, UPDATE, DELETE.
const CATALOG_FACTS: &str = "SELECT a.attnotnull, \
        EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conrelid = c.oid AND con.contype = 'f' \
                   AND con.confrelid = 'tenancy.organizations'::pg_catalog.regclass AND con.conkey = ARRAY[a.attnum] \
                   AND con.convalidated), \
        EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum \
                   AND i.indisvalid AND i.indpred IS NULL), \
        c.relrowsecurity, c.relforcerowsecurity, \
        (SELECT count(DISTINCT x) = 4 FROM pg_catalog.pg_policy p, \
                pg_catalog.unnest(CASE p.polcmd WHEN '*' THEN '{r,a,w,d}'::text[] ELSE ARRAY[p.polcmd::text] END) x \
          WHERE p.polrelid = c.oid AND p.polpermissive) \
   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2::name \
  WHERE c.oid = $1";

/// Foreign keys from the table to other tenant tables that do not carry the tenant column: a
/// row can point at another tenant's row. (parent, parent tenant column, key columns, parent key columns)
const CROSS_FKS: &str = "SELECT con.confrelid::pg_catalog.regclass::text, p.tenant_column::text, \
        tenancy._att_names(con.conrelid, con.conkey), tenancy._att_names(con.confrelid, con.confkey) \
   FROM pg_catalog.pg_constraint con \
   JOIN tenancy.tenant_tables p ON p.relid = con.confrelid::pg_catalog.regclass \
   JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attname = $2::name \
  WHERE con.conrelid = $1 AND con.contype = 'f' AND con.confrelid <> con.conrelid AND NOT a.attnum = ANY (con.conkey) \
  ORDER BY con.conname";

fn check(t: &Registered) -> IntegrityRow {
    let Some(oid) = t.oid else {
        return (t.label.clone(), t.column.clone(), 0, 0, 0, 0, false, false, false, false, false, false, false);
    };
    let (facts, fks) = spi(Spi::connect(|c| {
        let r = c.select(CATALOG_FACTS, Some(1), &[oid.into(), t.column.as_str().into()])?;
        let facts = if r.is_empty() {
            [false; 6]
        } else {
            let r = r.first();
            let mut f = [false; 6];
            for (i, v) in f.iter_mut().enumerate() {
                *v = r.get::<bool>(i + 1)?.unwrap_or(false);
            }
            f
        };
        let mut fks = Vec::new();
        for r in c.select(CROSS_FKS, None, &[oid.into(), t.column.as_str().into()])? {
            fks.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<Vec<String>>(3)?.unwrap_or_default(),
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>((facts, fks))
    }));
    let col = quote_identifier(&t.column);
    let key = if t.column_type == "text" { "slug" } else { "id" };
    // One scan of the table: each parent is joined on its key (a unique index) and a row counts as
    // cross-tenant when the row it points at belongs to another organization.
    let mut joins = String::new();
    let mut cross = Vec::new();
    for (i, (parent, pcol, cols, pcols)) in fks.iter().enumerate() {
        let on: Vec<String> = cols
            .iter()
            .zip(pcols)
            .map(|(c, p)| format!("p{i}.{} = t.{}", quote_identifier(p), quote_identifier(c)))
            .collect();
        joins.push_str(&format!(" LEFT JOIN {parent} p{i} ON {}", on.join(" AND ")));
        cross.push(format!("(p{i}.ctid IS NOT NULL AND p{i}.{} IS DISTINCT FROM t.{col})", quote_identifier(pcol)));
    }
    let cross_expr = if cross.is_empty() { "false".to_owned() } else { cross.join(" OR ") };
    // regclass output is schema-qualified and quoted (search_path is pinned to pg_catalog).
    let sql = format!(
        "SELECT count(*)::bigint, \
                count(*) FILTER (WHERE t.{col} IS NULL)::bigint, \
                count(*) FILTER (WHERE t.{col} IS NOT NULL AND o.{key} IS NULL)::bigint, \
                count(*) FILTER (WHERE {cross_expr})::bigint \
           FROM {tbl} t LEFT JOIN tenancy.organizations o ON o.{key} = t.{col}{joins}",
        tbl = t.label
    );
    let (total, nulls, orphans, crossing) = spi(Spi::connect(|c| {
        // No row limit: with one, Postgres runs the query without parallel workers.
        let row = c.select(&sql, None, &[])?.first();
        Ok((row.get::<i64>(1)?, row.get::<i64>(2)?, row.get::<i64>(3)?, row.get::<i64>(4)?))
    }));
    let (total, nulls, orphans, crossing) =
        (total.unwrap_or(0), nulls.unwrap_or(0), orphans.unwrap_or(0), crossing.unwrap_or(0));
    let [not_null, fk_validated, tenant_index, rls_enabled, rls_forced, policies_complete] = facts;
    let ok = nulls == 0 && orphans == 0 && crossing == 0 && facts.iter().all(|f| *f);
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
        ok,
    )
}

/// One row per registered tenant table: total rows, rows with a NULL tenant, rows whose tenant
/// is not an existing organization, rows pointing (by a foreign key) at another tenant's row, the
/// catalog facts (NOT NULL, validated FK, tenant index, RLS enabled and forced, a policy for each
/// command), and ok when every count is zero and every fact holds.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn validate_client_data_integrity() -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(tenant_column, String),
        name!(total_rows, i64),
        name!(null_rows, i64),
        name!(orphan_rows, i64),
        name!(cross_tenant_rows, i64),
        name!(not_null, bool),
        name!(fk_validated, bool),
        name!(tenant_index, bool),
        name!(rls_enabled, bool),
        name!(rls_forced, bool),
        name!(policies_complete, bool),
        name!(ok, bool),
    ),
> {
    TableIterator::new(registered(None).iter().map(check).collect::<Vec<_>>())
}

/// The same report for one table, which must be registered.
/// Internal: the public form is `tenancy.validate_client_data_integrity(tbl regclass)`.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _table_integrity(tbl: pg_sys::Oid) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(tenant_column, String),
        name!(total_rows, i64),
        name!(null_rows, i64),
        name!(orphan_rows, i64),
        name!(cross_tenant_rows, i64),
        name!(not_null, bool),
        name!(fk_validated, bool),
        name!(tenant_index, bool),
        name!(rls_enabled, bool),
        name!(rls_forced, bool),
        name!(policies_complete, bool),
        name!(ok, bool),
    ),
> {
    let rows = registered(Some(tbl));
    if rows.is_empty() {
        // Read-only SPI: this function is STABLE, so it must not assign a transaction id.
        let name: String = spi(Spi::connect(|c| {
            c.select("SELECT $1::pg_catalog.regclass::text", Some(1), &[tbl.into()])?.first().get_one::<String>()
        }))
        .unwrap_or_default();
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("{name} is not a registered tenant table"),
            "Register it with tenancy.register_table(tbl, tenant_column), or list them in tenancy.tenant_tables.",
        )
    }
    TableIterator::new(rows.iter().map(check).collect::<Vec<_>>())
}
