//! The tenant lifecycle's row work: erasing an organization's rows, counting them (usage),
//! exporting them and importing them. The COMMITting procedures and the bookkeeping are in
//! `sql/lifecycle.sql`; this module runs the statements that touch user tables.
//!
//! Who runs what (see docs/lifecycle.md, "Security"):
//! * an erase batch, an import batch and the erase's final count run **as the table's owner**, in
//!   a security-restricted operation (as `tenancy._as_owner` does): the owner's triggers, rules,
//!   defaults and policies run with the owner's rights, never with the administrator's who
//!   called; the caller must hold the privilege the statement needs (DELETE, INSERT) on the table;
//! * forced row-level security stays on. For the duration of the one statement, the context names
//!   the organization being worked on (`context::LifecycleScope`): reading it, and deleting (erase)
//!   or writing (import) in it. Rows of every other organization stay invisible to the statement,
//!   whatever its WHERE clause says;
//! * the reference check and usage read with row-level security bypassed only for an
//!   administrator acting as itself and only when no code of any owner can run (plain tables,
//!   built-in column types), exactly like the integrity report; they return counts only.
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{pg_sys, JsonB, Uuid};

use crate::context::{acting_administrator, LifecycleScope};
use crate::errors::{spi, Error};
use crate::integrity::owner_code_could_run;
use crate::privileged::catalog_owner;
use crate::security::{self, AsRole};

/// A registered tenant table as the lifecycle needs it.
struct Tenant {
    name: String,
    column: String,
    column_type: String,
    kind: char,
    owner: pg_sys::Oid,
}

/// Reads the registry as the catalog's owner: `tenancy.tenant_tables` shows a table owner its
/// own tables only, and the callers here are authorized by their own checks.
pub(crate) fn as_catalog_owner<T>(f: impl FnOnce() -> T) -> T {
    let _owner = AsRole::switch_to(catalog_owner());
    f()
}

fn tenant_table(rel: pg_sys::Oid) -> Tenant {
    let t = as_catalog_owner(|| {
        spi(Spi::connect(|c| {
            let r = c.select(
            "SELECT c.oid::pg_catalog.regclass::pg_catalog.text, t.tenant_column::pg_catalog.text, t.column_type, \
                    c.relkind::pg_catalog.text, c.relowner \
               FROM tenancy.tenant_tables t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid::pg_catalog.oid \
              WHERE c.oid OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[rel.into()],
        )?;
            if r.is_empty() {
                return Ok(None);
            }
            let r = r.first();
            Ok::<_, pgrx::spi::SpiError>(Some(Tenant {
                name: r.get::<String>(1)?.unwrap_or_default(),
                column: r.get::<String>(2)?.unwrap_or_default(),
                column_type: r.get::<String>(3)?.unwrap_or_default(),
                kind: r.get::<String>(4)?.unwrap_or_default().chars().next().unwrap_or('r'),
                owner: r.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
            }))
        }))
    });
    t.unwrap_or_else(|| {
        Error::NotRegistered.raise(
            format!("tenancy: relation with oid {} is not a registered tenant table", rel.to_u32()),
            "See SELECT relid, tenant_column FROM tenancy.tenant_tables.",
        )
    })
}

/// (exists, active, slug) of an organization.
pub(crate) fn organization(org: Uuid) -> Option<(bool, String)> {
    spi(Spi::connect(|c| {
        let r = c.select(
            "SELECT is_active, slug FROM tenancy.organizations WHERE id OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[org.into()],
        )?;
        if r.is_empty() {
            return Ok(None);
        }
        let r = r.first();
        Ok::<_, pgrx::spi::SpiError>(Some((r.get::<bool>(1)?.unwrap_or(true), r.get::<String>(2)?.unwrap_or_default())))
    }))
}

fn require_administrator(what: &str) {
    if !acting_administrator() {
        Error::NotAdministrator.raise(
            format!("tenancy: only a tenancy administrator may {what}"),
            "Run this as a role with UPDATE on tenancy.organizations (the role that installed tenancy), \
             acting as itself (not inside another role's SECURITY DEFINER function).",
        )
    }
}

fn has_table_privilege(rel: pg_sys::Oid, mode: u32) -> bool {
    // SAFETY: a privilege check for the current role.
    unsafe {
        pg_sys::pg_class_aclcheck(rel, security::current_role(), mode as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// The value the tenant column holds for `org`: its id (uuid columns) or its slug (text).
fn tenant_value(t: &Tenant, org: Uuid, slug: &str) -> String {
    if t.column_type == "text" {
        slug.to_owned()
    } else {
        org.to_string()
    }
}

/// `<col> = $1` with $1 (text) read as the column's kind.
fn tenant_condition(alias: &str, t: &Tenant) -> String {
    let cast = if t.column_type == "text" { "" } else { "::pg_catalog.uuid" };
    format!("{alias}.{} OPERATOR(pg_catalog.=) $1{cast}", quote_identifier(&t.column))
}

/// A running erasure of `org` must exist (created by `CALL tenancy.erase_organization`, for a
/// deactivated organization): the batch functions cannot be pointed at any other organization.
fn require_running_erasure(org: Uuid) -> String {
    require_administrator("erase an organization");
    let Some((active, slug)) = organization(org) else {
        Error::UnknownOrganization.raise(
            format!("tenancy: organization {org} does not exist"),
            "See tenancy.erasures for organizations already erased.",
        )
    };
    let running = spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tenancy.erasures WHERE organization_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'running')",
        &[org.into()],
    ))
    .unwrap_or(false);
    if active || !running {
        Error::PrerequisiteState.raise(
            format!("tenancy: no erasure of organization {slug} ({org}) is running"),
            "Deactivate the organization (tenancy.deactivate_organization), then CALL tenancy.erase_organization(...).",
        )
    }
    slug
}

/// Internal (`tenancy.erase_organization`): delete a batch of organization `org`'s rows from
/// tenant table `rel`, as the table's owner; returns `{"rows": {oid: n, ...}, "done": bool}`: the
/// rows deleted from `rel` and from its cascaded children, and whether `rel` has no row of the
/// organization left. A batch is `batch_size` rows, counting the rows of the children that the
/// foreign keys' `ON DELETE CASCADE` deletes with them (`cascaded_children`): `rel`'s share is
/// scaled down by the children's rows per row of `rel`. A table with a foreign key to itself (a
/// tree of categories, a reply to a comment) loses its rows leaves first (`erase_leaves_first`).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _erase_batch(rel: pg_sys::Oid, org: Uuid, batch_size: i32) -> JsonB {
    let slug = require_running_erasure(org);
    let t = tenant_table(rel);
    if !has_table_privilege(rel, pg_sys::ACL_DELETE) {
        Error::InsufficientPrivilege.raise(
            format!("tenancy: permission denied to delete from {}", t.name),
            "The administrator who erases needs DELETE on every tenant table (GRANT DELETE ON ... TO ...).",
        )
    }
    let children = cascaded_children(rel);
    let fanout: f64 = children.iter().map(|c| c.per_row).sum();
    let n = ((f64::from(batch_size.max(1)) / (1.0 + fanout)).floor() as i32).max(1);
    let before: Vec<i64> = children.iter().map(|c| c.deleted(org, &slug)).collect();
    let k = erase_rows(rel, &t, org, &slug, n);
    let mut rows = serde_json::Map::new();
    rows.insert(rel.to_u32().to_string(), k.into());
    for (c, b) in children.iter().zip(before) {
        rows.insert(c.rel.to_u32().to_string(), (c.deleted(org, &slug) - b).into());
    }
    JsonB(serde_json::json!({ "rows": rows, "done": k < i64::from(n) }))
}

