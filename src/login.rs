//! Login before any tenant context: `tenancy.login_lookup(tbl, key)`.
//!
//! An application looks its user up by email before it knows who is acting, so before any tenant
//! context; under forced row-level security that lookup sees nothing, and a managed install gives
//! nobody BYPASSRLS. The table's owner (who may read every row anyway: it can turn row-level
//! security off) names, with `tenancy.allow_login_lookup`, the key column, the columns login
//! needs and the role that may read them; a member of that role then reads exactly those columns
//! of the rows whose key equals the value it passes, and nothing else.
//!
//! Fail-closed rules:
//! * the permission is read at every call (as the catalog owner: it is not granted to anybody),
//!   so a revocation is seen by the next statement of every session;
//! * the read bypasses row-level security as the bootstrap superuser in a security-restricted
//!   operation, as the integrity report does, only when it can run no owner's code: the table's
//!   tree holds plain or partitioned tables only and every column read has a built-in type;
//!   otherwise it is refused;
//! * the statement is built from catalog facts (the table as regclass prints it, each column
//!   quoted); the key is a parameter; at most 100 rows.
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::{pg_sys, JsonB};

use crate::errors::{spi, Error};
use crate::security::{self, AsRole};

/// At most this many rows per lookup (a key shared by several organizations' users).
const MAX_ROWS: i64 = 100;

struct Permission {
    name: String,
    key_column: String,
    key_type: String,
    columns: Vec<String>,
    grantee: pg_sys::Oid,
}

/// The permission recorded for `tbl`, read as the catalog owner.
fn permission(tbl: pg_sys::Oid) -> Option<Permission> {
    let _owner = AsRole::switch_to(crate::privileged::catalog_owner());
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT l.relid::pg_catalog.oid::pg_catalog.regclass::pg_catalog.text, l.key_column::pg_catalog.text, \
                    pg_catalog.format_type(CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END, NULL), \
                    l.columns::pg_catalog.text[], l.grantee::pg_catalog.oid \
               FROM tenancy.login_lookups l \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = l.relid AND a.attname = l.key_column \
                    AND a.attnum > 0 AND NOT a.attisdropped \
               JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
              WHERE l.relid = $1::pg_catalog.oid::pg_catalog.regclass",
            Some(1),
            &[tbl.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let r = t.first();
        Ok(Some(Permission {
            name: r.get::<String>(1)?.unwrap_or_default(),
            key_column: r.get::<String>(2)?.unwrap_or_default(),
            key_type: r.get::<String>(3)?.unwrap_or_default(),
            columns: r.get::<Vec<String>>(4)?.unwrap_or_default(),
            grantee: r.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
        }))
    }))
}

/// Login before any tenant context: the columns `allow_login_lookup` named, as JSON, of the rows
/// of `tbl` whose key column equals `key` (at most 100), for a member of the role it named.
/// Internal: the public form is `tenancy.login_lookup(tbl regclass, key text)`.
#[pg_extern(stable, strict, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _login_lookup(tbl: pg_sys::Oid, key: &str) -> SetOfIterator<'static, JsonB> {
    let refused = || -> ! {
        Error::InsufficientPrivilege.raise(
            "tenancy.login_lookup: this role may not look up logins in this table",
            "The table's owner allows it for one role: SELECT tenancy.allow_login_lookup(tbl, key_column, columns, grantee).",
        )
    };
    let Some(p) = permission(tbl) else { refused() };
    if p.grantee == pg_sys::InvalidOid || !security::has_privileges_of(security::current_role(), p.grantee) {
        refused()
    }
    let mut columns: Vec<(pg_sys::Oid, &str)> = vec![(tbl, p.key_column.as_str())];
    columns.extend(p.columns.iter().map(|c| (tbl, c.as_str())));
    if crate::integrity::owner_code_could_run(&[tbl], &columns) {
        Error::FeatureNotSupported.raise(
            format!("tenancy.login_lookup: {} can run its owner's code when read (a foreign table, or a column without a built-in type)", p.name),
            "Keep login columns in a plain table with built-in types, and call allow_login_lookup again.",
        )
    }
    let fields = p
        .columns
        .iter()
        .map(|c| format!("{}, t.{}", quote_literal(c), quote_identifier(c)))
        .collect::<Vec<_>>()
        .join(", ");
    // The key type is built in (checked above) and printed by format_type: a type name, not text
    // of anybody's.
    let sql = format!(
        "SELECT pg_catalog.jsonb_build_object({fields}) FROM {} t \
          WHERE t.{} OPERATOR(pg_catalog.=) $1::{} LIMIT {MAX_ROWS}",
        p.name,
        quote_identifier(&p.key_column),
        p.key_type
    );
    let _su = AsRole::switch_to(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
    let rows = spi(Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(&sql, None, &[key.into()])? {
            out.extend(r.get::<JsonB>(1)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }));
    SetOfIterator::new(rows)
}
