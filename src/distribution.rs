//! Scale-out on Citus: `distribute()`, `distribute_all()` and `distribution_plan()` (through
//! `tenancy._distribute`): the catalog as reference tables, tenant tables distributed by their
//! tenant column and co-located, their policies in the distributed form (`signed.rs`) first.
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};

use crate::citus::{citus_installed, is_citus_table, is_distributed};
use crate::errors::{spi, Error};
use crate::policies::Form;
use crate::signed::{load_key, KEY_HINT};

/// Internal: called by the backfill before it starts. Once the catalog is made of reference
/// tables, the foreign key the backfill adds to tenancy.organizations makes Citus recreate a local
/// table as a coordinator-local Citus table, under a new oid, in the middle of the backfill.
/// Refused up front instead.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _citus_backfill_check(tbl: pg_sys::Oid) {
    if !citus_installed() || is_citus_table(tbl) || !is_distributed(catalog_oid("tenancy.organizations")) {
        return;
    }
    let name =
        spi(Spi::get_one_with_args::<String>("SELECT $1::oid::regclass::text", &[tbl.into()])).unwrap_or_default();
    Error::FeatureNotSupported.raise(
        format!("tenancy.backfill: {name} cannot be backfilled on Citus once the catalog is distributed"),
        "Adding its foreign key to tenancy.organizations (a reference table) would make Citus recreate the table \
         under another oid during the backfill. Add the tenant column with its foreign key yourself \
         (ALTER TABLE ... ADD COLUMN organization_id uuid NOT NULL DEFAULT '<organization>' REFERENCES tenancy.organizations (id)), \
         make the keys tenant-scoped, then call tenancy.enable_isolation and tenancy.distribute.",
    )
}

// ---------------------------------------------------------------------------------------------
// distribute() and its plan
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct TenantTable {
    relid: pg_sys::Oid,
    name: String,
    column: String,
    column_type: String,
    /// (mode, roles) of the isolation enable_isolation recorded, if any
    isolation: Option<(String, Vec<Option<String>>)>,
}