/// Up to `n` rows of `org` deleted from `rel` in one batch, as the table's owner; how many.
fn erase_rows(rel: pg_sys::Oid, t: &Tenant, org: Uuid, slug: &str, n: i32) -> i64 {
    let cond = tenant_condition("t", t);
    let self_keys = self_references(rel);
    if !self_keys.is_empty() {
        return erase_leaves_first(t, org, slug, n, &self_keys);
    }
    let sql = if t.kind == 'p' {
        // ctid is unique per partition only: match (tableoid, ctid).
        format!(
            "DELETE FROM {tbl} t WHERE {cond} AND (t.tableoid, t.ctid) IN \
               (SELECT s.tableoid, s.ctid FROM {tbl} s WHERE {scond} LIMIT {n})",
            tbl = t.name,
            scond = tenant_condition("s", t)
        )
    } else {
        format!(
            "DELETE FROM {tbl} t WHERE {cond} AND t.ctid OPERATOR(pg_catalog.=) ANY (ARRAY( \
               SELECT s.ctid FROM {tbl} s WHERE {scond} LIMIT {n}))",
            tbl = t.name,
            scond = tenant_condition("s", t)
        )
    };
    // Each batch picks its rows by ctid (an index scan that stops after `n`) and deletes them by
    // ctid: every row is read twice, the second time from a page the first read just brought in.
    // A batch that deletes fewer than `n` rows was the table's last. (Counting what is left first,
    // to delete a last batch with one plain DELETE, cost a third read of up to `n` rows in every
    // batch of a large organization: 0.75 of the hand-written DELETEs' throughput at 600,000 rows.)
    // A cascaded table's turn comes after its parents took its rows: a bitmap scan passes their
    // dead index entries page by page, where an index scan would visit each.
    let value = tenant_value(t, org, slug);
    let plan = ScanPlans::enter(!cascaded(rel));
    let n = {
        let _owner = AsRole::switch_to(t.owner);
        let _scope = LifecycleScope::enter(org, Some(slug.to_owned()), true, false);
        spi(Spi::connect_mut(|c| Ok::<_, pgrx::spi::SpiError>(c.update(&sql, None, &[value.into()])?.len() as i64)))
    };
    plan.leave();
    n
}

/// A tenant table whose rows the erase deletes with its parent's (`tenancy._erase_cascaded`).
struct CascadedChild {
    rel: pg_sys::Oid,
    /// Its rows per row of the parent, estimated from the planner's row counts (1 when either
    /// table was never analyzed): what scales the parent's batches down.
    per_row: f64,
    /// How its deletions are counted: this transaction's statistics (`track_counts`, on by
    /// default), else its rows of the organization before and after (a count each).
    by_statistics: bool,
}

impl CascadedChild {
    /// The rows deleted from the child so far in this transaction (statistics), or minus its
    /// rows of organization `org` (counts): a difference of two readings is the batch's rows.
    fn deleted(&self, org: Uuid, slug: &str) -> i64 {
        if self.by_statistics {
            spi(Spi::get_one_with_args::<i64>(
                "SELECT pg_catalog.pg_stat_get_xact_tuples_deleted($1)",
                &[self.rel.into()],
            ))
            .unwrap_or(0)
        } else {
            let t = tenant_table(self.rel);
            -rows_of(self.rel, &t, org, slug).0
        }
    }
}

/// Whether tenant table `rel` loses its rows with its parents' (`tenancy._erase_cascaded`).
fn cascaded(rel: pg_sys::Oid) -> bool {
    as_catalog_owner(|| {
        spi(Spi::get_one_with_args::<bool>("SELECT tenancy._erase_cascaded($1::pg_catalog.regclass)", &[rel.into()]))
    })
    .unwrap_or(false)
}

/// The cascaded tenant tables with a foreign key to `rel` (`tenancy._erase_cascaded`).
fn cascaded_children(rel: pg_sys::Oid) -> Vec<CascadedChild> {
    let by_statistics = spi(Spi::get_one::<bool>("SELECT pg_catalog.current_setting('track_counts')::pg_catalog.bool"))
        .unwrap_or(false);
    as_catalog_owner(|| {
        spi(Spi::connect(|c| {
            let mut v = Vec::new();
            for r in c.select(
                "SELECT DISTINCT con.conrelid, ch.reltuples::pg_catalog.float8, p.reltuples::pg_catalog.float8 \
                   FROM pg_catalog.pg_constraint con \
                   JOIN pg_catalog.pg_class ch ON ch.oid OPERATOR(pg_catalog.=) con.conrelid \
                   JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) con.confrelid \
                  WHERE con.confrelid OPERATOR(pg_catalog.=) $1 AND con.contype OPERATOR(pg_catalog.=) 'f' \
                    AND con.conrelid OPERATOR(pg_catalog.<>) $1 \
                    AND EXISTS (SELECT 1 FROM tenancy.tenant_tables tt \
                                 WHERE tt.relid::pg_catalog.oid OPERATOR(pg_catalog.=) con.conrelid) \
                    AND tenancy._erase_cascaded(con.conrelid::pg_catalog.regclass) \
                  ORDER BY 1",
                None,
                &[rel.into()],
            )? {
                let (child, parent) = (r.get::<f64>(2)?.unwrap_or(-1.0), r.get::<f64>(3)?.unwrap_or(-1.0));
                v.push(CascadedChild {
                    rel: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    per_row: if child >= 0.0 && parent > 0.0 { child / parent } else { 1.0 },
                    by_statistics,
                });
            }
            Ok::<_, pgrx::spi::SpiError>(v)
        }))
    })
}

/// The foreign keys of `rel` to itself: (its columns, the referenced columns) of each.
fn self_references(rel: pg_sys::Oid) -> Vec<(Vec<String>, Vec<String>)> {
    spi(Spi::connect(|c| {
        let mut v = Vec::new();
        for r in c.select(
            "SELECT tenancy._att_names(con.conrelid, con.conkey), tenancy._att_names(con.confrelid, con.confkey) \
               FROM pg_catalog.pg_constraint con \
              WHERE con.conrelid OPERATOR(pg_catalog.=) $1 AND con.confrelid OPERATOR(pg_catalog.=) $1 \
                AND con.contype OPERATOR(pg_catalog.=) 'f' AND con.conparentid OPERATOR(pg_catalog.=) 0 \
              ORDER BY con.conname",
            None,
            &[rel.into()],
        )? {
            v.push((r.get::<Vec<String>>(1)?.unwrap_or_default(), r.get::<Vec<String>>(2)?.unwrap_or_default()));
        }
        Ok::<_, pgrx::spi::SpiError>(v)
    }))
}

