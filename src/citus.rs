//! Scale-out on Citus: distribute tenant tables by their tenant column, and a tenant context the
//! workers can trust without reading any table.
//!
//! Citus sends each shard a query without the policy condition; the shard's own policy filters on
//! the worker. A policy on a distributed table may not contain a subquery, and a function it calls
//! may not read a table there. So the membership is resolved on the coordinator, once, by
//! `tenancy.set_organization()`, and what the workers need travels in a transaction-local setting
//! that Citus forwards (`citus.propagate_set_commands = 'local'`):
//!
//! ```text
//! tenancy.context = v1:<organization uuid>:<slug>:<rights r|-,w|-,d|->:<HMAC-SHA256, 64 hex>
//! ```
//!
//! The MAC covers that prefix and what the verifier knows by itself: the acting user
//! (`current_user_id()`), the database role (by name: role OIDs differ between nodes) and the
//! transaction (Citus' distributed transaction id, which every worker of the transaction shares;
//! without Citus the backend and its local transaction id). The key is a file in each node's data
//! directory (`tenancy_context.key`, hex, at least 32 bytes, the same on every node), readable
//! only by the server's OS user, i.e. by superusers. A forged, truncated, altered or replayed
//! value, or one made for another user or role, verifies to nothing: NULL, which matches no row.
use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::{pg_sys, PgSqlErrorCode, Uuid};
use sha2::{Digest, Sha256};

use crate::context::{self, Right};
use crate::errors::{raise, spi};
use crate::lookups;

/// The setting that carries the signed context (written by `set_organization`).
pub const CONTEXT_SETTING: &CStr = c"tenancy.context";
/// The key file, in the data directory of every node.
pub const KEY_FILE: &str = "tenancy_context.key";
const TOKEN_VERSION: &str = "v1";
const MAC_DOMAIN: &[u8] = b"tenancy.context.v1";

// ---------------------------------------------------------------------------------------------
// HMAC-SHA256 (RFC 2104), by hand on sha2
// ---------------------------------------------------------------------------------------------

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

/// Equal in time that does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// The key, once read (per backend). Absence is not remembered: a key created later is found.
    static KEY: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The key file's text, decoded: hex (whitespace ignored), at least 32 bytes.
pub fn parse_key(text: &str) -> Result<Vec<u8>, String> {
    let hex_text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let key = hex::decode(&hex_text).map_err(|_| "it is not hexadecimal".to_string())?;
    if key.len() < 32 {
        return Err(format!("it holds {} bytes, fewer than 32", key.len()));
    }
    Ok(key)
}

fn key_path() -> std::path::PathBuf {
    // SAFETY: DataDir is set at startup and never changes in a backend.
    let dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    std::path::Path::new(&dir).join(KEY_FILE)
}

/// The key, or why there is none.
fn load_key() -> Result<Vec<u8>, String> {
    if let Some(k) = KEY.with(|k| k.borrow().clone()) {
        return Ok(k);
    }
    let path = key_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let key = parse_key(&text).map_err(|why| format!("{} is not a usable key: {why}", path.display()))?;
    KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
    Ok(key)
}

const KEY_HINT: &str = "Create the same key on every node (coordinator and workers), as the server's OS user: \
     openssl rand -hex 32 > \"$PGDATA/tenancy_context.key\" && chmod 600 \"$PGDATA/tenancy_context.key\" \
     (copy that one file to every node's data directory); sessions read it on first use.";

// ---------------------------------------------------------------------------------------------
// The token
// ---------------------------------------------------------------------------------------------

/// What the coordinator resolved: the organization, its slug and the rights the user holds there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub organization: Uuid,
    pub slug: String,
    pub read: bool,
    pub write: bool,
    pub delete: bool,
}

impl Grant {
    pub fn allows(&self, right: Right) -> bool {
        match right {
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Delete => self.delete,
        }
    }
    fn rights(&self) -> String {
        [(self.read, 'r'), (self.write, 'w'), (self.delete, 'd')]
            .iter()
            .map(|(yes, c)| if *yes { *c } else { '-' })
            .collect()
    }
}