fn registered() -> Vec<TenantTable> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT t.relid::oid, t.relid::text, t.tenant_column::text, t.column_type, \
                    t.details->'isolation'->>'mode', \
                    (SELECT pg_catalog.array_agg(r) FROM pg_catalog.jsonb_array_elements_text(t.details->'isolation'->'roles') r) \
               FROM tenancy.tenant_tables t ORDER BY t.relid::text",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let mode = r.get::<String>(5)?;
            let roles = r.get::<Vec<Option<String>>>(6)?;
            out.push(TenantTable {
                relid: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                name: r.get::<String>(2)?.unwrap_or_default(),
                column: r.get::<String>(3)?.unwrap_or_default(),
                column_type: r.get::<String>(4)?.unwrap_or_default(),
                isolation: mode.map(|m| (m, roles.unwrap_or_else(|| vec![Some("public".into())]))),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// A foreign key of a table: (name, referenced table, its oid, columns here, columns there).
type ForeignKey = (String, String, pg_sys::Oid, Vec<String>, Vec<String>);

fn foreign_keys(relid: pg_sys::Oid) -> Vec<ForeignKey> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT con.conname::text, con.confrelid::regclass::text, con.confrelid, \
                    tenancy._att_names(con.conrelid, con.conkey), tenancy._att_names(con.confrelid, con.confkey) \
               FROM pg_catalog.pg_constraint con \
              WHERE con.conrelid = $1 AND con.contype = 'f' AND con.conparentid = 0 ORDER BY 1",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
                r.get::<Vec<String>>(5)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

fn strings(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<String> {
    spi(Spi::connect(|c| {
        let rows = c.select(sql, None, args)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// The catalog tables that become reference tables (the others stay on the coordinator:
/// tenant_tables holds OIDs, which differ between nodes, and migration_log is the coordinator's).
const REFERENCE_TABLES: [&str; 4] =
    ["tenancy.roles", "tenancy.organizations", "tenancy.memberships", "tenancy.invitations"];

fn catalog_oid(name: &str) -> pg_sys::Oid {
    spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[name.into()]))
        .unwrap_or(pg_sys::InvalidOid)
}

/// Why these tables cannot be distributed by their tenant column, if they cannot.
fn problems(tables: &[TenantTable], all: &[TenantTable]) -> Vec<String> {
    let catalog: Vec<pg_sys::Oid> = REFERENCE_TABLES.iter().map(|n| catalog_oid(n)).collect();
    let mut out = Vec::new();
    for t in tables {
        out.extend(key_problems(t));
        out.extend(foreign_key_problems(t, all, &catalog));
        out.extend(referrer_problems(t, all));
    }
    out
}

/// The primary keys, unique constraints and unique indexes of `t` without its tenant column, each
/// with the statements that make it tenant-scoped where there are any.
fn key_problems(t: &TenantTable) -> Vec<String> {
    let mut out = Vec::new();
    for what in strings(include_str!("queries/key_problems.sql"), &[t.relid.into(), t.column.clone().into()]) {
        out.push(format!("{}: {what}", t.name));
    }
    out
}

/// The foreign keys of `t` Citus cannot keep: to a tenant table without pairing the tenant
/// columns (or between tenant columns of different types), or to a table that is neither a tenant
/// table nor a Citus table (`catalog`: the catalog tables, which become reference tables).
fn foreign_key_problems(t: &TenantTable, all: &[TenantTable], catalog: &[pg_sys::Oid]) -> Vec<String> {
    let mut out = Vec::new();
    for (fk, parent_name, parent, here, there) in foreign_keys(t.relid) {
        if catalog.contains(&parent) {
            continue; // becomes a reference table
        }
        match all.iter().find(|p| p.relid == parent) {
            Some(p) => {
                let pairs_tenant = here.iter().zip(&there).any(|(h, th)| *h == t.column && *th == p.column);
                if !pairs_tenant {
                    out.push(format!(
                        "{}: foreign key {} to tenant table {parent_name} does not include the tenant column ({} -> {})",
                        t.name,
                        quote_identifier(&fk),
                        quote_identifier(&t.column),
                        quote_identifier(&p.column)
                    ));
                } else if p.column_type != t.column_type {
                    out.push(format!(
                        "{}: foreign key {} joins tenant columns of different types, which cannot be co-located",
                        t.name,
                        quote_identifier(&fk)
                    ));
                }
            }
            None if is_citus_table(parent) => {}
            None => out.push(format!(
                "{}: foreign key {} references {parent_name}, which is neither a tenant table nor a reference table \
                 (make it one with create_reference_table, or drop the key)",
                t.name,
                quote_identifier(&fk)
            )),
        }
    }
    out
}

/// The tables that refer to `t` and would stay local: Citus cannot keep a foreign key from a
/// local table to a distributed one.
fn referrer_problems(t: &TenantTable, all: &[TenantTable]) -> Vec<String> {
    let mut out = Vec::new();
    let all_oids: Vec<pg_sys::Oid> = all.iter().map(|p| p.relid).collect();
    for (child, fk, child_oid) in spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT con.conrelid::regclass::text, con.conname::text, con.conrelid FROM pg_catalog.pg_constraint con \
              WHERE con.confrelid = $1 AND con.contype = 'f' AND con.conparentid = 0 ORDER BY 1, 2",
            None,
            &[t.relid.into()],
        )?;
        let mut v = Vec::new();
        for r in rows {
            v.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(v)
    })) {
        if !all_oids.contains(&child_oid) && !is_citus_table(child_oid) {
            out.push(format!(
                "{}: {child} refers to it (foreign key {}) but is not a tenant table; Citus cannot keep a foreign key \
                 from a local table to a distributed one",
                t.name,
                quote_identifier(&fk)
            ));
        }
    }
    out
}

/// Parents before children (foreign keys between the tables), then by name.
fn in_foreign_key_order(mut tables: Vec<TenantTable>) -> Vec<TenantTable> {
    let mut out: Vec<TenantTable> = Vec::new();
    while !tables.is_empty() {
        let oids: Vec<pg_sys::Oid> = tables.iter().map(|t| t.relid).collect();
        let ready = tables.iter().position(|t| {
            foreign_keys(t.relid).iter().all(|(_, _, parent, _, _)| *parent == t.relid || !oids.contains(parent))
        });
        // A cycle of foreign keys: take the first by name; Citus distributes co-located tables in any order.
        out.push(tables.remove(ready.unwrap_or(0)));
    }
    out
}

/// One step of the plan: a statement, or the isolation of a table in the distributed form.
enum Step {
    Sql(String),
    /// The statement that makes table (by name) a Citus table: logged in migration_log.
    Table(String, String),
    Isolate(TenantTable, String),
}

fn plan(tables: Vec<TenantTable>, all: &[TenantTable], shard_count: Option<i32>) -> Vec<Step> {
    let mut steps = Vec::new();
    // The catalog's own policies, without subqueries, then the catalog as reference tables.
    let memberships = catalog_oid("tenancy.memberships");
    if !is_distributed(memberships) {
        steps.push(Step::Sql(
            "ALTER POLICY memberships_of_current_user ON tenancy.memberships \
             USING (user_id = tenancy.current_user_id() OR pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE'))"
                .into(),
        ));
    }
    if !is_distributed(catalog_oid("tenancy.organizations")) {
        steps.push(Step::Sql(
            "ALTER POLICY organizations_of_current_user ON tenancy.organizations \
             USING (tenancy._is_member_of(id) OR pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE'))"
                .into(),
        ));
    }
    for name in REFERENCE_TABLES {
        if !is_distributed(catalog_oid(name)) {
            steps.push(Step::Table(
                name.to_string(),
                format!("SELECT pg_catalog.create_reference_table({})", quote_literal(name)),
            ));
        }
    }
    // Tenant tables, co-located by tenant column type with the first of that type.
    let mut first_of: Vec<(String, String)> = Vec::new();
    for t in all {
        if is_distributed(t.relid) && !first_of.iter().any(|(ty, _)| *ty == t.column_type) {
            first_of.push((t.column_type.clone(), t.name.clone()));
        }
    }
    for t in in_foreign_key_order(tables) {
        if is_distributed(t.relid) {
            continue;
        }
        // Citus refuses ON UPDATE CASCADE / SET NULL / SET DEFAULT on a foreign key that holds the
        // distribution column (the backfill makes slug keys ON UPDATE CASCADE): the key is rebuilt
        // with ON UPDATE NO ACTION, everything else as it was.
        steps.extend(cascading_update_keys(&t).into_iter().map(Step::Sql));
        if t.isolation.is_some() {
            let ddl = isolation(&t, false);
            if !ddl.contains("nothing to do") {
                steps.push(Step::Isolate(t.clone(), ddl));
            }
        }
        let colocate = match first_of.iter().find(|(ty, _)| *ty == t.column_type) {
            Some((_, first)) => quote_literal(first),
            None => {
                first_of.push((t.column_type.clone(), t.name.clone()));
                "'none'".to_string()
            }
        };
        let shards = shard_count.map(|n| format!(", shard_count => {n}")).unwrap_or_default();
        let shards = if colocate == "'none'" { shards } else { String::new() };
        steps.push(Step::Table(
            t.name.clone(),
            format!(
                "SELECT pg_catalog.create_distributed_table({}, {}, colocate_with => {colocate}{shards})",
                quote_literal(&t.name),
                quote_literal(&t.column)
            ),
        ));
    }
    steps
}

/// The statements that rebuild the foreign keys of `t` that hold its tenant column and cascade,
/// set null or set default on update, with ON UPDATE NO ACTION (tenancy._fk_definition without
/// the update action: built from the catalog, every name quoted).
fn cascading_update_keys(t: &TenantTable) -> Vec<String> {
    strings(
        "SELECT pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s', \
                con.conrelid::regclass, con.conname, con.conname, tenancy._fk_definition(con.oid, p_on_update => false)) \
           FROM pg_catalog.pg_constraint con \
          WHERE con.conrelid = $1 AND con.contype = 'f' AND con.conparentid = 0 \
            AND con.confupdtype IN ('c', 'n', 'd') \
            AND $2::text = ANY (tenancy._att_names(con.conrelid, con.conkey)) \
          ORDER BY con.conname",
        &[t.relid.into(), t.column.clone().into()],
    )
}

/// enable_isolation's work for `t`, with its recorded mode and roles (apply or only render).
fn isolation(t: &TenantTable, apply: bool) -> String {
    let (mode, roles) = t.isolation.clone().expect("isolated");
    // Citus refuses to distribute a table whose policies hold subqueries: they take the distributed
    // form now, before the table becomes a Citus table.
    crate::policies::isolation(Some(t.relid), Some(&t.column), Some(&mode), Some(roles), Some(apply), Form::Distributed)
}

fn render(steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Sql(sql) | Step::Table(_, sql) => out.push(format!("{sql};")),
            Step::Isolate(_, ddl) => out.extend(ddl.lines().filter(|l| !l.starts_with("--")).map(str::to_owned)),
        }
    }
    out
}