/// An erase batch of a table with foreign keys to itself: rows that no other remaining row of the
/// organization references go first, layer after layer, until `n` rows are deleted or none is
/// left. Deleting a parent before its children would break the key (and stop the erase); the
/// rows left when no row is unreferenced reference each other in cycles, and go in one statement
/// (the keys are checked at its end, when all of them are gone).
fn erase_leaves_first(t: &Tenant, org: Uuid, slug: &str, n: i32, self_keys: &[(Vec<String>, Vec<String>)]) -> i64 {
    let value = tenant_value(t, org, slug);
    // The row's identity: ctid is unique per partition only.
    let id = |a: &str| if t.kind == 'p' { format!("({a}.tableoid, {a}.ctid)") } else { format!("{a}.ctid") };
    let referenced: Vec<String> = self_keys
        .iter()
        .map(|(cols, pcols)| {
            let eq: Vec<String> = cols
                .iter()
                .zip(pcols)
                .map(|(c, p)| format!("r.{} OPERATOR(pg_catalog.=) s.{}", quote_identifier(c), quote_identifier(p)))
                .collect();
            format!(
                "EXISTS (SELECT 1 FROM {tbl} r WHERE {eq} AND {rid} IS DISTINCT FROM {sid})",
                tbl = t.name,
                eq = eq.join(" AND "),
                rid = id("r"),
                sid = id("s")
            )
        })
        .collect();
    let pick = |limit: Option<i64>| {
        format!(
            "DELETE FROM {tbl} t WHERE {cond} AND {tid} IN (SELECT {sid} FROM {tbl} s WHERE {scond}{leaf}{limit})",
            tbl = t.name,
            cond = tenant_condition("t", t),
            tid = id("t"),
            sid = id("s"),
            scond = tenant_condition("s", t),
            leaf = limit.map_or(String::new(), |_| format!(" AND NOT ({})", referenced.join(" OR "))),
            limit = limit.map_or(String::new(), |l| format!(" LIMIT {l}")),
        )
    };
    let _owner = AsRole::switch_to(t.owner);
    let _scope = LifecycleScope::enter(org, Some(slug.to_owned()), true, false);
    let delete = |sql: &str| {
        spi(Spi::connect_mut(|c| {
            Ok::<_, pgrx::spi::SpiError>(c.update(sql, None, &[value.clone().into()])?.len() as i64)
        }))
    };
    let mut total = 0i64;
    while total < i64::from(n) {
        let k = delete(&pick(Some(i64::from(n) - total)));
        total += k;
        if k == 0 {
            // No unreferenced row: none left, or rows in cycles (all of them, in one statement).
            total += delete(&pick(None));
            break;
        }
    }
    total
}

/// `enable_seqscan` and `enable_bitmapscan` off for one statement (`enable_indexscan` instead of
/// the latter when `index` is false), at a GUC nest level of its own (as a function's SET clause
/// does). A batch's `LIMIT`ed scan otherwise often gets a sequential
/// scan (the planner expects the organization's rows spread evenly, so the limit looks cheap)
/// that reads the whole table, and every dead row of the batches before, for each batch; or a
/// bitmap scan that collects every remaining row of the organization each time. The index scan
/// reads the batch's rows only (and marks the dead ones it meets in the index, so the next batch
/// skips them). A table without an index on its tenant column is still scanned sequentially.
struct ScanPlans {
    level: i32,
}

impl ScanPlans {
    fn enter(index: bool) -> Self {
        // SAFETY: a new GUC nest level and two planner settings saved at it; `leave` (or the
        // transaction's abort, on an error) pops them.
        unsafe {
            let level = pg_sys::NewGUCNestLevel();
            let other = if index { c"enable_bitmapscan" } else { c"enable_indexscan" };
            for name in [c"enable_seqscan", other] {
                pg_sys::set_config_option(
                    name.as_ptr(),
                    c"off".as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    pgrx::PgLogLevel::ERROR as _,
                    false,
                );
            }
            ScanPlans { level }
        }
    }

    fn leave(self) {
        // SAFETY: pops the settings of the nest level `enter` opened (and of any above it).
        unsafe { pg_sys::AtEOXact_GUC(true, self.level) }
    }
}

/// Internal (`tenancy.erase_organization`'s verification): how many rows of `org` table `rel`
/// still holds. Counted with row-level security bypassed wherever no code of the table's owner
/// can run (`rows_of`), so that a row the owner's own policies hide from the erase is not missed;
/// such a row, which no batch can delete, stops the erase (55000) rather than sending it over
/// the tables forever. Elsewhere, counted as the table's owner, as the batches delete.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _erase_remaining(rel: pg_sys::Oid, org: Uuid) -> i64 {
    let slug = require_running_erasure(org);
    let t = tenant_table(rel);
    let (all, seen) = rows_of(rel, &t, org, &slug);
    if all > seen {
        Error::PrerequisiteState.raise(
            format!(
                "tenancy.erase_organization {slug}: {} rows of {} are hidden from the erase by row-level security \
                 that is not tenancy's (a policy of the table's owner): it cannot delete them",
                all - seen,
                t.name
            ),
            "Change or drop that policy (or delete those rows as a role that sees them), then CALL \
             tenancy.erase_organization again: it resumes. The erasure is not complete.",
        )
    }
    all
}

