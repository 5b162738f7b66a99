//! A per-backend memo of the membership lookups, so that the policy functions do not run a
//! query for every statement.
//!
//! Correctness rests on Postgres' own cache invalidation:
//! * a statement trigger on `tenancy.memberships`, `tenancy.organizations` and `tenancy.roles`
//!   calls [`lookups_changed`], which queues a relcache invalidation of those tables; Postgres
//!   sends it to every backend when the writing transaction commits (and replays it locally at
//!   the next command, or on abort);
//! * every backend that loaded tenancy registered [`on_relcache_invalidation`], which empties
//!   the memo when one of those tables (or everything) is invalidated;
//! * every read of the memo first accepts pending invalidation messages (a flag check when there
//!   are none), so a committed revocation takes effect at the caller's next statement, as it
//!   would if the lookup ran its query.
//!
//! * an answer is stored only when the snapshot it was computed under is newer than the last
//!   invalidation: a REPEATABLE READ or SERIALIZABLE transaction, a cursor or any statement still
//!   running on a snapshot taken before a revocation committed recomputes the old answer (as its
//!   snapshot demands) but never keeps it for later transactions.
//!
//! Entries are keyed by everything that changes a lookup's answer: the role running it (catalog
//! RLS and administrator rights), the acting user of the transaction (catalog RLS shows a
//! non-administrator only that user's memberships), the lookup and its arguments. The memo is
//! bounded; when full it starts over.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// At most this many answers are kept per backend (a few MB at most; a pooled connection serves
/// many users, and each request touches two or three answers).
const CAPACITY: usize = 16384;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Key {
    role: u32,
    /// The acting user, canonical (`crate::user_ids`): one string per user, whatever the spelling.
    viewer: Option<String>,
    lookup: &'static str,
    args: Vec<u8>,
}

thread_local! {
    static MEMO: RefCell<HashMap<Key, Rc<dyn Any>>> = RefCell::new(HashMap::new());
    /// Bumped by every invalidation: an answer computed across one is not stored.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// The next transaction id when the last invalidation was processed (None: none yet): a
    /// snapshot whose xmin is older may predate the change that sent it.
    static INVALIDATED_AT: Cell<Option<pg_sys::TransactionId>> = const { Cell::new(None) };
    /// The catalog tables whose invalidation empties the memo (filled outside callbacks, since
    /// an invalidation callback must not read the catalog).
    static WATCHED: Cell<[pg_sys::Oid; 3]> = const { Cell::new([pg_sys::InvalidOid; 3]) };
    /// Whether memoizing is safe here: None = to be checked again (after any invalidation of
    /// a watched table), Some(false) = the invalidating triggers are missing or disabled (an
    /// installation not yet updated to this version, or triggers turned off by a DBA).
    static ENABLED: Cell<Option<bool>> = const { Cell::new(None) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// The next transaction id to be assigned in the cluster. Read after an invalidation message has
/// arrived, it is above the id of the transaction that sent it (which committed before sending).
fn next_transaction_id() -> pg_sys::TransactionId {
    // SAFETY: a read of a monotonically increasing 64-bit counter in shared memory (written under
    // XidGenLock); receiving the invalidation message involved a lock, hence a barrier. A
    // slightly stale value is still above the sender's id, which is all that is needed.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
        let vars = pg_sys::ShmemVariableCache;
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
        let vars = pg_sys::TransamVariables;
        if vars.is_null() {
            return pg_sys::InvalidTransactionId;
        }
        let full = std::ptr::read_volatile(std::ptr::addr_of!((*vars).nextXid.value));
        // The 32-bit id is the low half of the full one (XidFromFullTransactionId).
        pg_sys::TransactionId::from(full as u32)
    }
}

/// Was the active snapshot taken after the last invalidation, so that it sees the change that
/// caused it? Its xmin must be at or past the next transaction id read when the invalidation was
/// processed: then every transaction that could have sent it had finished when the snapshot was
/// taken. (Conservative: while a writing transaction that was running then is still running,
/// answers are computed but not kept.) Answers computed under an older snapshot are not kept.
fn snapshot_is_fresh() -> bool {
    let Some(after) = INVALIDATED_AT.with(Cell::get) else { return true };
    // SAFETY: reads the active snapshot's header, if there is one.
    unsafe {
        let snap = pg_sys::GetActiveSnapshot();
        !snap.is_null()
            && (*snap).snapshot_type == pg_sys::SnapshotType::SNAPSHOT_MVCC
            && pg_sys::TransactionIdFollowsOrEquals((*snap).xmin, after)
    }
}

fn clear() {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    let next = next_transaction_id();
    INVALIDATED_AT.with(|i| {
        let keep = match i.get() {
            // SAFETY: a pure comparison of transaction ids (wraparound-aware).
            Some(old) if unsafe { pg_sys::TransactionIdFollows(old, next) } => old,
            _ => next,
        };
        i.set(Some(keep));
    });
    // try_borrow_mut: an invalidation can arrive while a lookup reads the memo; that reader
    // holds no borrow across queries (see `memo`), so this only guards against the impossible.
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.clear();
        }
    });
}