/// What the verifier knows by itself, and what the token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub user: Option<Uuid>,
    pub role: String,
    /// None when the transaction has no identity a worker could share (fails closed).
    pub transaction: Option<String>,
}

fn mac_input(prefix: &str, b: &Binding, transaction: &str) -> Vec<u8> {
    let user = b.user.map(|u| u.to_string()).unwrap_or_default();
    let mut out = Vec::new();
    for field in [MAC_DOMAIN, prefix.as_bytes(), user.as_bytes(), b.role.as_bytes(), transaction.as_bytes()] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The token for `g`, bound to `b`; None when `b` has no transaction identity.
pub fn sign(key: &[u8], g: &Grant, b: &Binding) -> Option<String> {
    let transaction = b.transaction.as_deref()?;
    let prefix = format!("{TOKEN_VERSION}:{}:{}:{}", g.organization, g.slug, g.rights());
    let mac = hmac_sha256(key, &mac_input(&prefix, b, transaction));
    Some(format!("{prefix}:{}", hex::encode(mac)))
}

/// The grant in `token`, if tenancy made it with `key` for exactly this binding.
pub fn verify(key: &[u8], token: &str, b: &Binding) -> Option<Grant> {
    let transaction = b.transaction.as_deref()?;
    let (prefix, mac_hex) = token.rsplit_once(':')?;
    if mac_hex.len() != 64 {
        return None;
    }
    let mac = hex::decode(mac_hex).ok()?;
    let expected = hmac_sha256(key, &mac_input(prefix, b, transaction));
    if !constant_time_eq(&mac, &expected) {
        return None;
    }
    let parts: Vec<&str> = prefix.split(':').collect();
    let [version, org, slug, rights] = parts.as_slice() else { return None };
    if *version != TOKEN_VERSION || rights.len() != 3 {
        return None;
    }
    let r = rights.as_bytes();
    Some(Grant {
        organization: context::parse_uuid(org)?,
        slug: (*slug).to_owned(),
        read: r[0] == b'r',
        write: r[1] == b'w',
        delete: r[2] == b'd',
    })
}

// ---------------------------------------------------------------------------------------------
// The binding of this backend
// ---------------------------------------------------------------------------------------------

/// Is the citus extension installed in this database?
pub fn citus_installed() -> bool {
    // SAFETY: catalog lookup by name.
    unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) != pg_sys::InvalidOid }
}

pub(crate) fn local_transaction_id() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, set for the backend's lifetime.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
        {
            (*pg_sys::MyProc).lxid
        }
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
    }
}

/// How long after its distributed transaction began a signed context is honoured by a node that
/// starts taking part in that transaction (seconds). Citus lets any role give a new transaction
/// the id of an earlier one (`assign_distributed_transaction_id`), so the id alone does not stop a
/// saved context from being replayed: its start time (signed with it) bounds how long it can be.
pub const CONTEXT_MAX_AGE_SECONDS: i64 = 60;

/// The transaction, as every node taking part in it sees it, and (with Citus) when the
/// distributed transaction began (Postgres microseconds, on the coordinator's clock).
fn transaction_identity(citus: bool) -> Option<(String, Option<i64>)> {
    if citus {
        // Citus' distributed transaction id: the coordinator assigns it, each worker's
        // transaction is started with it (assign_distributed_transaction_id).
        let row = spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT initiator_node_identifier::int8, transaction_number::int8, transaction_stamp \
                   FROM pg_catalog.get_current_transaction_id()",
                Some(1),
                &[],
            )?;
            if t.is_empty() {
                return Ok::<_, pgrx::spi::SpiError>(None);
            }
            let r = t.first();
            let stamp = r.get::<pgrx::datum::TimestampWithTimeZone>(3)?.map(pg_sys::TimestampTz::from);
            Ok(Some((r.get::<i64>(1)?.unwrap_or(0), r.get::<i64>(2)?.unwrap_or(0), stamp)))
        }))?;
        let (node, number, stamp) = row;
        let stamp = stamp?;
        return (number != 0).then(|| (format!("citus:{node}:{number}:{stamp}"), Some(stamp)));
    }
    // SAFETY: backend-local globals set at backend start.
    let (pid, start, db) = unsafe { (pg_sys::MyProcPid, pg_sys::MyStartTimestamp, pg_sys::MyDatabaseId.to_u32()) };
    Some((format!("local:{db}:{pid}:{start}:{}", local_transaction_id()), None))
}

