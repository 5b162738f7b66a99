//! The signed tenant context: a tenant context the workers of a Citus cluster can trust without
//! reading any table (the token, its HMAC and the key it is signed with). Distributing the tables
//! is `distribution.rs`'s.
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
use pgrx::{pg_sys, Uuid};
use sha2::{Digest, Sha256};

use crate::citus::citus_installed;
use crate::context::{self, Right};
use crate::errors::{spi, Error};
use crate::settings::{self, local_transaction_id};

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
    /// The key, once read (per backend).
    static KEY: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// Why there was no key, and when the file is to be tried again: absence is remembered for
    /// `KEY_RETRY` only, so a key created later is found within that time. (Without it, every
    /// `set_organization` of a database without Citus tried to open the file: a failed open()
    /// was a third of its time.)
    static NO_KEY: RefCell<Option<(std::time::Instant, String)>> = const { RefCell::new(None) };
}

/// How long a backend trusts that there is no key file before it looks again.
const KEY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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
pub(crate) fn load_key() -> Result<Vec<u8>, String> {
    if let Some(k) = KEY.with(|k| k.borrow().clone()) {
        return Ok(k);
    }
    let now = std::time::Instant::now();
    if let Some(why) =
        NO_KEY.with(|n| n.borrow().as_ref().filter(|(at, _)| now < *at + KEY_RETRY).map(|(_, why)| why.clone()))
    {
        return Err(why);
    }
    let path = key_path();
    let key = std::fs::read_to_string(&path)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))
        .and_then(|text| parse_key(&text).map_err(|why| format!("{} is not a usable key: {why}", path.display())));
    match &key {
        Ok(key) => KEY.with(|k| *k.borrow_mut() = Some(key.clone())),
        Err(why) => NO_KEY.with(|n| *n.borrow_mut() = Some((now, why.clone()))),
    }
    key
}

pub(crate) const KEY_HINT: &str =
    "Create the same key on every node (coordinator and workers), as the server's OS user: \
     openssl rand -hex 32 > \"$PGDATA/tenancy_context.key\" && chmod 600 \"$PGDATA/tenancy_context.key\" \
     (copy that one file to every node's data directory); sessions read it on first use (a session that found none looks again a second later).";

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
        organization: settings::parse_uuid(org)?,
        slug: (*slug).to_owned(),
        read: r[0] == b'r',
        write: r[1] == b'w',
        delete: r[2] == b'd',
    })
}

// ---------------------------------------------------------------------------------------------
// The binding of this backend
// ---------------------------------------------------------------------------------------------

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
            Error::FeatureNotSupported.raise(
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

/// Called by `set_organization` once it allowed the organization: with Citus, turn on the
/// forwarding of SET LOCAL and forward the user settings; with a key, write the signed context of
/// `grant` (what `set_organization` found the transaction may do there; asked only when there is
/// a key to sign it with).
pub(crate) fn write_context(grant: impl FnOnce() -> Grant) {
    let citus = citus_installed();
    if citus {
        spi(Spi::run("SET LOCAL citus.propagate_set_commands TO 'local'"));
        // The workers check the acting user too: forward what named it in this transaction.
        for name in [settings::USER_SETTING, settings::JWT_CLAIMS_SETTING, settings::JWT_SUB_SETTING] {
            if let Some(v) = settings::setting_of_this_transaction(name) {
                set_local_statement(name, &v);
            }
        }
        ensure_distributed_transaction_id();
    }
    let Ok(key) = load_key() else { return };
    let Some(token) = sign(&key, &grant(), &current_binding()) else { return };
    if citus {
        set_local_statement(CONTEXT_SETTING, &token);
    } else {
        settings::set_local(CONTEXT_SETTING, &token);
    }
}

/// A verification: what a token verified to, for one local transaction, role and user.
struct Verified {
    lxid: u32,
    role: pg_sys::Oid,
    user: Option<Uuid>,
    token: String,
    grant: Option<Grant>,
}

thread_local! {
    /// The last verification. A sequential scan calls the policy's function once per row; this
    /// makes every call after the first cheap.
    static LAST: RefCell<Option<Verified>> = const { RefCell::new(None) };
}

/// The grant carried by `token`, if it verifies for this transaction, user and role.
pub fn verified_grant(token: &str) -> Option<Grant> {
    let lxid = local_transaction_id();
    // SAFETY: the current role's oid.
    let role = unsafe { pg_sys::GetUserId() };
    let user = context::current_user_id();
    let hit = LAST.with(|l| {
        l.borrow().as_ref().and_then(|v| {
            (v.lxid == lxid && v.role == role && v.user == user && v.token == token).then(|| v.grant.clone())
        })
    });
    if let Some(g) = hit {
        return g;
    }
    let g = load_key().ok().and_then(|key| verify(&key, token, &current_binding()));
    LAST.with(|l| *l.borrow_mut() = Some(Verified { lxid, role, user, token: token.to_owned(), grant: g.clone() }));
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    fn grant() -> Grant {
        Grant {
            organization: settings::parse_uuid("00000000-0000-0000-0000-00000000000a").unwrap(),
            slug: "acme".into(),
            read: true,
            write: true,
            delete: false,
        }
    }

    fn binding() -> Binding {
        Binding {
            user: settings::parse_uuid("a0000000-0000-0000-0000-00000000000a"),
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
        let other_user = Binding { user: settings::parse_uuid("b0000000-0000-0000-0000-00000000000b"), ..binding() };
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
