//! The membership lookups (`lookups::membership_seen_by`, and the list of the user's organizations
//! of `lookups::organizations_with_right`) as index probes, without SPI.
//!
//! A cold lookup through SPI runs the kept join of memberships, organizations and roles with the
//! catalog's row-level security, whose policies call `tenancy.current_user_id()` (a function with
//! a pinned search_path) in their InitPlans: about 0.1 ms, as much as the application's own
//! query. `set_organization` and the first policy check of every transaction pay it when the memo
//! does not hold the answer (a pooled server serving many users). This module gives the same
//! answer from the same rows by reading the three tables' indexes directly, only where that answer
//! is provably the query's:
//!
//! * the user looked up is the acting user (the viewer): the catalog's policies then let every
//!   row the lookup needs through (the user's own membership; the organization it is a member of;
//!   every role), so row-level security removes nothing the query would have read;
//! * each table carries exactly the policy tenancy created (by name, permissive, for SELECT, to
//!   PUBLIC), and the index read is one of that table:
//!   a policy added by anyone else sends the lookup back to SPI, which applies it;
//! * the current role may SELECT each table (else SPI, which raises the error the query raises);
//! * the transaction has written nothing yet (no transaction id): a read-only SPI query reads the
//!   active snapshot, which is the one probed here; a writing transaction's SPI query takes a new
//!   snapshot after a command-counter increment, so it keeps the SPI path;
//! * Citus is not installed: there the catalog tables are reference tables whose rows live in
//!   shards (on the coordinator or on workers), and the local table is an empty or stale shell
//!   that only Citus' planner may answer for (the Citus client test removes a membership and
//!   expects the next `set_organization` to refuse: read from the shell, it was let through).
//!
//! Anything else answers `None` ("cannot probe"), and the caller runs the query. The memo in
//! `crate::cache` wraps both paths alike, so revocations are honoured exactly as before.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::{PgList, Uuid};

use crate::context::Rights;

/// The catalog tables the lookup reads, with their index and the one policy tenancy gives each.
const MEMBERSHIPS: (&CStr, &CStr, &CStr) = (c"memberships", c"memberships_user_idx", c"memberships_of_current_user");
const ORGANIZATIONS: (&CStr, &CStr, &CStr) =
    (c"organizations", c"organizations_pkey", c"organizations_of_current_user");
const ROLES: (&CStr, &CStr, &CStr) = (c"roles", c"roles_pkey", c"roles_readable_by_all");

/// The rights of `user`'s active membership in the active organization `org` (None: no such
/// membership), when the acting user `viewer` may be answered by index probes; `None` when the
/// caller must run the query instead.
pub(crate) fn membership(viewer: Option<&str>, user: &str, org: Uuid) -> Option<Option<Rights>> {
    // SAFETY: catalog lookups and index scans of tables opened (and locked) here, with the active
    // snapshot; every tuple read is copied out before its scan ends.
    unsafe {
        let c = Catalog::open(viewer, user)?;
        let org_bytes = *org.as_bytes();
        let org_datum = pg_sys::Datum::from(org_bytes.as_ptr());
        let keys = [
            c.memberships.key(c.user_att, c.user_key.proc, c.user_key.datum),
            c.memberships.key(c.memberships.attnum(c"organization_id")?, pg_sys::F_UUID_EQ, org_datum),
        ];
        let found = c.memberships.first(c.snap, &keys, |t| Some((t.bool(c"is_active")?, t.text(c"role")?)))?;
        let Some((true, role)) = found else { return Some(None) };
        if !c.organization_is_active(org_datum)? {
            return Some(None);
        }
        Some(c.role_bits(&role)?.map(Rights::from_bits))
    }
}