/// Is a context of the distributed transaction that began at `stamp` still honoured in a local
/// transaction that began at `local_start`? Not when it began more than CONTEXT_MAX_AGE_SECONDS
/// earlier (a replay); one from the future is a clock difference between nodes.
pub fn fresh_enough(stamp: i64, local_start: i64) -> bool {
    local_start.saturating_sub(stamp) <= CONTEXT_MAX_AGE_SECONDS * 1_000_000
}

fn current_role_name() -> String {
    // SAFETY: name of the current role; noerr gives NULL for a dropped role.
    unsafe {
        let p = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

pub fn current_binding() -> Binding {
    let (transaction, stamp) = match transaction_identity(citus_installed()) {
        Some((id, stamp)) => (Some(id), stamp),
        None => (None, None),
    };
    // SAFETY: the start time of the current local transaction.
    let local_start = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    Binding {
        user: context::current_user_id(),
        role: current_role_name(),
        // A distributed transaction older than CONTEXT_MAX_AGE_SECONDS when this node joined it
        // has no identity here: nothing made for it verifies (fails closed).
        transaction: transaction.filter(|_| stamp.is_none_or(|s| fresh_enough(s, local_start))),
    }
}

// ---------------------------------------------------------------------------------------------
// Writing the context (set_organization) and reading it (the distributed policies)
// ---------------------------------------------------------------------------------------------

/// Make the coordinator's transaction a distributed one now, so that its id is known when the
/// token is signed (Citus assigns it lazily, at the first distributed statement).
fn ensure_distributed_transaction_id() {
    // SAFETY: looks up an exported function of the loaded citus library; it takes no argument.
    unsafe {
        let f = pg_sys::load_external_function(
            c"$libdir/citus".as_ptr(),
            c"EnsureDistributedTransactionId".as_ptr(),
            false,
            std::ptr::null_mut(),
        );
        if f.is_null() {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "tenancy.set_organization: this version of Citus does not export EnsureDistributedTransactionId",
                "tenancy binds the context to Citus' distributed transaction id; use a Citus version that exports it.",
            )
        }
        let f: unsafe extern "C-unwind" fn() = std::mem::transmute(f);
        f();
    }
}

/// Set a setting for the rest of the transaction as a `SET LOCAL` statement, so that Citus'
/// utility hook forwards it to the workers of the transaction.
fn set_local_statement(name: &CStr, value: &str) {
    let sql = format!("SET LOCAL {} TO {}", quote_identifier(name.to_str().expect("ascii")), quote_literal(value));
    spi(Spi::run(&sql));
}

/// Called by `set_organization` once it allowed `org`: with Citus, turn on the forwarding of
/// SET LOCAL and forward the user settings; with a key, write the signed context.
pub fn write_context(org: Uuid) {
    let citus = citus_installed();
    if citus {
        spi(Spi::run("SET LOCAL citus.propagate_set_commands TO 'local'"));
        // The workers check the acting user too: forward what named it in this transaction.
        for name in [context::USER_SETTING, context::JWT_CLAIMS_SETTING, context::JWT_SUB_SETTING] {
            if let Some(v) = context::setting_of_this_transaction(name) {
                set_local_statement(name, &v);
            }
        }
        ensure_distributed_transaction_id();
    }
    let Ok(key) = load_key() else { return };
    let user = context::current_user();
    let user = user.as_deref();
    let grant = Grant {
        organization: org,
        slug: lookups::organization_slug(org).unwrap_or_default(),
        read: context::may_act_in(user, org, Some(Right::Read)),
        write: context::may_act_in(user, org, Some(Right::Write)),
        delete: context::may_act_in(user, org, Some(Right::Delete)),
    };
    let Some(token) = sign(&key, &grant, &current_binding()) else { return };
    if citus {
        set_local_statement(CONTEXT_SETTING, &token);
    } else {
        context::set_local(CONTEXT_SETTING, &token);
    }
}

thread_local! {
    /// The last verification: (local transaction, role, user, token) -> grant. A sequential scan
    /// calls the policy's function once per row; this makes every call after the first cheap.
    static LAST: RefCell<Option<(u32, pg_sys::Oid, Option<Uuid>, String, Option<Grant>)>> = const { RefCell::new(None) };
}

/// The grant carried by `token`, if it verifies for this transaction, user and role.
pub fn verified_grant(token: &str) -> Option<Grant> {
    let lxid = local_transaction_id();
    // SAFETY: the current role's oid.
    let role = unsafe { pg_sys::GetUserId() };
    let user = context::current_user_id();
    let hit = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .and_then(|(x, r, u, t, g)| (*x == lxid && *r == role && *u == user && t == token).then(|| g.clone()))
    });
    if let Some(g) = hit {
        return g;
    }
    let g = load_key().ok().and_then(|key| verify(&key, token, &current_binding()));
    LAST.with(|l| *l.borrow_mut() = Some((lxid, role, user, token.to_owned(), g.clone())));
    g
}

