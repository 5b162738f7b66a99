//! Policy generators: `enable_isolation`, `isolation_sql`, `disable_isolation`.
//!
//! For every command a tenant table gets two policies:
//! * `tenancy_<cmd>_boundary`, RESTRICTIVE: AND-ed with every other policy, so no permissive
//!   policy (present or added later, hand-written or generated) can reach another organization;
//! * `tenancy_<cmd>_access`, PERMISSIVE with the same expression: grants access inside the
//!   boundary. It is left out for a command the table already has its own permissive policies for:
//!   those then decide which rows of the organization a user gets, and the boundary bounds them.
//!
//! The context is read once per statement: every expression compares the tenant column with a
//! scalar sub-select of a STABLE lookup (`(SELECT tenancy.policy_organization_ids('read'))`),
//! which Postgres runs as an InitPlan, and the comparison (`=` / `= ANY`) stays indexable.
//!
//! What was created is recorded in `tenancy.tenant_tables.details->'isolation'` (DDL and the
//! catalog state of each policy, the RLS flags the table had before, the default that was set),
//! so that a second call changes only what differs and `disable_isolation` removes exactly
//! that, never a policy somebody wrote by hand.
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::{pg_sys, JsonB};
use serde_json::{json, Map, Value};

use crate::catalog;
use crate::context::Right;
use crate::errors::{spi, Error};
use crate::security;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Membership,
    Context,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "membership" => Mode::Membership,
            "context" => Mode::Context,
            other => Error::InvalidParameter.raise(
                format!("tenancy: unknown isolation mode {other:?}"),
                "Use 'membership' (rows of every organization the user belongs to) or 'context' \
                 (rows of the organization chosen for the transaction).",
            ),
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Mode::Membership => "membership",
            Mode::Context => "context",
        }
    }
}

/// How the tenant column refers to an organization.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    /// uuid: the organization id
    Id,
    /// text or varchar: the organization slug
    Slug,
    /// character(n): the slug, compared as bpchar so an index on the column stays usable
    PaddedSlug,
}

impl Column {
    fn registry_type(self) -> &'static str {
        match self {
            Column::Id => "uuid",
            Column::Slug | Column::PaddedSlug => "text",
        }
    }
    fn default_expr(self) -> &'static str {
        match self {
            Column::Id => "tenancy.current_organization_id()",
            Column::Slug | Column::PaddedSlug => "tenancy.current_organization_slug()",
        }
    }
}

/// The table asked for, checked.
struct Target {
    relid: pg_sys::Oid,
    name: String,
    partitioned: bool,
    column: String,
    kind: Column,
    default_expr: Option<String>,
    not_null: bool,
    /// A Citus table (or about to become one): policies without subqueries (`crate::signed`).
    distributed: bool,
}

/// A relation that gets policies: the table, and each partition of a partitioned table.
struct Relation {
    relid: pg_sys::Oid,
    name: String,
    rls: bool,
    force: bool,
}

/// A policy as the catalog has it.
struct Existing {
    name: String,
    cmd: String,
    permissive: bool,
    state: String,
}

const COMMANDS: [(&str, &str); 4] = [("select", "r"), ("insert", "a"), ("update", "w"), ("delete", "d")];

/// What a relation of kind `kind` is, in the words of `tenancy._relkind_noun` (one noun for SQL's
/// and Rust's messages).
fn relkind_noun(kind: &str) -> String {
    spi(Spi::get_one_with_args::<String>("SELECT tenancy._relkind_noun($1::pg_catalog.\"char\")", &[kind.into()]))
        .unwrap_or_else(|| format!("relation of kind {kind}"))
}

/// The form of the policies: the one the table calls for (distributed when it is a Citus table),
/// or the distributed one for a table that `distribute()` is about to make a Citus table (Citus
/// refuses to distribute a table whose policies hold subqueries).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    AsTheTableIs,
    Distributed,
}

/// What the catalog says of relation `relid` and its column `column` (if the relation exists).
struct Facts {
    relkind: String,
    name: String,
    schema: String,
    has_column: bool,
    type_oid: Option<pg_sys::Oid>,
    default_expr: Option<String>,
    not_null: bool,
}

fn facts(relid: pg_sys::Oid, column: &str) -> Option<Facts> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relkind::text, c.oid::regclass::text, n.nspname::text, \
                    a.attnum IS NOT NULL, a.atttypid, pg_catalog.pg_get_expr(d.adbin, d.adrelid), \
                    coalesce(a.attnotnull, false) \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               LEFT JOIN pg_catalog.pg_attribute a \
                      ON a.attrelid = c.oid AND a.attname = $2::name AND a.attnum > 0 AND NOT a.attisdropped \
               LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
              WHERE c.oid = $1",
            Some(1),
            &[relid.into(), column.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some(Facts {
            relkind: r.get::<String>(1)?.unwrap_or_default(),
            name: r.get::<String>(2)?.unwrap_or_default(),
            schema: r.get::<String>(3)?.unwrap_or_default(),
            has_column: r.get::<bool>(4)?.unwrap_or(false),
            type_oid: r.get::<pg_sys::Oid>(5)?,
            default_expr: r.get::<String>(6)?,
            not_null: r.get::<bool>(7)?.unwrap_or(false),
        }))
    }))
}