/// The tables asked for (one, or every registered one), checked.
fn selected(tbl: Option<pg_sys::Oid>) -> (Vec<TenantTable>, Vec<TenantTable>) {
    let all = registered();
    let tables = match tbl {
        None => all.clone(),
        Some(relid) => match all.iter().find(|t| t.relid == relid) {
            Some(t) => vec![t.clone()],
            None => {
                let name = spi(Spi::get_one_with_args::<String>("SELECT $1::oid::regclass::text", &[relid.into()]))
                    .unwrap_or_default();
                Error::not_registered("distribute", &name)
            }
        },
    };
    if tbl.is_some() {
        // Its tenant-table parents must be distributed already (or come in the same call).
        for (fk, parent_name, parent, _, _) in foreign_keys(tables[0].relid) {
            if parent != tables[0].relid && all.iter().any(|p| p.relid == parent) && !is_distributed(parent) {
                Error::PrerequisiteState.raise(
                    format!(
                        "tenancy.distribute: {} refers to tenant table {parent_name} (foreign key {}), which is not distributed yet",
                        tables[0].name,
                        quote_identifier(&fk)
                    ),
                    "Distribute the parent first, or every tenant table at once with tenancy.distribute_all().",
                )
            }
        }
    }
    let p = problems(&tables, &all);
    if !p.is_empty() {
        Error::InvalidTableDefinition.raise(
            format!(
                "tenancy.distribute: Citus cannot distribute by the tenant column: {}",
                p.join("; ")
            ),
            "Citus requires every primary key, unique constraint and foreign key between distributed tables to include \
             the distribution column. tenancy.backfill leaves primary keys and unique constraints as they were: \
             run the statement given for each (after dropping foreign keys that point at the key), then distribute again; \
             SELECT * FROM tenancy.lint() lists the foreign keys (TEN011).",
        )
    }
    (tables, all)
}