/// Distributed policies: the organization of the signed context `token`, if tenancy signed it
/// in this transaction for the current user and role, and the role there grants `privilege`.
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn signed_organization_id(token: &str, privilege: &str) -> Option<Uuid> {
    let right = Right::parse(privilege);
    verified_grant(token).filter(|g| g.allows(right)).map(|g| g.organization)
}

/// `signed_organization_id`, as the organization's slug (for text tenant columns).
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn signed_organization_slug(token: &str, privilege: &str) -> Option<String> {
    let right = Right::parse(privilege);
    verified_grant(token).filter(|g| g.allows(right) && !g.slug.is_empty()).map(|g| g.slug)
}

/// The expression a policy on a distributed table checks: no subquery, one STABLE function that
/// reads only the transaction's settings.
pub fn policy_expression(column_sql: &str, slug: bool, padded: bool, right: Right) -> String {
    let token = "NULLIF(pg_catalog.current_setting('tenancy.context', true), '')";
    let r = quote_literal(right.as_str());
    match (slug, padded) {
        (false, _) => format!("{column_sql} = tenancy.signed_organization_id({token}, {r})"),
        (true, false) => format!("{column_sql} = tenancy.signed_organization_slug({token}, {r})"),
        (true, true) => format!("{column_sql} = (tenancy.signed_organization_slug({token}, {r}))::bpchar"),
    }
}

/// Do the catalog's invalidation triggers fire on this node when `relids` (Citus tables or not)
/// change? Citus writes a reference table on each of its placements, and the triggers fire there:
/// a node without a placement of one of them (a coordinator never registered with
/// citus_set_coordinator_host) is never told, and must not memoize membership answers
/// (src/cache.rs asks this before memoizing).
pub fn catalog_changes_reach_this_node(relids: &[pg_sys::Oid]) -> bool {
    if !citus_installed() {
        return true;
    }
    let ids: Vec<pg_sys::Oid> = relids.to_vec();
    spi(Spi::get_one_with_args::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p \
                             WHERE p.logicalrelid::oid = ANY ($1) \
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard s \
                                                 JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid \
                                                WHERE s.logicalrelid = p.logicalrelid \
                                                  AND pl.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g)))",
        &[ids.into()],
    ))
    .unwrap_or(false)
}

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
    raise(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("tenancy.backfill: {name} cannot be backfilled on Citus once the catalog is distributed"),
        "Adding its foreign key to tenancy.organizations (a reference table) would make Citus recreate the table \
         under another oid during the backfill. Add the tenant column with its foreign key yourself \
         (ALTER TABLE ... ADD COLUMN organization_id uuid NOT NULL DEFAULT '<organization>' REFERENCES tenancy.organizations (id)), \
         make the keys tenant-scoped, then call tenancy.enable_isolation and tenancy.distribute.",
    )
}