/// Organization `org`'s rows in tenant table `rel`: (every row, the rows its owner sees in the
/// lifecycle's scope). Every row is counted with row-level security bypassed, where no code of
/// the owner can run in that count (a plain or partitioned table, a built-in tenant column type);
/// elsewhere both are the owner's count. Every row first: a row written in between is in the
/// second count only, never taken for a hidden one.
fn rows_of(rel: pg_sys::Oid, t: &Tenant, org: Uuid, slug: &str) -> (i64, i64) {
    let sql =
        format!("SELECT pg_catalog.count(*)::pg_catalog.int8 FROM {} t WHERE {}", t.name, tenant_condition("t", t));
    let value = tenant_value(t, org, slug);
    let seen = || {
        let _owner = AsRole::switch_to(t.owner);
        let _scope = LifecycleScope::enter(org, Some(slug.to_owned()), false, false);
        spi(Spi::get_one_with_args::<i64>(&sql, &[value.clone().into()])).unwrap_or(0)
    };
    if owner_code_could_run(&[rel], &[(rel, t.column.as_str())]) {
        let n = seen();
        return (n, n);
    }
    let all = {
        let _su = AsRole::switch_to(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
        spi(Spi::get_one_with_args::<i64>(&sql, &[value.clone().into()])).unwrap_or(0)
    };
    (all, seen())
}

/// A foreign key into a tenant table that could make an erase reach beyond the organization.
struct Reference {
    child: pg_sys::Oid,
    child_name: String,
    child_owner: pg_sys::Oid,
    constraint: String,
    parent: pg_sys::Oid,
    /// The child's tenant column when the child is a tenant table.
    child_tenant: Option<String>,
    columns: Vec<String>,
    parent_columns: Vec<String>,
}

/// Foreign keys into tenant tables from tables that are not tenant tables, and from tenant
/// tables whose key does not carry the tenant column (so that a row of another organization
/// can point at the erased organization's row).
const REFERENCES_SQL: &str = include_str!("queries/erase_references.sql");

fn references() -> Vec<Reference> {
    spi(Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(REFERENCES_SQL, None, &[])? {
            out.push(Reference {
                child: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                child_name: r.get::<String>(2)?.unwrap_or_default(),
                child_owner: r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                constraint: r.get::<String>(4)?.unwrap_or_default(),
                parent: r.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
                child_tenant: r.get::<String>(6)?,
                columns: r.get::<Vec<String>>(7)?.unwrap_or_default(),
                parent_columns: r.get::<Vec<String>>(8)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// Rows outside the organization (in a table that is not a tenant table, or of another
/// organization) that reference a row of organization `org`: one row per foreign key with such
/// rows. An erase refuses to start while there are any (a cascade would delete or change them,
/// a NO ACTION key would stop the erase half-way).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _erase_references(
    org: Uuid,
) -> TableIterator<
    'static,
    (
        name!(referencing_table, String),
        name!(constraint_name, String),
        name!(referenced_table, String),
        name!(rows, i64),
    ),
> {
    require_administrator("erase an organization");
    let Some((_, slug)) = organization(org) else {
        Error::UnknownOrganization.raise(
            format!("tenancy: organization {org} does not exist"),
            "List organizations with SELECT id, slug FROM tenancy.organizations.",
        )
    };
    let mut out = Vec::new();
    for r in references() {
        let p = tenant_table(r.parent);
        let on: Vec<String> = r
            .columns
            .iter()
            .zip(&r.parent_columns)
            .map(|(c, pc)| format!("p.{} OPERATOR(pg_catalog.=) c.{}", quote_identifier(pc), quote_identifier(c)))
            .collect();
        let outside = match &r.child_tenant {
            // A tenant table: its rows of other organizations only.
            Some(col) => format!(" AND c.{} IS DISTINCT FROM p.{}", quote_identifier(col), quote_identifier(&p.column)),
            None => String::new(),
        };
        let sql = format!(
            "SELECT pg_catalog.count(*)::pg_catalog.int8 FROM {child} c WHERE EXISTS \
               (SELECT 1 FROM {parent} p WHERE {pcond} AND {on}{outside})",
            child = r.child_name,
            parent = p.name,
            pcond = tenant_condition("p", &p),
            on = on.join(" AND ")
        );
        let mut compared: Vec<(pg_sys::Oid, &str)> = r.columns.iter().map(|c| (r.child, c.as_str())).collect();
        compared.extend(r.parent_columns.iter().map(|c| (r.parent, c.as_str())));
        compared.push((r.parent, p.column.as_str()));
        if let Some(col) = &r.child_tenant {
            compared.push((r.child, col.as_str()));
        }
        let value = tenant_value(&p, org, &slug);
        let n = if !owner_code_could_run(&[r.child, r.parent], &compared) {
            // Counts only, no code of any owner can run: every row, row-level security bypassed.
            let _su = AsRole::switch_to(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
            spi(Spi::get_one_with_args::<i64>(&sql, &[value.into()]))
        } else {
            // As the referencing table's owner, seeing the organization's rows of the parent.
            let _owner = AsRole::switch_to(r.child_owner);
            let _scope = LifecycleScope::enter(org, Some(slug.clone()), false, false);
            spi(Spi::get_one_with_args::<i64>(&sql, &[value.into()]))
        }
        .unwrap_or(0);
        if n > 0 {
            out.push((r.child_name, r.constraint, p.name, n));
        }
    }
    TableIterator::new(out)
}

/// Internal (`tenancy.organization_usage`): rows per tenant value and tenant table, and the
/// table's total size (heap, TOAST, indexes; partitions summed) with the number of rows the
/// size is shared by. Administrators acting as themselves count every row (row-level security
/// bypassed, only where no code of any owner can run, counts only); anybody else counts the
/// rows its own SELECT would see.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _usage() -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(column_type, String),
        name!(tenant_value, Option<String>),
        name!(rows, i64),
        name!(table_bytes, i64),
        name!(table_rows, i64),
    ),
> {
    let admin = acting_administrator();
    let tables: Vec<pg_sys::Oid> = as_catalog_owner(|| {
        spi(Spi::connect(|c| {
            let mut v = Vec::new();
            for r in c.select(
            "SELECT c.oid FROM tenancy.tenant_tables t JOIN pg_catalog.pg_class c \
                 ON c.oid OPERATOR(pg_catalog.=) t.relid::pg_catalog.oid ORDER BY c.oid::pg_catalog.regclass::pg_catalog.text",
            None,
            &[],
        )? {
            v.push(r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid));
        }
            Ok::<_, pgrx::spi::SpiError>(v)
        }))
    });
    let mut out = Vec::new();
    for rel in tables {
        let t = tenant_table(rel);
        if !has_table_privilege(rel, pg_sys::ACL_SELECT) && !admin {
            continue;
        }
        let (bytes, estimate) = spi(Spi::connect(|c| {
            let r = c
                .select(
                    "SELECT pg_catalog.sum(pg_catalog.pg_total_relation_size(pt.relid))::pg_catalog.int8, \
                            pg_catalog.sum(greatest(c.reltuples, 0))::pg_catalog.int8 \
                       FROM (SELECT $1::pg_catalog.regclass AS relid UNION \
                             SELECT p.relid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) p \
                              WHERE p.level OPERATOR(pg_catalog.>) 0) pt \
                       JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pt.relid",
                    Some(1),
                    &[rel.into()],
                )?
                .first();
            Ok::<_, pgrx::spi::SpiError>((r.get::<i64>(1)?.unwrap_or(0), r.get::<i64>(2)?.unwrap_or(0)))
        }));
        let sql = format!(
            "SELECT t.{col}::pg_catalog.text, pg_catalog.count(*)::pg_catalog.int8 FROM {tbl} t GROUP BY t.{col}",
            col = quote_identifier(&t.column),
            tbl = t.name
        );
        let all_rows = admin && !owner_code_could_run(&[rel], &[(rel, t.column.as_str())]);
        let counts: Vec<(Option<String>, i64)> = {
            let _su = all_rows.then(|| AsRole::switch_to(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID)));
            // An administrator never runs another owner's code (its policies, its types) with its
            // own rights: where that code could run, the count is the owner's view of the table.
            let _owner = (admin && !all_rows).then(|| AsRole::switch_to(t.owner));
            if !all_rows && !has_table_privilege(rel, pg_sys::ACL_SELECT) {
                Vec::new()
            } else {
                spi(Spi::connect(|c| {
                    let mut v = Vec::new();
                    for r in c.select(&sql, None, &[])? {
                        v.push((r.get::<String>(1)?, r.get::<i64>(2)?.unwrap_or(0)));
                    }
                    Ok::<_, pgrx::spi::SpiError>(v)
                }))
            }
        };
        // The size is shared by every row of the table: the exact count when every row was
        // counted, else the planner's estimate (pg_class.reltuples, kept by ANALYZE/VACUUM).
        let counted: i64 = counts.iter().map(|(_, n)| n).sum();
        let table_rows = if all_rows { counted } else { estimate.max(counted) };
        for (value, n) in counts {
            out.push((t.name.clone(), t.column_type.clone(), value, n, bytes, table_rows));
        }
    }
    TableIterator::new(out)
}

/// Internal (`tenancy.import_organization`): insert the rows `rows` (a JSON array of row objects)
/// into tenant table `rel`, for organization `org` (which a running import created), in one
/// statement run as the table's owner; returns how many. Generated columns are left to the table;
/// identity columns keep their exported values (OVERRIDING SYSTEM VALUE).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _import_rows(rel: pg_sys::Oid, org: Uuid, rows: JsonB) -> i64 {
    require_administrator("import an organization");
    let t = tenant_table(rel);
    let running = spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tenancy.imports WHERE organization_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'running')",
        &[org.into()],
    ))
    .unwrap_or(false);
    let Some((_, slug)) = organization(org).filter(|_| running) else {
        Error::PrerequisiteState.raise(
            format!("tenancy: no import into organization {org} is running"),
            "CALL tenancy.import_organization(...) starts one.",
        )
    };
    if !has_table_privilege(rel, pg_sys::ACL_INSERT) {
        Error::InsufficientPrivilege.raise(
            format!("tenancy: permission denied to insert into {}", t.name),
            "The administrator who imports needs INSERT on every tenant table.",
        )
    }
    let cols: Vec<String> = insertable_columns(rel).into_iter().map(|c| c.name).collect();
    let sequences = sequence_columns(rel);
    let list = cols.iter().map(quote_identifier).collect::<Vec<_>>().join(", ");
    let sel = cols.iter().map(|c| format!("r.{}", quote_identifier(c))).collect::<Vec<_>>().join(", ");
    let returning = sequences.iter().map(|(c, _)| quote_identifier(c)).collect::<Vec<_>>();
    let maxima = returning.iter().map(|c| format!(", pg_catalog.max(i.{c})::pg_catalog.int8")).collect::<String>();
    // Every row must belong to the organization: a row of another one is refused by the
    // policies' WITH CHECK (the scope grants writing in `org` alone) and by this condition.
    let sql = format!(
        "WITH i AS (INSERT INTO {tbl} ({list}) OVERRIDING SYSTEM VALUE \
                    SELECT {sel} FROM pg_catalog.jsonb_array_elements($2) e, \
                           LATERAL pg_catalog.jsonb_populate_record(NULL::{tbl}, e) r \
                     WHERE {cond} \
                    RETURNING {ret}) \
         SELECT pg_catalog.count(*){maxima} FROM i",
        tbl = t.name,
        cond = tenant_condition("r", &t),
        ret = if returning.is_empty() { "1".to_owned() } else { returning.join(", ") },
    );
    let value = tenant_value(&t, org, &slug);
    let n_in = rows.0.as_array().map_or(0, |a| a.len()) as i64;
    let _owner = AsRole::switch_to(t.owner);
    let _scope = LifecycleScope::enter(org, Some(slug), false, true);
    let n = spi(Spi::connect_mut(|c| {
        let r = c.update(&sql, None, &[value.into(), rows.into()])?;
        let r = r.first();
        let n = r.get::<i64>(1)?.unwrap_or(0);
        advance_sequences(c, &sequences, &r)?;
        Ok::<_, pgrx::spi::SpiError>(n)
    }));
    if n != n_in {
        Error::InvalidParameter.raise(
            format!("tenancy: {} of {n_in} rows for {} belong to another organization than {org}", n_in - n, t.name),
            "An export holds the rows of one organization; check the file.",
        )
    }
    n
}