/// The active organizations in which `user`'s active membership holds a role granting every
/// right of `bits` (1 read, 2 write, 4 delete; 0: membership alone), in the order of their ids,
/// when the acting user `viewer` may be answered by index probes (the conditions of
/// `membership`); `None` when the caller must run the query instead. What the query
/// `lookups::member_orgs_sql` answers, from the same rows: the user's memberships through
/// `memberships_user_idx`, each one's organization through its primary key and role through
/// roles' (read once per role name).
pub(crate) fn organizations(viewer: Option<&str>, user: &str, bits: i32) -> Option<Vec<Uuid>> {
    // SAFETY: as in `membership`.
    unsafe {
        let c = Catalog::open(viewer, user)?;
        let mut active: Vec<([u8; 16], String)> = Vec::new();
        c.memberships.each(c.snap, &[c.memberships.key(c.user_att, c.user_key.proc, c.user_key.datum)], |t| {
            if t.bool(c"is_active")? {
                active.push((t.uuid(c"organization_id")?, t.text(c"role")?));
            }
            Some(())
        })?;
        let mut role_bits: Vec<(String, Option<i32>)> = Vec::new();
        let mut found = Vec::new();
        for (org, role) in active {
            let rights = match role_bits.iter().find(|(name, _)| *name == role) {
                Some((_, b)) => *b,
                None => {
                    let b = c.role_bits(&role)?;
                    role_bits.push((role, b));
                    b
                }
            };
            // No such role: the query's join drops the membership.
            if rights.is_some_and(|r| r & bits == bits)
                && c.organization_is_active(pg_sys::Datum::from(org.as_ptr()))?
            {
                found.push(org);
            }
        }
        // ORDER BY the uuid: uuid_cmp compares the 16 bytes as memcmp does.
        found.sort_unstable();
        Some(found.into_iter().map(Uuid::from_bytes).collect())
    }
}

/// The three catalog tables, opened for a lookup that index probes may answer, with the snapshot
/// to read and the user's scan key.
struct Catalog {
    snap: pg_sys::Snapshot,
    memberships: Table,
    organizations: Table,
    roles: Table,
    user_att: pg_sys::AttrNumber,
    user_key: UserKey,
}

impl Catalog {
    /// The catalog, when a lookup of `user` for the acting user `viewer` may be answered by
    /// probes (the module's conditions); None otherwise.
    ///
    /// # Safety
    /// Opens and locks the tables, reads the transaction's state and active snapshot.
    unsafe fn open(viewer: Option<&str>, user: &str) -> Option<Catalog> {
        let snap = probe_snapshot(viewer, user)?;
        let memberships = Table::open(MEMBERSHIPS)?;
        let organizations = Table::open(ORGANIZATIONS)?;
        let roles = Table::open(ROLES)?;
        // Every column read has the type tenancy gave it: the catalog's owner may alter its
        // tables, and a value read as another type (a bigint taken for a text pointer) crashed
        // the server. Otherwise the query answers (or raises), as it does for any change.
        let (uuid, text, boolean) = (pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::BOOLOID);
        let typed = memberships.has(&[(c"organization_id", uuid), (c"role", text), (c"is_active", boolean)])
            && organizations.has(&[(c"id", uuid), (c"is_active", boolean)])
            && roles.has(&[(c"name", text), (c"can_read", boolean), (c"can_write", boolean), (c"can_delete", boolean)]);
        if !typed {
            return None;
        }
        let user_att = memberships.attnum(c"user_id")?;
        let user_key = UserKey::of(pg_sys::get_atttype(memberships.relid, user_att), user)?;
        Some(Catalog { snap, memberships, organizations, roles, user_att, user_key })
    }

    /// Is the organization (a uuid datum) there and active? None: its row could not be read.
    unsafe fn organization_is_active(&self, org: pg_sys::Datum) -> Option<bool> {
        let keys = [self.organizations.key(self.organizations.attnum(c"id")?, pg_sys::F_UUID_EQ, org)];
        Some(self.organizations.first(self.snap, &keys, |t| t.bool(c"is_active"))? == Some(true))
    }

    /// The rights of role `name` as bits (1 read, 2 write, 4 delete); Some(None): no such role.
    unsafe fn role_bits(&self, name: &str) -> Option<Option<i32>> {
        let text = pg_sys::cstring_to_text_with_len(name.as_ptr() as *const _, name.len() as i32);
        let keys = [self.roles.key(self.roles.attnum(c"name")?, pg_sys::F_TEXTEQ, pg_sys::Datum::from(text))];
        self.roles.first(self.snap, &keys, |t| {
            Some(
                t.bool(c"can_read")? as i32
                    | (t.bool(c"can_write")? as i32) << 1
                    | (t.bool(c"can_delete")? as i32) << 2,
            )
        })
    }
}