// ---------------------------------------------------------------------------------------------
// Which tables get the distributed policy form
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// Tables distribute() is about to distribute: their policies take the distributed form
    /// first, since Citus refuses to distribute a table whose policies hold subqueries.
    static PLANNED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

struct Planned(pg_sys::Oid);
impl Planned {
    fn mark(relid: pg_sys::Oid) -> Planned {
        PLANNED.with(|p| p.borrow_mut().push(relid));
        Planned(relid)
    }
}
impl Drop for Planned {
    fn drop(&mut self) {
        PLANNED.with(|p| p.borrow_mut().retain(|r| *r != self.0));
    }
}

/// Is `relid` a Citus table (distributed, reference or Citus-managed local)?
pub fn is_citus_table(relid: pg_sys::Oid) -> bool {
    citus_installed()
        && spi(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::oid::regclass)",
            &[relid.into()],
        ))
        .unwrap_or(false)
}

/// Is `relid` distributed or a reference table (not a coordinator-local Citus table, which Citus
/// makes of a table that refers to a reference table; distribute() still distributes those)?
pub fn is_distributed(relid: pg_sys::Oid) -> bool {
    citus_installed()
        && spi(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
                             WHERE logicalrelid = $1::oid::regclass AND (partmethod <> 'n' OR repmodel = 't'))",
            &[relid.into()],
        ))
        .unwrap_or(false)
}