/// Refuse what cannot be distributed whatever the tables: without Citus or a key (when applying),
/// or with a shard count below one.
fn check_arguments(apply: bool, shard_count: Option<i32>) {
    if apply {
        if !citus_installed() {
            Error::FeatureNotSupported.raise(
                "tenancy.distribute: the citus extension is not installed in this database",
                "Distributing needs Citus: install it on every node, CREATE EXTENSION citus, add the workers, \
                 then call tenancy.distribute again. tenancy.distribution_plan() shows what it would run.",
            )
        }
        if let Err(why) = load_key() {
            Error::PrerequisiteState
                .raise(format!("tenancy.distribute: no key to sign the tenant context with: {why}"), KEY_HINT)
        }
    }
    if let Some(n) = shard_count.filter(|n| *n < 1) {
        Error::InvalidParameter.raise(
            format!("tenancy.distribute: shard_count must be positive, not {n}"),
            "Pass a positive number of shards, or NULL for Citus' citus.shard_count.",
        )
    }
}

/// Refuse to apply `steps` where the cluster cannot take them: a coordinator without placements,
/// or catalog reference tables to create without the right to create in schema tenancy.
fn check_cluster(steps: &[Step]) {
    let coordinator_registered =
        spi(Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node WHERE groupid = 0)"))
            .unwrap_or(false);
    if !coordinator_registered {
        Error::PrerequisiteState.raise(
            "tenancy.distribute: the coordinator is not registered in Citus' metadata, so it would hold no placement of \
             the catalog's reference tables and would never hear of a membership change",
            "Run SELECT citus_set_coordinator_host('<host>', <port>) on the coordinator, then distribute again. \
             (Without placements there, sessions on the coordinator do not memoize memberships.)",
        )
    }
    let catalog_pending =
        steps.iter().any(|s| matches!(s, Step::Table(name, _) if REFERENCE_TABLES.contains(&name.as_str())));
    let may_create_in_schema =
        spi(Spi::get_one::<bool>("SELECT pg_catalog.has_schema_privilege('tenancy', 'CREATE')")).unwrap_or(false);
    if catalog_pending && !may_create_in_schema {
        Error::InsufficientPrivilege.raise(
            "tenancy.distribute: making the catalog reference tables needs a superuser: Citus creates their shards \
             in schema tenancy, which belongs to the superuser that installed tenancy",
            "Have a superuser run SELECT * FROM tenancy.distribute_all() once. After that, the owner of a tenant table \
             distributes it with tenancy.distribute(table).",
        )
    }
}