/// The snapshot a probe reads, when the lookup may be answered by probes at all: the user looked
/// up is the viewer, Citus is not installed, the transaction has no transaction id and the
/// active snapshot is an MVCC one (see the module's comment).
///
/// # Safety
/// Reads the transaction's state and active snapshot.
unsafe fn probe_snapshot(viewer: Option<&str>, user: &str) -> Option<pg_sys::Snapshot> {
    if viewer != Some(user) || crate::citus::citus_installed() {
        return None;
    }
    if pg_sys::GetCurrentTransactionIdIfAny() != pg_sys::InvalidTransactionId {
        return None;
    }
    let snap = pg_sys::GetActiveSnapshot();
    (!snap.is_null() && (*snap).snapshot_type == pg_sys::SnapshotType::SNAPSHOT_MVCC).then_some(snap)
}

/// A user id as a scan key's argument: the column's type decides the equality and the datum.
struct UserKey {
    proc: u32,
    datum: pg_sys::Datum,
    /// The uuid's bytes, which a uuid datum points to.
    _bytes: Box<[u8; 16]>,
}

impl UserKey {
    unsafe fn of(typid: pg_sys::Oid, user: &str) -> Option<UserKey> {
        let mut bytes = Box::new([0u8; 16]);
        let (proc, datum) = match typid {
            pg_sys::UUIDOID => {
                *bytes = *crate::settings::parse_uuid(user)?.as_bytes();
                (pg_sys::F_UUID_EQ, pg_sys::Datum::from(bytes.as_ptr()))
            }
            pg_sys::INT8OID => (pg_sys::F_INT8EQ, pg_sys::Datum::from(user.parse::<i64>().ok()?)),
            pg_sys::TEXTOID => (
                pg_sys::F_TEXTEQ,
                pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(user.as_ptr() as *const _, user.len() as i32)),
            ),
            _ => return None,
        };
        Some(UserKey { proc, datum, _bytes: bytes })
    }
}

/// One catalog table of the lookup, opened with the lock its query would take (kept to the end
/// of the transaction, as the query's is).
struct Table {
    rel: pg_sys::Relation,
    relid: pg_sys::Oid,
    index: pg_sys::Oid,
}

impl Table {
    /// Opens `tenancy.<name>` when its index exists and is an index of that table (the catalog's
    /// owner could drop it and give its name to an index of another table, whose entries would
    /// point into the wrong heap), the current role may read it and its row-level security is
    /// exactly tenancy's `policy`; None otherwise.
    unsafe fn open((name, index, policy): (&CStr, &CStr, &CStr)) -> Option<Table> {
        let relid = crate::catalog::catalog_relid(name)?;
        let index = crate::catalog::catalog_relid(index)?;
        if pg_sys::IndexGetRelation(index, true) != relid {
            return None;
        }
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            return None;
        }
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let table = Table { rel, relid, index };
        (table.only_policy(policy) && pg_sys::get_index_isvalid(index)).then_some(table)
    }

    /// Does the table carry no policy but `name` (permissive, for SELECT or ALL, to PUBLIC), or no row-level
    /// security at all (then the query reads every row, as the probe does)?
    unsafe fn only_policy(&self, name: &CStr) -> bool {
        if !(*(*self.rel).rd_rel).relrowsecurity {
            return true;
        }
        let desc = (*self.rel).rd_rsdesc;
        if desc.is_null() {
            return false;
        }
        let policies = PgList::<pg_sys::RowSecurityPolicy>::from_pg((*desc).policies);
        policies.len() == 1
            && policies.get_ptr(0).is_some_and(|p| {
                (*p).permissive
                    && matches!((*p).polcmd as u8, b'r' | b'*')
                    && for_public((*p).roles)
                    && !(*p).policy_name.is_null()
                    && CStr::from_ptr((*p).policy_name) == name
            })
    }

    /// Does the table have each column, of exactly that type?
    unsafe fn has(&self, columns: &[(&CStr, pg_sys::Oid)]) -> bool {
        columns.iter().all(|(name, typ)| self.attnum(name).is_some_and(|n| pg_sys::get_atttype(self.relid, n) == *typ))
    }

    unsafe fn attnum(&self, column: &CStr) -> Option<pg_sys::AttrNumber> {
        let n = pg_sys::get_attnum(self.relid, column.as_ptr());
        (n != pg_sys::InvalidAttrNumber as pg_sys::AttrNumber).then_some(n)
    }

    /// An equality scan key on column `attnum` (the column's collation, for text).
    unsafe fn key(&self, attnum: pg_sys::AttrNumber, proc: u32, arg: pg_sys::Datum) -> pg_sys::ScanKeyData {
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        let (mut typid, mut typmod, mut collation) = (pg_sys::InvalidOid, 0, pg_sys::InvalidOid);
        pg_sys::get_atttypetypmodcoll(self.relid, attnum, &mut typid, &mut typmod, &mut collation);
        pg_sys::ScanKeyEntryInitialize(
            &mut key,
            0,
            attnum,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::InvalidOid,
            collation,
            pg_sys::Oid::from(proc),
            arg,
        );
        key
    }

    /// `read` of the first row matching `keys` through the table's index under `snap`: Some(None)
    /// when there is none, None when `read` could not read the row.
    unsafe fn first<T>(
        &self,
        snap: pg_sys::Snapshot,
        keys: &[pg_sys::ScanKeyData],
        read: impl FnOnce(&Row) -> Option<T>,
    ) -> Option<Option<T>> {
        let mut keys = keys.to_vec();
        let scan = pg_sys::systable_beginscan(self.rel, self.index, true, snap, keys.len() as i32, keys.as_mut_ptr());
        let tuple = pg_sys::systable_getnext(scan);
        let answer = if tuple.is_null() { Some(None) } else { read(&Row { table: self, tuple }).map(Some) };
        pg_sys::systable_endscan(scan);
        answer
    }
}