/// The table asked for, checked: a table (not a view, ...) outside tenancy's and the system's
/// schemas, with column `column` of a type tenancy supports.
fn load_target(relid: pg_sys::Oid, column: &str, form: Form) -> Target {
    let Some(Facts { relkind: kind, name, schema, has_column, type_oid, default_expr, not_null }) =
        facts(relid, column)
    else {
        Error::UndefinedTable.raise(
            format!("tenancy: no relation with oid {}", relid.to_u32()),
            "Pass the table by name, e.g. 'public.shipments'.",
        )
    };
    if kind != "r" && kind != "p" {
        Error::WrongObjectType.raise(
            format!("tenancy: {name} is not a table (it is a {})", relkind_noun(&kind)),
            "Isolate the tables it reads from: row-level security lives on tables. A view should be \
             created WITH (security_invoker = true) so that their policies apply to its callers.",
        )
    }
    if matches!(schema.as_str(), "tenancy" | "pg_catalog" | "information_schema" | "pg_toast") {
        Error::WrongObjectType.raise(
            format!("tenancy: {name} is in schema {schema}, whose tables tenancy does not isolate"),
            "Isolate your own tables; tenancy's catalog has its own row-level security.",
        )
    }
    if !has_column {
        Error::UndefinedColumn.raise(
            format!("tenancy: column {} does not exist in {name}", quote_identifier(column)),
            "Add the tenant column first (tenancy.backfill does it online), or name the column this table uses.",
        )
    }
    let type_oid = type_oid.unwrap_or(pg_sys::InvalidOid);
    // The one rule for a tenant column's type is catalog::tenant_column_kind (register_table and
    // the backfill ask it too, as tenancy._tenant_column_kind); char(n) is compared as bpchar.
    // SAFETY: syscache lookup; resolves domains to the type they are based on.
    let base = unsafe { pg_sys::getBaseType(type_oid) };
    let kind_of_column = match catalog::tenant_column_kind(type_oid) {
        Some("uuid") => Column::Id,
        Some("text") if base == pg_sys::BPCHAROID => Column::PaddedSlug,
        Some("text") => Column::Slug,
        _ => {
            let type_name =
                spi(Spi::get_one_with_args::<String>("SELECT pg_catalog.format_type($1, NULL)", &[type_oid.into()]))
                    .unwrap_or_default();
            Error::DatatypeMismatch.raise(
                format!(
                    "tenancy: tenant column {}.{} has type {type_name}, which tenancy does not support",
                    name,
                    quote_identifier(column)
                ),
                "Use uuid (the organization id) or text/varchar/char (the organization slug), or a domain over one of them.",
            )
        }
    };
    Target {
        relid,
        name,
        partitioned: kind == "p",
        column: column.to_owned(),
        kind: kind_of_column,
        default_expr,
        not_null,
        distributed: form == Form::Distributed || crate::citus::is_citus_table(relid),
    }
}

/// The table, then its partitions (all levels), each with its row-level security flags.
fn relations(t: &Target) -> Vec<Relation> {
    read_relations(
        // pg_partition_tree() lists nothing for a table outside any partition tree: the table first, by itself.
        "SELECT c.oid, c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity \
           FROM pg_catalog.pg_class c WHERE c.oid = $1 \
         UNION ALL \
         SELECT * FROM (SELECT c.oid, c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity \
           FROM pg_catalog.pg_partition_tree($1) p JOIN pg_catalog.pg_class c ON c.oid = p.relid \
          WHERE p.level > 0 AND c.relkind IN ('r', 'p') ORDER BY p.level, 2) partitions",
        t.relid,
    )
}

/// One relation with its row-level security flags, if it (still) exists.
fn relation(relid: pg_sys::Oid) -> Option<Relation> {
    read_relations(
        "SELECT c.oid, c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity \
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        relid,
    )
    .pop()
}