/// Run the statement `sql` that makes table `name` a Citus table, with forced row-level security
/// lifted for Citus' copy, the registry following a new oid, and the step logged.
fn make_citus_table(name: &str, sql: &str) {
    let started = spi(Spi::get_one::<pgrx::datum::TimestampWithTimeZone>("SELECT pg_catalog.clock_timestamp()"));
    let before = catalog_oid(name);
    // Citus copies the rows into the shards as the caller: for the table's owner (not a
    // superuser), FORCE ROW LEVEL SECURITY would hide every row from that copy (no
    // tenant context), and the distributed table would start empty. Lifted for the
    // copy, put back before anything else sees the table.
    let forced = spi(Spi::get_one_with_args::<bool>(
        "SELECT relforcerowsecurity FROM pg_catalog.pg_class WHERE oid = $1",
        &[before.into()],
    ))
    .unwrap_or(false);
    if forced {
        spi(Spi::run(&format!("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY", relation_sql(before))));
    }
    spi(Spi::run(sql));
    if forced {
        spi(Spi::run(&format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY", relation_sql(catalog_oid(name)))));
    }
    // Distributing a coordinator-local Citus table (what Citus makes of a table created
    // with a foreign key to the catalog once that is made of reference tables) creates it
    // anew, under a new oid: the registry follows it.
    let after = catalog_oid(name);
    if after != before && after != pg_sys::InvalidOid {
        spi(Spi::run_with_args(
            "UPDATE tenancy.tenant_tables SET relid = $2::oid::regclass WHERE relid::oid = $1",
            &[before.into(), after.into()],
        ));
    }
    spi(Spi::run_with_args(
        "SELECT tenancy._log('distribute', $1, 'succeeded', pg_catalog.jsonb_build_object('statement', $2::text), $3)",
        &[name.into(), sql.into(), started.into()],
    ));
}

/// Internal: the work of distribution_plan (apply false) and distribute / distribute_all.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _distribute(
    tbl: Option<pg_sys::Oid>,
    shard_count: Option<i32>,
    apply: Option<bool>,
) -> SetOfIterator<'static, String> {
    let apply = apply.unwrap_or(false);
    check_arguments(apply, shard_count);
    let (tables, all) = selected(tbl);
    let steps = plan(tables, &all, shard_count);
    if !apply {
        return SetOfIterator::new(render(&steps));
    }
    check_cluster(&steps);
    // Citus' defaults refuse what distributing the catalog needs, for this transaction only:
    // * the catalog's statement triggers keep every session's membership memo exact (src/cache.rs);
    //   Citus calls triggers on distributed tables unsafe and refuses them unless told otherwise;
    // * while the catalog tables become reference tables one by one, the others still refer to
    //   them; by default Citus then turns those into coordinator-local tables (which fails for
    //   extension tables, whose copies already exist on the workers).
    // Both go back to what they were once the steps ran.
    let mut restore = Vec::new();
    for (name, value) in
        [("citus.enable_unsafe_triggers", "on"), ("citus.enable_local_reference_table_foreign_keys", "off")]
    {
        let was = spi(Spi::get_one_with_args::<String>("SELECT pg_catalog.current_setting($1)", &[name.into()]));
        set_local_setting(name, value);
        restore.push((name, was.unwrap_or_default()));
    }
    let mut ran = Vec::new();
    for s in &steps {
        match s {
            Step::Sql(sql) => {
                spi(Spi::run(sql));
                ran.push(format!("{sql};"));
            }
            Step::Table(name, sql) => {
                make_citus_table(name, sql);
                ran.push(format!("{sql};"));
            }
            Step::Isolate(t, _) => {
                let ddl = isolation(t, true);
                ran.extend(ddl.lines().filter(|l| !l.starts_with("--")).map(str::to_owned));
            }
        }
    }
    for (name, was) in restore {
        set_local_setting(name, &was);
    }
    SetOfIterator::new(ran)
}

/// `relid` as SQL (schema-qualified and quoted where needed, as regclass prints it).
fn relation_sql(relid: pg_sys::Oid) -> String {
    spi(Spi::get_one_with_args::<String>("SELECT $1::oid::regclass::text", &[relid.into()])).unwrap_or_default()
}

fn set_local_setting(name: &str, value: &str) {
    spi(Spi::run_with_args("SELECT pg_catalog.set_config($1, $2, true)", &[name.into(), value.into()]));
}