/// The columns of `rel` that take their values from a sequence (identity, serial; integer
/// types), with the sequence. An import keeps the exported values, so each such sequence is
/// moved past the largest value imported (`advance_sequences`), or the next row the application
/// inserts would collide with an imported one.
fn sequence_columns(rel: pg_sys::Oid) -> Vec<(String, pg_sys::Oid)> {
    spi(Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(
            "SELECT a.attname::pg_catalog.text, \
                    pg_catalog.pg_get_serial_sequence($1::pg_catalog.regclass::pg_catalog.text, a.attname::pg_catalog.text)::pg_catalog.regclass::pg_catalog.oid \
               FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
                AND a.atttypid OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype, \
                                                                  'pg_catalog.int8'::pg_catalog.regtype]::pg_catalog.oid[]) \
                AND pg_catalog.pg_get_serial_sequence($1::pg_catalog.regclass::pg_catalog.text, a.attname::pg_catalog.text) IS NOT NULL \
              ORDER BY a.attnum",
            None,
            &[rel.into()],
        )? {
            if let (Some(name), Some(seq)) = (r.get::<String>(1)?, r.get::<pg_sys::Oid>(2)?) {
                out.push((name, seq));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// Moves each sequence of `sequences` past the largest value of its column that the import's
/// statement returned (columns 2.. of `row`, in the order of `sequences`): only forward, for an
/// ascending sequence the table's owner (the current role) may set.
fn advance_sequences(
    c: &mut pgrx::spi::SpiClient<'_>,
    sequences: &[(String, pg_sys::Oid)],
    row: &pgrx::spi::SpiTupleTable<'_>,
) -> Result<(), pgrx::spi::SpiError> {
    for (i, (_, seq)) in sequences.iter().enumerate() {
        let Some(max) = row.get::<i64>(i + 2)? else { continue };
        c.update(
            "SELECT pg_catalog.setval(s.seqrelid::pg_catalog.regclass, $2) FROM pg_catalog.pg_sequence s \
              WHERE s.seqrelid OPERATOR(pg_catalog.=) $1 AND s.seqincrement OPERATOR(pg_catalog.>) 0 \
                AND pg_catalog.has_sequence_privilege(s.seqrelid, 'UPDATE') \
                AND $2 OPERATOR(pg_catalog.>=) coalesce(pg_catalog.pg_sequence_last_value(s.seqrelid::pg_catalog.regclass) \
                                                        OPERATOR(pg_catalog.+) 1, s.seqstart)",
            None,
            &[(*seq).into(), max.into()],
        )?;
    }
    Ok(())
}

/// The columns of `rel` an INSERT writes (not dropped, not generated), in order, with their types.
fn insertable_columns(rel: pg_sys::Oid) -> Vec<TableColumn> {
    spi(Spi::connect(|c| {
        let mut v = Vec::new();
        for r in c.select(
            "SELECT a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
                AND a.attgenerated OPERATOR(pg_catalog.=) '' ORDER BY a.attnum",
            None,
            &[rel.into()],
        )? {
            v.push(TableColumn { name: r.get::<String>(1)?.unwrap_or_default(), typ: r.get::<String>(2)?.unwrap_or_default() });
        }
        Ok::<_, pgrx::spi::SpiError>(v)
    }))
}

/// A column an INSERT writes: its name and its type (as format_type writes it).
struct TableColumn {
    name: String,
    typ: String,
}

/// Internal (`tenancy.clone_organization`): copy the next `batch_size` rows (in primary key
/// order, after key `after`) of organization `src` in tenant table `rel` into organization `dst`,
/// in one statement run as the table's owner (reading sees `src` only, writing `dst` only). The
/// primary key gets a new value (its sequence, or a new uuid); each column of a foreign key to a
/// tenant table's primary key is mapped through `maps` ({"<parent oid>": {"<old key>": "<new
/// key>"}}); everything else, natural keys included, is kept. A reference of the table to itself
/// goes through this batch's keys too, or is set after the table's last batch
/// (`clone_self_references`). Returns {"keys": [[old, new], ...], "last": <last old key>, "rows":
/// n, "unmapped": 0}; a reference that no map can follow (its row written to the source after the
/// parent's table was cloned) is refused (55000) with the batch.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _clone_batch(
    rel: Option<pg_sys::Oid>,
    src: Option<Uuid>,
    dst: Option<Uuid>,
    after: Option<String>,
    batch_size: Option<i32>,
    maps: Option<JsonB>,
) -> JsonB {
    require_administrator("clone an organization");
    let (Some(rel), Some(src), Some(dst), Some(batch_size)) = (rel, src, dst, batch_size) else {
        Error::NullArgument.raise(
            "tenancy: _clone_batch needs a table, both organizations and a batch size",
            "Call CALL tenancy.clone_organization(...) instead.",
        )
    };
    let maps = maps.unwrap_or(JsonB(serde_json::json!({})));
    let (src_slug, dst_slug) = require_running_clone(src, dst);
    let t = tenant_table(rel);
    if !has_table_privilege(rel, pg_sys::ACL_INSERT) || !has_table_privilege(rel, pg_sys::ACL_SELECT) {
        Error::InsufficientPrivilege.raise(
            format!("tenancy: permission denied to read and insert into {}", t.name),
            "The administrator who clones needs SELECT and INSERT on every tenant table.",
        )
    }
    let (pk_name, pk_type, pk_seq) = single_column_key(rel, &t);
    let new_key = match (&pk_seq, pk_type.as_str()) {
        (Some(seq), _) => format!("pg_catalog.nextval({}::pg_catalog.regclass)", pgrx::spi::quote_literal(seq)),
        (None, "uuid") => "pg_catalog.gen_random_uuid()".to_owned(),
        _ => format!("s.{}", quote_identifier(&pk_name)),
    };
    let cols = insertable_columns(rel);
    let mapped = mapped_foreign_keys(rel, &t);
    let sql = clone_statement(&t, rel, (&pk_name, &pk_type, &new_key), &cols, &mapped, batch_size);
    let (sv, dv) = (tenant_value(&t, src, &src_slug), tenant_value(&t, dst, &dst_slug));
    let _owner = AsRole::switch_to(t.owner);
    let _scope = LifecycleScope::enter_clone((src, Some(src_slug.clone())), (dst, Some(dst_slug)));
    let out = spi(Spi::connect_mut(|c| {
        c.update(&sql, None, &[sv.clone().into(), dv.clone().into(), after.into(), JsonB(maps.0.clone()).into()])?
            .first()
            .get_one::<JsonB>()
    }))
    .unwrap_or(JsonB(serde_json::json!({"keys": [], "rows": 0})));
    let count = |what: &str| out.0.get(what).and_then(serde_json::Value::as_i64).unwrap_or(0);
    if count("unmapped") > 0 {
        Error::PrerequisiteState.raise(
            format!(
                "tenancy: {} rows of {} in this batch reference rows written to organization {src} after their table was cloned",
                count("unmapped"),
                t.name
            ),
            SOURCE_WRITTEN_DURING_CLONE,
        )
    }
    // The table's last batch: no row of the source hidden from the clone (by a policy of the
    // table's owner), then its references to rows of later batches.
    if count("rows") < i64::from(batch_size) {
        refuse_rows_hidden_from_clone(rel, &t, src, &src_slug);
        let selfs: Vec<&TableColumn> =
            cols.iter().filter(|col| mapped.iter().any(|(c, p)| *c == col.name && *p == rel)).collect();
        if !selfs.is_empty() {
            let mut keys = maps.0.get(rel.to_u32().to_string()).cloned().unwrap_or(serde_json::json!({}));
            if let (Some(all), Some(batch)) =
                (keys.as_object_mut(), out.0.get("keys").and_then(serde_json::Value::as_array))
            {
                for pair in batch {
                    if let (Some(old), Some(new)) = (pair.get(0), pair.get(1)) {
                        all.insert(old.as_str().unwrap_or_default().to_owned(), new.clone());
                    }
                }
            }
            clone_self_references(&t, &pk_name, &selfs, (sv, dv), JsonB(keys));
        }
    }
    out
}

/// At a table's last clone batch: a row of the source that a policy of the table's owner (not
/// tenancy's) hides from the clone, which reads as that owner, stops it (55000) rather than being
/// left out (`rows_of`).
fn refuse_rows_hidden_from_clone(rel: pg_sys::Oid, t: &Tenant, src: Uuid, src_slug: &str) {
    let (all, seen) = rows_of(rel, t, src, src_slug);
    if all > seen {
        Error::PrerequisiteState.raise(
            format!(
                "tenancy.clone_organization: {} rows of {} in organization {src} are hidden from the clone by \
                 row-level security that is not tenancy's (a policy of the table's owner): it cannot copy them",
                all - seen,
                t.name
            ),
            "Nothing of this batch was written. Change or drop that policy, then CALL tenancy.clone_organization \
             again: it resumes.",
        )
    }
}

/// Internal: the checks of a lifecycle operation (`erase`, `import`, `clone`) on every table of
/// `tables`, before anything is created or deleted, so that an operation that could not finish
/// changes nothing. Every operation: a Citus-distributed table whose owner (the role its
/// statements run as) is under row-level security is refused (`require_scope_reaches`). A clone
/// also needs, in each table, a single-column primary key besides the tenant column and foreign
/// keys to tenant tables that carry the tenant column (0A000). Each batch checks its table again.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _lifecycle_check(tables: Option<Vec<Option<pg_sys::Oid>>>, operation: Option<&str>) {
    let operation = match operation {
        Some(op @ ("erase" | "import" | "clone")) => op,
        _ => Error::InvalidParameter.raise(
            "tenancy: _lifecycle_check needs an operation: erase, import or clone",
            "Call the lifecycle procedures (erase_organization, import_organization, clone_organization) instead.",
        ),
    };
    require_administrator(&format!("{operation} an organization"));
    for rel in tables.unwrap_or_default().into_iter().flatten() {
        let t = tenant_table(rel);
        require_scope_reaches(rel, &t.name, t.owner, operation);
        if operation == "clone" {
            single_column_key(rel, &t);
            mapped_foreign_keys(rel, &t);
        }
    }
}