/// Relcache invalidation callback: empties the memo when a watched table, or every relation
/// (relid = InvalidOid), is invalidated. Reads no catalog.
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || WATCHED.with(|w| w.get().contains(&relid)) {
        ENABLED.with(|e| e.set(None));
        clear();
    }
}

/// The relids of the catalog tables the lookups read, when the extension is installed here.
fn catalog_relids() -> Option<[pg_sys::Oid; 3]> {
    // SAFETY: syscache lookups by name, in a normal (non-callback) context.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let rel = |name: &std::ffi::CStr| pg_sys::get_relname_relid(name.as_ptr(), nsp);
        let ids = [rel(c"memberships"), rel(c"organizations"), rel(c"roles")];
        ids.iter().all(|o| *o != pg_sys::InvalidOid).then_some(ids)
    }
}

/// Is memoizing safe in this database: are the three `lookups_changed` triggers there and
/// enabled? Checked once, and again after any invalidation of the watched tables (creating,
/// dropping, enabling or disabling a trigger invalidates its table).
fn enabled() -> bool {
    if let Some(e) = ENABLED.with(Cell::get) {
        return e;
    }
    let Some(relids) = catalog_relids() else { return false };
    WATCHED.with(|w| w.set(relids));
    clear();
    let ids: Vec<pg_sys::Oid> = relids.to_vec();
    // A read-only query (Spi::get_one would take a transaction id, as for a write: every
    // transaction after a catalog change would burn one, and the membership probe, which reads
    // only in transactions that have written nothing, would give way to the query).
    let triggers = Spi::connect(|c| {
        c.select(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_trigger t \
              WHERE t.tgname = 'lookups_changed' AND t.tgrelid = ANY ($1) AND t.tgenabled IN ('O', 'A'))",
            Some(1),
            &[ids.into()],
        )?
        .first()
        .get_one::<i64>()
    });
    // On Citus the triggers fire where the catalog's placements are written: without a placement
    // here, no invalidation reaches this node, and a memo here would outlive a revocation.
    let on = matches!(triggers, Ok(Some(3))) && crate::citus::catalog_changes_reach_this_node(&relids);
    ENABLED.with(|e| e.set(Some(on)));
    on
}

/// Register the invalidation callback once per backend (there is no way to unregister one, and
/// the library is never unloaded).
fn ensure_registered() {
    if !REGISTERED.with(Cell::get) {
        // SAFETY: registering a callback that only touches thread-local state.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
        REGISTERED.with(|r| r.set(true));
    }
}

/// The answer of `lookup(args)` for the current role and acting user: from the memo when it
/// holds one computed since the last change to the catalog tables, else computed now by
/// `compute` (which runs queries) and kept.
pub fn memo<T: Clone + 'static>(
    lookup: &'static str,
    viewer: Option<String>,
    args: &[&[u8]],
    compute: impl FnOnce() -> T,
) -> T {
    ensure_registered();
    // SAFETY: processes invalidation messages other backends sent; Postgres does this at any
    // lock acquisition, in the middle of queries too.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    if !enabled() {
        return compute();
    }
    let key = Key {
        // SAFETY: reads the current role id.
        role: unsafe { pg_sys::GetUserId() }.to_u32(),
        viewer,
        lookup,
        // Each argument prefixed by its length: user ids are of any length, so ("ab", "c") and
        // ("a", "bc") must not share a key.
        args: args.iter().flat_map(|a| (a.len() as u32).to_le_bytes().into_iter().chain(a.iter().copied())).collect(),
    };
    if let Some(hit) = MEMO.with(|m| m.borrow().get(&key).cloned()) {
        if let Some(v) = hit.downcast_ref::<T>() {
            return v.clone();
        }
    }
    let generation = GENERATION.with(Cell::get);
    let value = compute();
    if GENERATION.with(Cell::get) == generation && snapshot_is_fresh() {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= CAPACITY {
                m.clear();
            }
            m.insert(key, Rc::new(value.clone()));
        });
    }
    value
}

/// How many answers this backend keeps now (for tests and `tenancy.lookup_cache_size()`).
pub fn size() -> usize {
    MEMO.with(|m| m.borrow().len())
}

/// Queue a relcache invalidation of the catalog tables the lookups read: every backend empties
/// its memo when the current transaction commits, this one at its next command.
fn lookups_changed() {
    if let Some(relids) = catalog_relids() {
        for relid in relids {
            // SAFETY: queues an invalidation message in the current transaction.
            unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
        }
    }
    clear();
}

/// The C symbol that the install scripts of 0.1.0 and 0.2.0 (sql/versions) name for their
/// `tenancy._lookups_changed()`: a database still on one of those releases (before ALTER EXTENSION
/// UPDATE) keeps its memo exact with this library. This release creates no SQL function for it
/// (`sql = false`): its trigger is `_lookups_changed_trigger`, which nobody can call directly.
#[pg_extern(sql = false)]
pub fn _lookups_changed() {
    lookups_changed();
}

/// Internal: the statement trigger on memberships, organizations and roles. A trigger function
/// cannot be called directly, so nobody can flush every session's memo at will.
#[pg_trigger]
pub fn _lookups_changed_trigger<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    lookups_changed();
    Ok(None)
}

/// The number of membership answers this backend holds in its memo.
#[pg_extern(volatile, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn lookup_cache_size() -> i64 {
    size() as i64
}