impl Table {
    /// `read` of every row matching `keys` through the table's index under `snap`, in the
    /// index's order; None when `read` could not read a row.
    unsafe fn each(
        &self,
        snap: pg_sys::Snapshot,
        keys: &[pg_sys::ScanKeyData],
        mut read: impl FnMut(&Row) -> Option<()>,
    ) -> Option<()> {
        let mut keys = keys.to_vec();
        let scan = pg_sys::systable_beginscan(self.rel, self.index, true, snap, keys.len() as i32, keys.as_mut_ptr());
        let mut answer = Some(());
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() {
                break;
            }
            if read(&Row { table: self, tuple }).is_none() {
                answer = None;
                break;
            }
        }
        pg_sys::systable_endscan(scan);
        answer
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: opened by Table::open; the lock stays until the transaction ends.
        unsafe { pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE) }
    }
}

/// Is a policy's role list `{public}`, as tenancy creates it (a policy narrowed to some roles
/// leaves the others with none: they read no row, which the probe cannot tell)?
unsafe fn for_public(roles: *mut pg_sys::ArrayType) -> bool {
    let Some(roles) = std::ptr::NonNull::new(roles) else { return false };
    let mut array = pgrx::array::RawArray::from_ptr(roles);
    array.len() == 1 && array.nulls().is_none() && array.data::<pg_sys::Oid>().as_ref() == [pg_sys::InvalidOid]
}

/// A row of a scan, read before the scan ends.
struct Row<'a> {
    table: &'a Table,
    tuple: pg_sys::HeapTuple,
}

impl Row<'_> {
    unsafe fn datum(&self, column: &CStr) -> Option<pg_sys::Datum> {
        let attnum = self.table.attnum(column)?;
        let mut isnull = false;
        let value = pg_sys::heap_getattr(self.tuple, attnum as i32, (*self.table.rel).rd_att, &mut isnull);
        (!isnull).then_some(value)
    }

    unsafe fn bool(&self, column: &CStr) -> Option<bool> {
        Some(self.datum(column)?.value() != 0)
    }

    unsafe fn uuid(&self, column: &CStr) -> Option<[u8; 16]> {
        let value = self.datum(column)?;
        Some(std::ptr::read_unaligned(value.cast_mut_ptr::<[u8; 16]>()))
    }

    unsafe fn text(&self, column: &CStr) -> Option<String> {
        let value = self.datum(column)?;
        let s = pg_sys::text_to_cstring(value.cast_mut_ptr());
        Some(CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}