/// Refuses (0A000) a lifecycle operation on a Citus-distributed (or reference) tenant table when
/// its statements would run as `role` under row-level security: the shards' policies run on the
/// workers, which the lifecycle's scope (a state of this session) does not reach, so they would
/// let no row through — an export or a clone would come out empty, an erase would delete nothing
/// and find nothing left. A role that bypasses row-level security (a superuser, BYPASSRLS) reads
/// and writes the shards with the operation's own conditions.
pub(crate) fn require_scope_reaches(rel: pg_sys::Oid, name: &str, role: pg_sys::Oid, operation: &str) {
    // SAFETY: role attribute lookups by oid.
    let bypasses = unsafe { pg_sys::superuser_arg(role) || pg_sys::has_bypassrls_privilege(role) };
    if !bypasses && crate::citus::is_distributed(rel) {
        Error::FeatureNotSupported.raise(
            format!(
                "tenancy: {operation} cannot reach the rows of {name}: it is distributed by Citus, whose shards' \
                 row-level security (on the workers) does not see the lifecycle's scope and would let no row through"
            ),
            "On Citus, the tables' owner (the exporter, for an export) must bypass row-level security: a superuser \
             or a BYPASSRLS role. Nothing was changed.",
        )
    }
}

/// The hint of a clone batch refused because the source was written during the clone.
const SOURCE_WRITTEN_DURING_CLONE: &str = "Nothing of this batch was written. Keep the source organization from being \
    written during the clone (deactivate it, or pause its writers), erase the partial clone (deactivate it, CALL \
    tenancy.erase_organization) and clone again.";

