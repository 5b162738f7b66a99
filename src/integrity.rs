//! `tenancy.validate_client_data_integrity()`: one row per registered tenant table.
//!
//! Each table is read once: a single scan counts rows, NULL tenant values and tenant values that
//! name no organization (a hash anti-join against tenancy.organizations). Plain SELECTs take
//! ACCESS SHARE locks only, so writers are never blocked.
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise, spi};

/// table_name, tenant_column, total_rows, null_rows, orphan_rows, ok
type IntegrityRow = (String, String, i64, i64, i64, bool);

struct Registered {
    label: String,
    exists: bool,
    column: String,
    column_type: String,
}

fn registered(only: Option<pg_sys::Oid>) -> Vec<Registered> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT coalesce(c.oid::regclass::text, t.relid::oid::text), c.oid IS NOT NULL, \
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
                exists: r.get::<bool>(2)?.unwrap_or(false),
                column: r.get::<String>(3)?.unwrap_or_default(),
                column_type: r.get::<String>(4)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }))
}

fn check(t: &Registered) -> IntegrityRow {
    if !t.exists {
        return (t.label.clone(), t.column.clone(), 0, 0, 0, false);
    }
    let col = quote_identifier(&t.column);
    let key = if t.column_type == "text" { "slug" } else { "id" };
    // regclass output is schema-qualified and quoted (search_path is pinned to pg_catalog).
    let sql = format!(
        "SELECT count(*)::bigint, \
                count(*) FILTER (WHERE t.{col} IS NULL)::bigint, \
                count(*) FILTER (WHERE t.{col} IS NOT NULL AND o.{key} IS NULL)::bigint \
           FROM {tbl} t LEFT JOIN tenancy.organizations o ON o.{key} = t.{col}",
        tbl = t.label
    );
    let (total, nulls, orphans) = spi(Spi::connect(|c| {
        let row = c.select(&sql, Some(1), &[])?.first();
        Ok((row.get::<i64>(1)?, row.get::<i64>(2)?, row.get::<i64>(3)?))
    }));
    let (total, nulls, orphans) = (total.unwrap_or(0), nulls.unwrap_or(0), orphans.unwrap_or(0));
    (t.label.clone(), t.column.clone(), total, nulls, orphans, nulls == 0 && orphans == 0)
}

/// One row per registered tenant table: total rows, rows with a NULL tenant, rows whose tenant
/// is not an existing organization, and ok when both are zero.
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