/// Should the policies of `relid` take the distributed form? When it is a Citus table, or
/// distribute() is about to make it one. On a single node without Citus: never.
pub fn distributed_form(relid: pg_sys::Oid) -> bool {
    PLANNED.with(|p| p.borrow().contains(&relid)) || is_citus_table(relid)
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
    let mut out = Vec::new();
    let catalog: Vec<pg_sys::Oid> = REFERENCE_TABLES.iter().map(|n| catalog_oid(n)).collect();
    for t in tables {
        for what in strings(
            "SELECT CASE WHEN con.contype = 'p' THEN 'primary key ' WHEN con.contype = 'u' THEN 'unique constraint ' \
                         ELSE 'unique index ' END || pg_catalog.quote_ident(coalesce(con.conname, ic.relname)::text) \
                    || ' does not include the tenant column ' || pg_catalog.quote_ident($2::text) \
                    || CASE WHEN con.oid IS NOT NULL THEN pg_catalog.format( \
                                ' (to make it tenant-scoped: ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%I, %s))', \
                                i.indrelid::regclass, con.conname, con.conname, \
                                CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, $2::text, \
                                tenancy._idents(tenancy._att_names(i.indrelid, i.indkey::int2[]))) \
                            WHEN 0 <> ALL (i.indkey::int2[]) AND i.indpred IS NULL THEN pg_catalog.format( \
                                ' (to make it tenant-scoped: DROP INDEX %s; CREATE UNIQUE INDEX %I ON %s (%I, %s))', \
                                i.indexrelid::regclass, ic.relname, i.indrelid::regclass, $2::text, \
                                tenancy._idents(tenancy._att_names(i.indrelid, i.indkey::int2[]))) \
                            ELSE '' END \
               FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
               LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid \
                     AND con.contype IN ('p', 'u') \
              WHERE i.indrelid = $1 AND i.indisunique \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid \
                                   AND a.attname = $2::name AND a.attnum = ANY (i.indkey::int2[])) \
              ORDER BY 1",
            &[t.relid.into(), t.column.clone().into()],
        ) {
            out.push(format!("{}: {what}", t.name));
        }
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
            let _mark = Planned::mark(t.relid);
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
    crate::policies::_isolation(Some(t.relid), Some(&t.column), Some(&mode), Some(roles), Some(apply))
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
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("tenancy.distribute: {name} is not a registered tenant table"),
                    "Register it first (tenancy.register_table, tenancy.backfill or tenancy.enable_isolation).",
                )
            }
        },
    };
    if tbl.is_some() {
        // Its tenant-table parents must be distributed already (or come in the same call).
        for (fk, parent_name, parent, _, _) in foreign_keys(tables[0].relid) {
            if parent != tables[0].relid && all.iter().any(|p| p.relid == parent) && !is_distributed(parent) {
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
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
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
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

/// Internal: the work of distribution_plan (apply false) and distribute / distribute_all.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _distribute(
    tbl: Option<pg_sys::Oid>,
    shard_count: Option<i32>,
    apply: Option<bool>,
) -> SetOfIterator<'static, String> {
    let apply = apply.unwrap_or(false);
    if apply {
        if !citus_installed() {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "tenancy.distribute: the citus extension is not installed in this database",
                "Distributing needs Citus: install it on every node, CREATE EXTENSION citus, add the workers, \
                 then call tenancy.distribute again. tenancy.distribution_plan() shows what it would run.",
            )
        }
        if let Err(why) = load_key() {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("tenancy.distribute: no key to sign the tenant context with: {why}"),
                KEY_HINT,
            )
        }
    }
    if let Some(n) = shard_count.filter(|n| *n < 1) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("tenancy.distribute: shard_count must be positive, not {n}"),
            "Pass a positive number of shards, or NULL for Citus' citus.shard_count.",
        )
    }
    let (tables, all) = selected(tbl);
    let steps = plan(tables, &all, shard_count);
    if !apply {
        return SetOfIterator::new(render(&steps));
    }
    let coordinator_registered =
        spi(Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node WHERE groupid = 0)"))
            .unwrap_or(false);
    if !coordinator_registered {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
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
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "tenancy.distribute: making the catalog reference tables needs a superuser: Citus creates their shards \
             in schema tenancy, which belongs to the superuser that installed tenancy",
            "Have a superuser run SELECT * FROM tenancy.distribute_all() once. After that, the owner of a tenant table \
             distributes it with tenancy.distribute(table).",
        )
    }
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
                let started =
                    spi(Spi::get_one::<pgrx::datum::TimestampWithTimeZone>("SELECT pg_catalog.clock_timestamp()"));
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
                ran.push(format!("{sql};"));
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
                    &[name.clone().into(), sql.clone().into(), started.into()],
                ));
            }
            Step::Isolate(t, _) => {
                let _mark = Planned::mark(t.relid);
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    fn grant() -> Grant {
        Grant {
            organization: context::parse_uuid("00000000-0000-0000-0000-00000000000a").unwrap(),
            slug: "acme".into(),
            read: true,
            write: true,
            delete: false,
        }
    }

    fn binding() -> Binding {
        Binding {
            user: context::parse_uuid("a0000000-0000-0000-0000-00000000000a"),
            role: "app".into(),
            transaction: Some("local:5:1234:99:17".into()),
        }
    }

    #[pg_test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 1
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first
        assert_eq!(
            hex::encode(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[pg_test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[pg_test]
    fn a_signed_token_verifies_for_its_binding() {
        let t = sign(&KEY, &grant(), &binding()).unwrap();
        assert!(t.starts_with("v1:00000000-0000-0000-0000-00000000000a:acme:rw-:"), "{t}");
        assert_eq!(verify(&KEY, &t, &binding()), Some(grant()));
    }

    #[pg_test]
    fn a_forged_token_is_rejected() {
        let t = sign(&KEY, &grant(), &binding()).unwrap();
        // Another organization, or more rights, with the MAC of the original.
        let other_org = t.replace("00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b");
        assert_eq!(verify(&KEY, &other_org, &binding()), None);
        let more_rights = t.replace(":rw-:", ":rwd:");
        assert_eq!(verify(&KEY, &more_rights, &binding()), None);
        // Signed with another key.
        let t2 = sign(&[8u8; 32], &grant(), &binding()).unwrap();
        assert_eq!(verify(&KEY, &t2, &binding()), None);
        // One MAC digit changed; garbage.
        let mut flipped = t.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(verify(&KEY, &flipped, &binding()), None);
        assert_eq!(verify(&KEY, "v1:00000000-0000-0000-0000-00000000000a:acme:rwd:", &binding()), None);
        assert_eq!(verify(&KEY, "", &binding()), None);
        assert_eq!(verify(&KEY, "00000000-0000-0000-0000-00000000000a", &binding()), None);
    }

    #[pg_test]
    fn a_truncated_token_is_rejected() {
        let t = sign(&KEY, &grant(), &binding()).unwrap();
        for n in [0, 1, 10, t.len() / 2, t.len() - 65, t.len() - 64, t.len() - 1] {
            assert_eq!(verify(&KEY, &t[..n], &binding()), None, "{n} characters");
        }
    }

    #[pg_test]
    fn a_token_replayed_in_another_transaction_is_rejected() {
        let t = sign(&KEY, &grant(), &binding()).unwrap();
        let later = Binding { transaction: Some("local:5:1234:99:18".into()), ..binding() };
        assert_eq!(verify(&KEY, &t, &later), None);
        let other_backend = Binding { transaction: Some("local:5:1235:99:17".into()), ..binding() };
        assert_eq!(verify(&KEY, &t, &other_backend), None);
        let no_identity = Binding { transaction: None, ..binding() };
        assert_eq!(verify(&KEY, &t, &no_identity), None);
        assert_eq!(sign(&KEY, &grant(), &no_identity), None, "nothing is signed without a transaction identity");
    }

    #[pg_test]
    fn a_token_of_another_user_or_role_is_rejected() {
        let t = sign(&KEY, &grant(), &binding()).unwrap();
        let other_user = Binding { user: context::parse_uuid("b0000000-0000-0000-0000-00000000000b"), ..binding() };
        assert_eq!(verify(&KEY, &t, &other_user), None);
        let no_user = Binding { user: None, ..binding() };
        assert_eq!(verify(&KEY, &t, &no_user), None);
        let other_role = Binding { role: "app2".into(), ..binding() };
        assert_eq!(verify(&KEY, &t, &other_role), None);
    }

    #[pg_test]
    fn a_citus_context_is_honoured_only_within_its_max_age() {
        let max = CONTEXT_MAX_AGE_SECONDS * 1_000_000;
        assert!(fresh_enough(1_000, 1_000 + max), "at the limit");
        assert!(!fresh_enough(1_000, 1_001 + max), "a microsecond later");
        assert!(fresh_enough(1_000 + max, 1_000), "a start time ahead of this node's clock");
    }

    #[pg_test]
    fn keys_must_be_hex_and_at_least_32_bytes() {
        assert_eq!(parse_key(&"ab".repeat(32)).map(|k| k.len()), Ok(32));
        assert_eq!(parse_key(&format!("  {}\n", "01".repeat(40))).map(|k| k.len()), Ok(40));
        assert!(parse_key(&"ab".repeat(31)).is_err());
        assert!(parse_key("not hex at all, not hex at all, not hex at all, not hex at all").is_err());
        assert!(parse_key("").is_err());
    }

    #[pg_test]
    fn the_distributed_policy_expression_has_no_subquery() {
        for (slug, padded) in [(false, false), (true, false), (true, true)] {
            for right in [Right::Read, Right::Write, Right::Delete] {
                let e = policy_expression("organization_id", slug, padded, right);
                assert!(!e.to_uppercase().contains("SELECT"), "{e}");
                assert!(e.contains("NULLIF(pg_catalog.current_setting('tenancy.context', true), '')"), "{e}");
            }
        }
    }

    #[pg_test]
    fn in_a_transaction_the_binding_is_this_backend_and_transaction() {
        let b = current_binding();
        let t = b.transaction.expect("a local transaction identity");
        assert!(t.starts_with("local:"), "{t}");
        assert_eq!(current_binding().transaction.as_deref(), Some(t.as_str()), "stable within the transaction");
    }
}