/// After a table's last clone batch: each reference of the table to itself that pointed at a row
/// of a later batch (written NULL then) gets that row's new key, through `keys` (every old key of
/// the table and its new one). Runs as the table's owner, in the clone's scope (reading sees the
/// source, writing the clone). A reference left unmapped (a row written to the source during the
/// clone) is refused (55000), and the transaction with this batch with it.
fn clone_self_references(t: &Tenant, pk_name: &str, selfs: &[&TableColumn], (sv, dv): (String, String), keys: JsonB) {
    let cast = if t.column_type == "text" { "" } else { "::pg_catalog.uuid" };
    let (tbl, tcol, pk) = (&t.name, quote_identifier(&t.column), quote_identifier(pk_name));
    for col in selfs {
        let q = quote_identifier(&col.name);
        let new_of = |expr: &str| format!("($3::pg_catalog.jsonb OPERATOR(pg_catalog.->>) {expr}::pg_catalog.text)");
        let fix = format!(
            "UPDATE {tbl} d SET {q} = {new}::{typ} FROM {tbl} s \
              WHERE s.{tcol} OPERATOR(pg_catalog.=) $1{cast} AND d.{tcol} OPERATOR(pg_catalog.=) $2{cast} \
                AND d.{pk}::pg_catalog.text OPERATOR(pg_catalog.=) {new_pk} AND s.{q} IS NOT NULL AND d.{q} IS NULL",
            new = new_of(&format!("s.{q}")),
            typ = col.typ,
            new_pk = new_of(&format!("s.{pk}")),
        );
        let left = format!(
            "SELECT pg_catalog.count(*) FROM {tbl} s WHERE s.{tcol} OPERATOR(pg_catalog.=) $1{cast} AND s.{q} IS NOT NULL \
                AND {} IS NULL",
            new_of(&format!("s.{q}"))
        );
        let unmapped = spi(Spi::connect_mut(|c| {
            c.update(&fix, None, &[sv.clone().into(), dv.clone().into(), JsonB(keys.0.clone()).into()])?;
            c.update(&left, None, &[sv.clone().into(), dv.clone().into(), JsonB(keys.0.clone()).into()])?
                .first()
                .get_one::<i64>()
        }))
        .unwrap_or(0);
        if unmapped > 0 {
            Error::PrerequisiteState.raise(
                format!(
                    "tenancy: {unmapped} rows of {} reference rows of their own table written to organization {} after it was cloned",
                    t.name, sv
                ),
                SOURCE_WRITTEN_DURING_CLONE,
            )
        }
    }
}

/// A running clone of `src` into `dst` must exist (created by `CALL tenancy.clone_organization`):
/// the batch function cannot be pointed at any other pair. Returns both slugs.
fn require_running_clone(src: Uuid, dst: Uuid) -> (String, String) {
    let running = spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tenancy.clones WHERE source_id OPERATOR(pg_catalog.=) $1 \
            AND organization_id OPERATOR(pg_catalog.=) $2 AND status OPERATOR(pg_catalog.=) 'running')",
        &[src.into(), dst.into()],
    ))
    .unwrap_or(false);
    let (Some((_, src_slug)), Some((_, dst_slug))) = (organization(src), organization(dst)) else {
        Error::UnknownOrganization.raise(
            format!("tenancy: organization {src} or {dst} does not exist"),
            "CALL tenancy.clone_organization(...).",
        )
    };
    if !running {
        Error::PrerequisiteState.raise(
            format!("tenancy: no clone of organization {src} into {dst} is running"),
            "CALL tenancy.clone_organization(...) starts one.",
        )
    }
    (src_slug, dst_slug)
}

/// The single-column primary key of `t` without its tenant column: (name, type, its sequence).
/// A clone copies rows in key order and maps keys, so another key is refused (0A000).
fn single_column_key(rel: pg_sys::Oid, t: &Tenant) -> (String, String, Option<String>) {
    let pk: Vec<(String, String, Option<String>)> = spi(Spi::connect(|c| {
        let mut v = Vec::new();
        for r in c.select(
            "SELECT a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    pg_catalog.pg_get_serial_sequence($1::pg_catalog.regclass::pg_catalog.text, a.attname::pg_catalog.text) \
               FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid \
                AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey) \
              WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attname OPERATOR(pg_catalog.<>) $2::pg_catalog.name \
              ORDER BY a.attnum",
            None,
            &[rel.into(), t.column.clone().into()],
        )? {
            v.push((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default(), r.get::<String>(3)?));
        }
        Ok::<_, pgrx::spi::SpiError>(v)
    }));
    if pk.len() != 1 {
        Error::FeatureNotSupported.raise(
            format!(
                "tenancy: {} has no single-column primary key; a clone copies rows in key order and maps keys",
                t.name
            ),
            "Give the table a single-column primary key (an identity column), or leave it out of the tenant tables.",
        )
    }
    pk.into_iter().next().unwrap()
}