fn read_relations(sql: &str, relid: pg_sys::Oid) -> Vec<Relation> {
    spi(Spi::connect(|c| {
        let rows = c.select(sql, None, &[relid.into()])?;
        let mut out = Vec::new();
        for r in rows {
            out.push(Relation {
                relid: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                name: r.get::<String>(2)?.unwrap_or_default(),
                rls: r.get::<bool>(3)?.unwrap_or(false),
                force: r.get::<bool>(4)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// Partitions that row-level security cannot cover (foreign tables).
fn uncovered_partitions(t: &Target) -> Vec<String> {
    if !t.partitioned {
        return Vec::new();
    }
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_partition_tree($1) p \
               JOIN pg_catalog.pg_class c ON c.oid = p.relid WHERE c.relkind = 'f' ORDER BY 1",
            None,
            &[t.relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// The catalog state of a policy, as one comparable string.
const POLICY_STATE: &str = "pg_catalog.concat_ws(' | ', p.polcmd, p.polpermissive, \
      (SELECT pg_catalog.string_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1) \
         FROM pg_catalog.unnest(p.polroles) r), \
      pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))";

fn existing_policies(relid: pg_sys::Oid) -> Vec<Existing> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT p.polname::text, p.polcmd::text, p.polpermissive, {POLICY_STATE} \
                   FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 ORDER BY 1"
            ),
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(Existing {
                name: r.get::<String>(1)?.unwrap_or_default(),
                cmd: r.get::<String>(2)?.unwrap_or_default(),
                permissive: r.get::<bool>(3)?.unwrap_or(true),
                state: r.get::<String>(4)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}

/// The registry row, if any: (registered at all, the recorded isolation).
fn recorded(relid: pg_sys::Oid) -> (bool, Option<Value>) {
    let row = spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT t.details->'isolation' FROM tenancy.tenant_tables t WHERE t.relid = $1::oid::regclass",
            Some(1),
            &[relid.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        Ok(Some(t.first().get::<JsonB>(1)?.map(|j| j.0)))
    }));
    match row {
        None => (false, None),
        Some(iso) => (true, iso.filter(Value::is_object)),
    }
}

fn roles_clause(roles: &[String]) -> String {
    roles
        .iter()
        .map(|r| if r == "public" { "PUBLIC".to_owned() } else { quote_identifier(r) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check and normalize the roles the policies apply to.
fn check_roles(roles: Vec<Option<String>>) -> Vec<String> {
    if roles.is_empty() {
        Error::InvalidParameter.raise(
            "tenancy: roles must not be empty",
            "Pass the roles the policies restrict, e.g. '{authenticated}', or leave the default '{public}'.",
        )
    }
    let mut out: Vec<String> = Vec::new();
    for r in roles {
        let Some(r) = r else {
            Error::NullArgument
                .raise("tenancy: roles must not contain NULL", "Pass role names, e.g. '{authenticated}'.")
        };
        let r = if r.eq_ignore_ascii_case("public") { "public".to_owned() } else { r };
        if r != "public" {
            let exists = spi(Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
                &[r.clone().into()],
            ))
            .unwrap_or(false);
            if !exists {
                Error::UndefinedObject.raise(
                    format!("tenancy: role {} does not exist", quote_identifier(&r)),
                    "Create the role first, or pass '{public}' to restrict every role.",
                )
            }
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.len() > 1 && out.contains(&"public".to_owned()) {
        out.retain(|r| r == "public");
    }
    out
}

/// The expression a policy checks: the tenant column against the organizations (membership
/// mode) or the organization (context mode) in which the transaction holds `right`.
fn expression(column: &str, kind: Column, mode: Mode, right: Right, distributed: bool) -> String {
    let col = quote_identifier(column);
    if distributed {
        // Both modes: the organization set_organization() chose and signed on the coordinator.
        return crate::signed::policy_expression(&col, kind != Column::Id, kind == Column::PaddedSlug, right);
    }
    let r = quote_literal(right.as_str());
    match (mode, kind) {
        (Mode::Context, Column::Id) => format!("{col} = (SELECT tenancy.policy_organization_id({r}))"),
        (Mode::Context, Column::Slug) => format!("{col} = (SELECT tenancy.policy_organization_slug({r}))"),
        (Mode::Context, Column::PaddedSlug) => {
            format!("{col} = (SELECT tenancy.policy_organization_slug({r}))::bpchar")
        }
        (Mode::Membership, Column::Id) => {
            format!("{col} = ANY ((SELECT tenancy.policy_organization_ids({r}))::uuid[])")
        }
        (Mode::Membership, Column::Slug) => {
            format!("{col} = ANY ((SELECT tenancy.policy_organization_slugs({r}))::text[])")
        }
        (Mode::Membership, Column::PaddedSlug) => {
            format!("{col} = ANY ((SELECT tenancy.policy_organization_slugs({r}))::bpchar[])")
        }
    }
}

/// The policy a command gets: name and CREATE POLICY statement.
/// `operator_escape`: a context-mode boundary also passes in operator mode (`OR (SELECT
/// tenancy.operating())`). Context mode names one organization per statement, so the operator's
/// rows of every organization come through the `tenancy_operator` policy, and the boundary must let
/// them. The access policy stays a bare equality: for every role but the administrators it is the
/// only permissive policy, so the planner still sees `column = <constant>` (index order for
/// `ORDER BY ... LIMIT`).
fn policy_ddl(
    rel: &str,
    cmd: &str,
    restrictive: bool,
    roles: &str,
    t: &Target,
    mode: Mode,
    operator_escape: bool,
) -> (String, String) {
    let name = format!("tenancy_{cmd}_{}", if restrictive { "boundary" } else { "access" });
    let e = |right| {
        let eq = expression(&t.column, t.kind, mode, right, t.distributed);
        if restrictive && operator_escape {
            format!("({eq}) OR (SELECT tenancy.operating())")
        } else {
            eq
        }
    };
    let clauses = match cmd {
        "select" => format!("USING ({})", e(Right::Read)),
        "insert" => format!("WITH CHECK ({})", e(Right::Write)),
        "update" => format!("USING ({}) WITH CHECK ({})", e(Right::Write), e(Right::Write)),
        _ => format!("USING ({})", e(Right::Delete)),
    };
    let ddl = format!(
        "CREATE POLICY {} ON {rel} AS {} FOR {} TO {roles} {clauses}",
        quote_identifier(&name),
        if restrictive { "RESTRICTIVE" } else { "PERMISSIVE" },
        cmd.to_uppercase()
    );
    (name, ddl)
}

/// The permissive policy of operator mode (`crate::operator`).
pub(crate) const OPERATOR_POLICY: &str = "tenancy_operator";

/// The role that owns tenancy.organizations: its members (tenancy administrators) get the
/// operator policy. None while the schema is older than the library (before ALTER EXTENSION
/// UPDATE there is no tenancy.operating() to call).
fn catalog_owner_name() -> Option<String> {
    spi(Spi::get_one::<String>(
        "SELECT (SELECT pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text FROM pg_catalog.pg_class c \
          WHERE c.oid = pg_catalog.to_regclass('tenancy.organizations')::pg_catalog.oid \
            AND pg_catalog.to_regprocedure('tenancy.operating()') IS NOT NULL)",
    ))
}

/// `tenancy_operator`: every row, for reading and for fixes (FOR ALL: the operator must be able
/// to move or delete a misassigned row; the boundary policies still bound writes to existing
/// organizations), but only while `tenancy.operating()`, read once per statement.
fn operator_policy_ddl(rel: &str, role: &str) -> (String, String) {
    let on = "(SELECT tenancy.operating())";
    (
        OPERATOR_POLICY.to_owned(),
        format!(
            "CREATE POLICY {} ON {rel} AS PERMISSIVE FOR ALL TO {} USING ({on}) WITH CHECK ({on})",
            quote_identifier(OPERATOR_POLICY),
            quote_identifier(role)
        ),
    )
}

/// A relation as enable_isolation leaves it: the RLS flags it had before, and its policies.
struct Planned {
    name: String,
    relid: pg_sys::Oid,
    rls_was_enabled: bool,
    rls_was_forced: bool,
    /// (policy name, CREATE POLICY statement)
    policies: Vec<(String, String)>,
}

/// What enable_isolation does for a table: the statements, and what to record once they ran.
struct Plan {
    comments: Vec<String>,
    statements: Vec<String>,
    relations: Vec<Planned>,
    default_column: Option<String>,
}

/// The comments that open the plan: what the policies do, and warnings about the table.
fn header_comments(t: &Target, mode: Mode, roles_sql: &str) -> Vec<String> {
    let mut comments = vec![
        format!(
            "-- tenancy: isolate {} by {} ({}), mode {}, for {}",
            t.name,
            quote_identifier(&t.column),
            match t.kind {
                Column::Id => "uuid: the organization id",
                _ => "text: the organization slug",
            },
            mode.as_str(),
            roles_sql
        ),
        match mode {
            Mode::Membership => "-- Rows are visible and writable in the organizations the current user is an active member of \
                                 (only in the one chosen with tenancy.set_organization() or the JWT, when one is chosen), \
                                 as far as the user's role there allows (tenancy.roles: can_read, can_write, can_delete).".into(),
            Mode::Context => "-- Rows are visible and writable only in the organization this transaction acts for \
                              (tenancy.set_organization(), the JWT, or the user's default organization), \
                              as far as the user's role there allows (tenancy.roles: can_read, can_write, can_delete).".into(),
        },
        "-- The context is read once per statement (an InitPlan), and the comparison keeps an index on the column usable. \
         No context: no rows."
            .into(),
        "-- Superusers and roles with BYPASSRLS (e.g. Supabase's service_role) bypass these policies, as always; \
         FORCE ROW LEVEL SECURITY makes them apply to the table owner too."
            .into(),
        "-- Each command gets a RESTRICTIVE boundary policy, AND-ed with every other policy, so that no permissive \
         policy can reach another organization, and a PERMISSIVE access policy within it."
            .into(),
    ];
    if t.distributed {
        comments.push(
            "-- Distributed (Citus): no subqueries; each shard's policy calls a STABLE function that verifies the signed \
             context tenancy.set_organization() wrote for this transaction (tenancy.context). Without it: no rows."
                .into(),
        );
    }
    if !t.not_null {
        comments.push(format!(
            "-- WARNING: {}.{} is nullable: rows without an organization are visible to nobody the policies apply to. \
             Backfill them and SET NOT NULL (tenancy.validate_client_data_integrity() counts them).",
            t.name,
            quote_identifier(&t.column)
        ));
    }
    comments
}

/// The comments for a partitioned table with `partitions` partitions.
fn partition_comments(t: &Target, partitions: usize) -> Vec<String> {
    let mut comments = vec![format!(
        "-- {} is partitioned: its {} partition(s) get the same policies, so querying a partition directly is \
         isolated too. Partitions added later are not covered until enable_isolation({}) runs again.",
        t.name,
        partitions,
        quote_literal(&t.name)
    )];
    for f in uncovered_partitions(t) {
        comments.push(format!(
            "-- WARNING: partition {f} is a foreign table; row-level security cannot cover it when queried directly."
        ));
    }
    comments
}

/// How the policies of a table are written: the mode, and whether the boundary has the operator's
/// arm (see `policy_ddl`).
#[derive(Clone, Copy)]
struct Style {
    mode: Mode,
    operator_escape: bool,
}

/// The boundary and access policies of each command for relation `rel`: no access policy for a
/// command the relation has its own permissive policies for (`ours`: a policy tenancy recorded).
fn command_policies(
    rel: &str,
    existing: &[Existing],
    ours: &dyn Fn(&str) -> bool,
    t: &Target,
    style: Style,
    roles_sql: &str,
    comments: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut desired: Vec<(String, String)> = Vec::new();
    for (cmd, code) in COMMANDS {
        desired.push(policy_ddl(rel, cmd, true, roles_sql, t, style.mode, style.operator_escape));
        let access = policy_ddl(rel, cmd, false, roles_sql, t, style.mode, false);
        let theirs: Vec<&str> = existing
            .iter()
            .filter(|p| {
                p.permissive && (p.cmd == code || p.cmd == "*") && !ours(&p.name) && !p.name.starts_with("tenancy_")
            })
            .map(|p| p.name.as_str())
            .collect();
        if theirs.is_empty() {
            desired.push(access);
        } else {
            comments.push(format!(
                "-- {} has its own permissive {} policies ({}): they decide which rows of the organization a user \
                 gets; tenancy adds only the boundary.",
                rel,
                cmd.to_uppercase(),
                theirs.iter().map(quote_identifier).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    desired
}

/// The statements that turn relation `rel`'s policies into `desired`: create what is missing,
/// recreate what tenancy made and has changed (`recorded`: what it recorded), drop what it made
/// and no longer wants; a policy of the same name that tenancy did not make is an error.
fn policy_changes(
    rel: &str,
    desired: &[(String, String)],
    existing: &[Existing],
    recorded: Option<&Map<String, Value>>,
) -> Vec<String> {
    let ours = |name: &str| recorded.is_some_and(|m| m.contains_key(name));
    let mut statements = Vec::new();
    for (name, ddl) in desired {
        match existing.iter().find(|p| &p.name == name) {
            None => statements.push(ddl.clone()),
            Some(ex) if ours(name) => {
                let p = &recorded.expect("ours() implies a record")[name];
                let same_ddl = p.get("ddl").and_then(Value::as_str) == Some(ddl.as_str());
                let same_state = p.get("state").and_then(Value::as_str) == Some(ex.state.as_str());
                if !(same_ddl && same_state) {
                    statements.push(format!("DROP POLICY {} ON {}", quote_identifier(name), rel));
                    statements.push(ddl.clone());
                }
            }
            Some(_) => Error::DuplicateObject.raise(
                format!(
                    "tenancy: {} already has a policy named {} that tenancy did not create",
                    rel,
                    quote_identifier(name)
                ),
                "Rename or drop that policy (tenancy names its own policies tenancy_<command>_boundary and \
                 tenancy_<command>_access), then call enable_isolation again.",
            ),
        }
    }
    if let Some(m) = recorded {
        for name in m.keys() {
            if !desired.iter().any(|(n, _)| n == name) && existing.iter().any(|p| &p.name == name) {
                statements.push(format!("DROP POLICY {} ON {}", quote_identifier(name), rel));
            }
        }
    }
    statements
}

/// The column default: new rows land in the organization the transaction acts for. Adds the
/// statements and comments; returns the column whose default tenancy set (and records).
fn default_plan(
    t: &Target,
    rec: Option<&Value>,
    comments: &mut Vec<String>,
    statements: &mut Vec<String>,
) -> Option<String> {
    let rec_default_col = rec.and_then(|r| r.get("default_column")).and_then(Value::as_str);
    let rec_default_expr = rec.and_then(|r| r.get("default_expr")).and_then(Value::as_str);
    let mut default_column = None;
    if let Some(old) = rec_default_col.filter(|c| *c != t.column) {
        // The tenant column changed: take our default off the old one, if it is still ours.
        if column_default(t.relid, old).as_deref() == rec_default_expr && rec_default_expr.is_some() {
            statements.push(format!("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT", t.name, quote_identifier(old)));
        }
    }
    // A default tenancy.backfill set (the fixed organization, for the single-tenant application
    // while it converted the table) gives way to the tenant context, as no default at all does.
    let ours = rec_default_col == Some(t.column.as_str())
        && rec_default_expr.is_some()
        && t.default_expr.as_deref() == rec_default_expr;
    if ours {
        default_column = Some(t.column.clone());
    } else if t.default_expr.is_none() || t.default_expr == backfill_default(t.relid) {
        statements.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}",
            t.name,
            quote_identifier(&t.column),
            t.kind.default_expr()
        ));
        default_column = Some(t.column.clone());
    } else if let Some(cur) = &t.default_expr {
        comments.push(format!(
            "-- {}.{} keeps its own default ({cur}); tenancy sets one only where there is none.",
            t.name,
            quote_identifier(&t.column)
        ));
    }
    default_column
}

fn plan(t: &Target, mode: Mode, roles: &[String], rec: Option<&Value>) -> Plan {
    let roles_sql = roles_clause(roles);
    let rec_rel = |name: &str| rec.and_then(|r| r.get("relations")).and_then(|r| r.get(name));
    // The table itself is found under the name it had when it was isolated (it may have been renamed).
    let rec_table = rec.and_then(|r| r.get("table")).and_then(Value::as_str).and_then(rec_rel);
    let mut comments = header_comments(t, mode, &roles_sql);
    // Operator mode (tenancy.operate). With membership-mode policies for PUBLIC, the boundary
    // applies to the administrator as to everyone, and in operator mode the membership-mode
    // lookups return every organization: the access policies already open every organization's
    // rows to it, and no policy is added (a second permissive policy for the administrator would
    // change nothing and trip Supabase's linter, multiple_permissive_policies). Context mode names
    // one organization per statement: its boundaries pass in operator mode (for PUBLIC they bind
    // the administrators too, and for named roles an administrator may be a member of one of them),
    // and the operator policy below opens the rows (see policy_ddl). Where no access policy
    // reaches the administrator (the policies are for other roles, or the table's own permissive
    // policies replace an access policy), that policy too, for members of the catalog owner only:
    // the application's roles get no extra permissive policy, their access policy stays the bare
    // equality. Not on distributed tables: their workers never see operator mode (fail closed).
    let for_public = roles.iter().any(|r| r == "public");
    let operator_role = (!t.distributed).then(catalog_owner_name).flatten();
    let style = Style { mode, operator_escape: mode == Mode::Context && operator_role.is_some() };
    let mut operator_comment = false;
    let mut statements = Vec::new();
    let mut rels_out = Vec::new();
    let rels = relations(t);
    if t.partitioned {
        comments.extend(partition_comments(t, rels.len() - 1));
    }
    for rel in &rels {
        let prev = if rel.relid == t.relid { rec_table } else { rec_rel(&rel.name) };
        let was_enabled = prev.and_then(|p| p.get("rls_was_enabled")).and_then(Value::as_bool).unwrap_or(rel.rls);
        let was_forced = prev.and_then(|p| p.get("rls_was_forced")).and_then(Value::as_bool).unwrap_or(rel.force);
        let prev_policies = prev.and_then(|p| p.get("policies")).and_then(Value::as_object);
        let ours = |name: &str| prev_policies.is_some_and(|m| m.contains_key(name));
        if !rel.rls {
            statements.push(format!("ALTER TABLE {} ENABLE ROW LEVEL SECURITY", rel.name));
        }
        if !rel.force {
            statements.push(format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY", rel.name));
        }
        let existing = existing_policies(rel.relid);
        let mut desired = command_policies(&rel.name, &existing, &ours, t, style, &roles_sql, &mut comments);
        let all_access = desired.iter().filter(|(n, _)| n.ends_with("_access")).count() == COMMANDS.len();
        // Membership mode for PUBLIC with every access policy: the lookups open every organization
        // in operator mode, no policy needed. Context mode names one organization: the policy.
        if let Some(role) = operator_role.as_ref().filter(|_| !(for_public && all_access && mode == Mode::Membership)) {
            if !operator_comment {
                comments.push(format!(
                    "-- Operator mode: members of {} (the owner of tenancy.organizations) read and fix rows of every \
                     organization only in a transaction that called tenancy.operate(reason), which is logged (policy {OPERATOR_POLICY}).",
                    quote_identifier(role)
                ));
                operator_comment = true;
            }
            desired.push(operator_policy_ddl(&rel.name, role));
        }
        statements.extend(policy_changes(&rel.name, &desired, &existing, prev_policies));
        rels_out.push(Planned {
            name: rel.name.clone(),
            relid: rel.relid,
            rls_was_enabled: was_enabled,
            rls_was_forced: was_forced,
            policies: desired,
        });
    }

    let default_column = default_plan(t, rec, &mut comments, &mut statements);
    // The backfill's fill trigger put rows written without a tenant into the migration's
    // organization while the application was single-tenant. Once the conversion is complete
    // (the column is NOT NULL), isolation means such a write fails instead.
    if let Some(trigger) = finished_fill_trigger(t.relid) {
        comments.push(
            "-- The backfill's fill trigger is dropped: a row written without a tenant now fails instead of joining the migration's organization."
                .to_string(),
        );
        statements.push(format!("DROP TRIGGER IF EXISTS {} ON {}", quote_identifier(&trigger), t.name));
    }
    Plan { comments, statements, relations: rels_out, default_column }
}

/// The fill trigger of a completed tenancy.backfill of the table, if it is still there.
/// Read from the stored jsonb (not tenancy._backfill_record, typed since 0.3.0): this library also
/// serves a database still on an earlier version's SQL until ALTER EXTENSION UPDATE, and the
/// stored format is the same in every version.
fn finished_fill_trigger(relid: pg_sys::Oid) -> Option<String> {
    spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT g.tgname::text FROM tenancy.tenant_tables t \
                   JOIN pg_catalog.pg_trigger g ON g.tgrelid = t.relid AND g.tgname = t.details->'backfill'->>'trigger' \
                  WHERE t.relid = $1::oid::regclass AND t.details->'backfill'->>'phase' = 'converted')",
        &[relid.into()],
    ))
}

/// The default tenancy.backfill gave the tenant column, if it did (from the stored jsonb, as above).
fn backfill_default(relid: pg_sys::Oid) -> Option<String> {
    spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT t.details->'backfill'->>'default_expr' FROM tenancy.tenant_tables t WHERE t.relid = $1::oid::regclass)",
        &[relid.into()],
    ))
}

fn column_default(relid: pg_sys::Oid, column: &str) -> Option<String> {
    spi(Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
          WHERE d.adrelid = $1 AND a.attname = $2::name",
        &[relid.into(), column.into()],
    ))
}

fn policy_state(relid: pg_sys::Oid, name: &str) -> Option<String> {
    spi(Spi::get_one_with_args::<String>(
        &format!("SELECT {POLICY_STATE} FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 AND p.polname = $2::name"),
        &[relid.into(), name.into()],
    ))
}

fn must_own(relid: pg_sys::Oid, what: &str) {
    // The one ownership check (tenancy._owned_table, which the SQL functions call too): 42501
    // unless the current role has the privileges of the table's owner.
    spi(Spi::get_one_with_args::<String>(
        "SELECT tenancy._owned_table($1, $2, $3)",
        &[relid.into(), security::current_role().into(), what.into()],
    ));
}

/// A `--` comment line that stays one line: names and expressions put into comments come from
/// catalogs that table owners write (a quoted identifier or a string literal may hold a line
/// break), and a DBA runs this text (isolation_sql into a migration file, or psql's \gexec). A line
/// break would end the comment and turn the rest into a statement.
fn one_line(comment: &str) -> String {
    comment.replace(['\n', '\r'], " ")
}

fn render(comments: &[String], statements: &[String]) -> String {
    let mut out = String::new();
    for c in comments {
        out.push_str(&one_line(c));
        out.push('\n');
    }
    for s in statements {
        out.push_str(s);
        out.push_str(";\n");
    }
    out
}

fn record(op: &str, relid: pg_sys::Oid, args: Value) {
    let mut args = args;
    args["relid"] = json!(relid.to_u32());
    args["operation"] = json!(op);
    spi(Spi::connect_mut(|c| {
        c.update("SELECT tenancy._privileged('record_isolation', $1)", Some(1), &[JsonB(args).into()]).map(|_| ())
    }));
}

fn required<T>(name: &str, v: Option<T>) -> T {
    v.unwrap_or_else(|| {
        Error::NullArgument.raise(format!("tenancy: {name} must not be NULL"), format!("Pass a value for {name}."))
    })
}

/// Internal: the work of `enable_isolation` (apply) and `isolation_sql` (not apply).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _isolation(
    tbl: Option<pg_sys::Oid>,
    tenant_column: Option<&str>,
    mode: Option<&str>,
    roles: Option<Vec<Option<String>>>,
    apply: Option<bool>,
) -> String {
    isolation(tbl, tenant_column, mode, roles, apply, Form::AsTheTableIs)
}

/// `_isolation`, with the policies in `form`.
pub(crate) fn isolation(
    tbl: Option<pg_sys::Oid>,
    tenant_column: Option<&str>,
    mode: Option<&str>,
    roles: Option<Vec<Option<String>>>,
    apply: Option<bool>,
    form: Form,
) -> String {
    let relid = required("tbl", tbl);
    let column = required("tenant_column", tenant_column);
    let requested_mode = mode.map(Mode::parse);
    let roles = check_roles(required("roles", roles));
    let apply = apply.unwrap_or(false);
    let t = load_target(relid, column, form);
    if apply {
        must_own(relid, "isolate it");
        // Serialize concurrent calls on the table (and its partitions) before reading its state;
        // this lock does not block reads or writes.
        spi(Spi::run(&format!("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE", t.name)));
    }
    let (was_registered, rec) = recorded(relid);
    let mode = requested_mode.unwrap_or_else(|| recorded_mode(relid, rec.as_ref()));
    let p = plan(&t, mode, &roles, rec.as_ref());
    if p.statements.is_empty() {
        return format!(
            "{}\n",
            one_line(&format!("-- tenancy: {} is already isolated as requested; nothing to do.", t.name))
        );
    }
    let text = render(&p.comments, &p.statements);
    if !apply {
        return text;
    }
    for s in &p.statements {
        spi(Spi::run(s));
    }
    // Registered before the first isolation (what disable_isolation goes back to).
    let was_registered =
        rec.as_ref().and_then(|r| r.get("was_registered")).and_then(Value::as_bool).unwrap_or(was_registered);
    record_isolation(relid, &t, mode, &roles, &p, was_registered, &text);
    text
}

/// The mode of a call that names none: the one the table is isolated with, else context (the
/// default since 0.3.0: an equality with a per-statement constant, which keeps the (tenant,
/// created_at) index order).
fn recorded_mode(relid: pg_sys::Oid, rec: Option<&Value>) -> Mode {
    let recorded_mode = rec.and_then(|r| r.get("mode")).and_then(Value::as_str).map(str::to_owned);
    // Older releases may not have recorded it with the policies: the registry's column.
    let registered_mode = || {
        spi(Spi::get_one_with_args::<String>(
            "SELECT (SELECT t.mode FROM tenancy.tenant_tables t \
              WHERE t.relid = $1::oid::regclass AND t.state = 'isolated')",
            &[relid.into()],
        ))
    };
    recorded_mode.or_else(registered_mode).map_or(Mode::Context, |m| Mode::parse(&m))
}

/// Records what `isolation` just created, as the catalog has it, for the next call and for
/// disable_isolation.
fn record_isolation(
    relid: pg_sys::Oid,
    t: &Target,
    mode: Mode,
    roles: &[String],
    p: &Plan,
    was_registered: bool,
    text: &str,
) {
    let mut relations = Map::new();
    for rel in &p.relations {
        let mut policies = Map::new();
        for (policy, ddl) in &rel.policies {
            policies.insert(policy.clone(), json!({ "ddl": ddl, "state": policy_state(rel.relid, policy) }));
        }
        relations.insert(
            rel.name.clone(),
            json!({ "rls_was_enabled": rel.rls_was_enabled, "rls_was_forced": rel.rls_was_forced, "policies": policies }),
        );
    }
    let default_expr = p.default_column.as_ref().and_then(|c| column_default(relid, c));
    let isolation = json!({
        "table": t.name,
        "mode": mode.as_str(),
        "tenant_column": t.column,
        "roles": roles,
        "was_registered": was_registered,
        "default_column": p.default_column,
        "default_expr": default_expr,
        "relations": relations,
    });
    record(
        "enable_isolation",
        relid,
        json!({
            "tenant_column": t.column,
            "column_type": t.kind.registry_type(),
            "mode": mode.as_str(),
            "isolation": isolation,
            "log_details": { "mode": mode.as_str(), "tenant_column": t.column, "roles": roles,
                             "statements": p.statements.len(), "ddl": text },
        }),
    );
}

/// The statements that remove what the record `rec` says tenancy created on table `table`
/// (`relid`) and its partitions: tenancy's policies, the RLS flags it set, its column default.
fn removal_statements(relid: pg_sys::Oid, table: Relation, rec: &Value) -> Vec<String> {
    let name = table.name.clone();
    let mut statements = Vec::new();
    let empty = Map::new();
    let recorded_relations = rec.get("relations").and_then(Value::as_object).unwrap_or(&empty);
    // The table is recorded under the name it had when it was isolated.
    let table_key = rec.get("table").and_then(Value::as_str).unwrap_or(name.as_str());
    // Partitions first, the table last: the reverse of how they were isolated. A recorded name
    // counts only if it is a partition of this table now: the record is never trusted to name
    // another table (whose policies this would drop, with the caller's rights).
    let actual_partitions: Vec<pg_sys::Oid> = spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT p.relid::pg_catalog.oid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) p WHERE p.level > 0",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r.get::<pg_sys::Oid>(1)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }));
    let partitions = recorded_relations.iter().filter(|(k, _)| k.as_str() != table_key).map(|(k, v)| {
        let oid = spi(Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
            &[k.as_str().into()],
        ));
        (oid.filter(|o| actual_partitions.contains(o)).and_then(relation), v)
    });
    let table_entry = recorded_relations.get(table_key).map(|v| (Some(table), v));
    for (rel, v) in partitions.collect::<Vec<_>>().into_iter().chain(table_entry) {
        let Some(rel) = rel else { continue }; // dropped since: nothing of ours is left on it
        let existing = existing_policies(rel.relid);
        if let Some(policies) = v.get("policies").and_then(Value::as_object) {
            for policy in policies.keys() {
                // Only policies named as tenancy names its own.
                if policy.starts_with("tenancy_") && existing.iter().any(|p| &p.name == policy) {
                    statements.push(format!("DROP POLICY {} ON {}", quote_identifier(policy), rel.name));
                }
            }
        }
        if rel.force && v.get("rls_was_forced") == Some(&Value::Bool(false)) {
            statements.push(format!("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY", rel.name));
        }
        if rel.rls && v.get("rls_was_enabled") == Some(&Value::Bool(false)) {
            statements.push(format!("ALTER TABLE {} DISABLE ROW LEVEL SECURITY", rel.name));
        }
    }
    if let (Some(col), Some(expr)) =
        (rec.get("default_column").and_then(Value::as_str), rec.get("default_expr").and_then(Value::as_str))
    {
        if column_default(relid, col).as_deref() == Some(expr) {
            statements.push(format!("ALTER TABLE {name} ALTER COLUMN {} DROP DEFAULT", quote_identifier(col)));
        }
    }
    statements
}

/// Internal: the work of `disable_isolation`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _disable_isolation(tbl: Option<pg_sys::Oid>) -> String {
    let relid = required("tbl", tbl);
    let Some(table) = relation(relid) else {
        Error::UndefinedTable.raise(
            format!("tenancy: no relation with oid {}", relid.to_u32()),
            "Pass the table by name, e.g. 'public.shipments'.",
        )
    };
    let name = table.name.clone();
    // Ownership first: the record is visible to the table's owner only.
    must_own(relid, "remove its isolation");
    let (_, rec) = recorded(relid);
    let Some(rec) = rec else {
        return format!(
            "{}\n",
            one_line(&format!("-- tenancy: {name} has no isolation created by tenancy; nothing to do."))
        );
    };
    spi(Spi::run(&format!("LOCK TABLE {name} IN SHARE UPDATE EXCLUSIVE MODE")));

    let comments =
        vec![format!("-- tenancy: remove the isolation tenancy created on {name}; policies written by hand stay.")];
    let statements = removal_statements(relid, table, &rec);
    for s in &statements {
        spi(Spi::run(s));
    }
    let text = render(&comments, &statements);
    record(
        "disable_isolation",
        relid,
        json!({ "isolation": Value::Null, "log_details": { "statements": statements.len(), "ddl": text } }),
    );
    text
}