/// The columns of `t`'s foreign keys to other tenant tables' primary keys, with the parent:
/// their values are mapped to the parent's new keys. A foreign key to a tenant table without the
/// tenant column is refused (0A000): the clone's rows would point at the source's.
fn mapped_foreign_keys(rel: pg_sys::Oid, t: &Tenant) -> Vec<(String, pg_sys::Oid)> {
    // Foreign keys to tenant tables: (child column, parent oid, parent column is the parent's
    // primary key, carries the tenant column).
    let fks: Vec<(Vec<String>, pg_sys::Oid, Vec<String>, String)> = as_catalog_owner(|| {
        spi(Spi::connect(|c| {
            let mut v = Vec::new();
            for r in c.select(
            "SELECT tenancy._att_names(con.conrelid, con.conkey), con.confrelid, tenancy._att_names(con.confrelid, con.confkey), \
                    pt.tenant_column::pg_catalog.text \
               FROM pg_catalog.pg_constraint con JOIN tenancy.tenant_tables pt ON pt.relid::pg_catalog.oid OPERATOR(pg_catalog.=) con.confrelid \
              WHERE con.conrelid OPERATOR(pg_catalog.=) $1 AND con.contype OPERATOR(pg_catalog.=) 'f' AND con.conparentid OPERATOR(pg_catalog.=) 0",
            None,
            &[rel.into()],
        )? {
            v.push((
                r.get::<Vec<String>>(1)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<Vec<String>>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ));
        }
            Ok::<_, pgrx::spi::SpiError>(v)
        }))
    });
    let mut mapped: Vec<(String, pg_sys::Oid)> = Vec::new();
    for (ccols, parent, pcols, ptcol) in &fks {
        let pairs: Vec<(&String, &String)> = ccols.iter().zip(pcols).collect();
        let carries = pairs.iter().any(|(c, p)| **c == t.column && **p == *ptcol);
        let p = tenant_table(*parent);
        if !carries {
            Error::FeatureNotSupported.raise(
                format!("tenancy: a foreign key of {} to {} does not carry the tenant column: the clone's rows would point at the source's", t.name, p.name),
                "Rewrite the foreign key with the tenant column first (tenancy.backfill does; lint() reports TEN011).",
            )
        }
        let ppk: Option<String> = spi(Spi::get_one_with_args::<String>(
            "SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a \
                ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey) \
              WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attname OPERATOR(pg_catalog.<>) $2::pg_catalog.name",
            &[(*parent).into(), ptcol.clone().into()],
        ));
        for (c, pc) in pairs {
            if *c != t.column && Some(pc) == ppk.as_ref() {
                mapped.push((c.clone(), *parent));
            }
        }
    }
    mapped
}

/// The SQL of a clone batch's references (`m` is the batch, `$4` the maps).
struct MappedReferences {
    /// Each mapped column and its new value.
    values: Vec<(String, String)>,
    /// The batch joined with itself once per column that references the table itself (k1, ...).
    joins: String,
    /// True for a row with a reference to another table that `$4` cannot map.
    unmapped: String,
}

fn mapped_references(rel: pg_sys::Oid, cols: &[TableColumn], mapped: &[(String, pg_sys::Oid)]) -> MappedReferences {
    // A reference through the maps of earlier batches and earlier tables ($4).
    let through_maps = |col: &TableColumn, parent: pg_sys::Oid| {
        format!(
            "(($4::pg_catalog.jsonb OPERATOR(pg_catalog.->) '{}') OPERATOR(pg_catalog.->>) m.{}::pg_catalog.text)::{}",
            parent.to_u32(),
            quote_identifier(&col.name),
            col.typ
        )
    };
    let columns: Vec<(&TableColumn, pg_sys::Oid)> = mapped
        .iter()
        .filter_map(|(c, parent)| cols.iter().find(|col| col.name == *c).map(|col| (col, *parent)))
        .collect();
    let mut out = MappedReferences { values: Vec::new(), joins: String::new(), unmapped: String::new() };
    let mut unmapped = Vec::new();
    for (col, parent) in columns {
        if parent == rel {
            // Through this batch's own keys first (the row itself, or its parent in this batch).
            let k = format!("k{}", out.joins.matches(" LEFT JOIN ").count() + 1);
            out.joins.push_str(&format!(
                " LEFT JOIN m {k} ON {k}.\"__tenancy_old\" OPERATOR(pg_catalog.=) m.{}::pg_catalog.text",
                quote_identifier(&col.name)
            ));
            let e = format!("coalesce({k}.\"__tenancy_new\"::{}, {})", col.typ, through_maps(col, parent));
            out.values.push((col.name.clone(), e));
        } else {
            unmapped.push(format!(
                "(m.{} IS NOT NULL AND {} IS NULL)",
                quote_identifier(&col.name),
                through_maps(col, parent)
            ));
            out.values.push((col.name.clone(), through_maps(col, parent)));
        }
    }
    out.unmapped = if unmapped.is_empty() { "false".to_owned() } else { unmapped.join(" OR ") };
    out
}

/// The clone batch's statement: the next `batch_size` rows of the source (in key order, after
/// `$3`) with new keys (`new_key`), inserted for the clone with their mapped references
/// (`$4`: {"<parent oid>": {"<old key>": "<new key>"}}); it returns the keys' map, the last key
/// and the number of references to another table that `$4` could not map (rows written to the
/// parent after it was copied: the caller refuses the batch). A reference of the table to itself
/// is mapped through this batch's own keys too (a row and its parent in one batch, or a row that
/// points at itself); one to a row of a later batch is written NULL here and set by
/// `clone_self_references` after the table's last batch.
fn clone_statement(
    t: &Tenant,
    rel: pg_sys::Oid,
    (pk_name, pk_type, new_key): (&str, &str, &str),
    cols: &[TableColumn],
    mapped: &[(String, pg_sys::Oid)],
    batch_size: i32,
) -> String {
    let cast = |ct: &str| if ct == "text" { "" } else { "::pg_catalog.uuid" };
    let refs = mapped_references(rel, cols, mapped);
    let exprs: Vec<String> = cols
        .iter()
        .map(|col| {
            if col.name == t.column {
                format!("$2{}", cast(&t.column_type))
            } else if col.name == pk_name {
                "m.\"__tenancy_new\"".to_owned()
            } else if let Some((_, e)) = refs.values.iter().find(|(c, _)| *c == col.name) {
                e.clone()
            } else {
                format!("m.{}", quote_identifier(&col.name))
            }
        })
        .collect();
    let (joins, unmapped) = (&refs.joins, &refs.unmapped);
    let list = cols.iter().map(|c| quote_identifier(&c.name)).collect::<Vec<_>>().join(", ");
    let pkq = quote_identifier(pk_name);
    format!(
        "WITH m AS MATERIALIZED ( \
            SELECT s.*, s.{pkq}::pg_catalog.text AS \"__tenancy_old\", {new_key} AS \"__tenancy_new\" FROM {tbl} s \
             WHERE s.{tcol} OPERATOR(pg_catalog.=) $1{c} AND ($3::pg_catalog.text IS NULL OR s.{pkq} OPERATOR(pg_catalog.>) $3::{pk_type}) \
             ORDER BY s.{pkq} LIMIT {n}), \
         ins AS (INSERT INTO {tbl} ({list}) OVERRIDING SYSTEM VALUE SELECT {exprs} FROM m{joins}) \
         SELECT pg_catalog.jsonb_build_object('keys', coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(m.\"__tenancy_old\", \
                    m.\"__tenancy_new\"::pg_catalog.text) ORDER BY m.{pkq}), '[]'), \
                'last', (pg_catalog.array_agg(m.\"__tenancy_old\" ORDER BY m.{pkq} DESC))[1], 'rows', pg_catalog.count(*), \
                'unmapped', pg_catalog.count(*) FILTER (WHERE {unmapped})) FROM m",
        tbl = t.name,
        tcol = quote_identifier(&t.column),
        c = cast(&t.column_type),
        n = batch_size.max(1),
        exprs = exprs.join(", ")
    )
}
