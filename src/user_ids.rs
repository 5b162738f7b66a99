//! User ids that are not uuids: each database stores its users' ids as uuid (the default),
//! bigint or text, the type of `tenancy.memberships.user_id` (changed, while no membership or
//! invitation exists, by `tenancy.set_user_id_type`).
//!
//! Inside tenancy the acting user is a canonical string, parsed per the database's type:
//! * uuid: lower-case and hyphenated (`uuid::text`), from any form Postgres' uuid input accepts
//!   most often (with or without hyphens or braces, either case);
//! * bigint: the decimal digits of the number, with a leading `-` for a negative one; no `+`, no
//!   leading zeros, no spaces (`bigint::text`);
//! * text: exactly as given; not empty, at most [`MAX_TEXT_LEN`] bytes, no leading or trailing
//!   white space and no control character. Text ids are compared exactly (case included).
//!
//! So every spelling of one user maps to one string, which equals the column's own `::text`,
//! and no spelling of one user maps to another user's id.
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::errors::Error;

/// The longest text user id (Auth0, Clerk and Firebase subjects and cuids are far shorter).
pub const MAX_TEXT_LEN: usize = 255;

/// The types a user id may have: a fixed list, so that SQL may name them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UserIdType {
    Uuid,
    Bigint,
    Text,
}

impl UserIdType {
    /// The SQL name of the type, as it is spelled in statements tenancy builds.
    pub fn sql(self) -> &'static str {
        match self {
            UserIdType::Uuid => "pg_catalog.uuid",
            UserIdType::Bigint => "pg_catalog.int8",
            UserIdType::Text => "pg_catalog.text",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UserIdType::Uuid => "uuid",
            UserIdType::Bigint => "bigint",
            UserIdType::Text => "text",
        }
    }
}

/// The type of `tenancy.memberships.user_id` in this database (uuid when the catalog is not
/// there, or holds a type tenancy never sets).
pub fn configured() -> UserIdType {
    let Some(relid) = crate::catalog::memberships_relid() else { return UserIdType::Uuid };
    // SAFETY: syscache lookups by relation and column name.
    let typ = unsafe {
        let attnum = pg_sys::get_attnum(relid, c"user_id".as_ptr());
        if attnum == pg_sys::InvalidAttrNumber as i16 {
            return UserIdType::Uuid;
        }
        pg_sys::get_atttype(relid, attnum)
    };
    match typ {
        pg_sys::INT8OID => UserIdType::Bigint,
        pg_sys::TEXTOID => UserIdType::Text,
        _ => UserIdType::Uuid,
    }
}

/// The canonical form of `s` as a user id of type `t`, or None when it is not one.
pub fn canonical(t: UserIdType, s: &str) -> Option<String> {
    match t {
        UserIdType::Uuid => crate::settings::parse_uuid(s).map(|u| crate::settings::uuid_text(&u)),
        UserIdType::Bigint => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            let well_formed = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && s != "-0";
            if !well_formed {
                return None;
            }
            s.parse::<i64>().ok().map(|n| n.to_string())
        }
        UserIdType::Text => {
            let ok = !s.is_empty() && s.len() <= MAX_TEXT_LEN && s.trim() == s && !s.chars().any(char::is_control);
            ok.then(|| s.to_owned())
        }
    }
}

/// `canonical`, or a 22P02 error naming the rules of the configured type; `what` names the
/// value (`tenancy: {what} is not a valid ... user id`).
pub fn canonical_or_raise(t: UserIdType, s: &str, what: &str) -> String {
    canonical(t, s).unwrap_or_else(|| {
        Error::InvalidUserId.raise(
            format!("tenancy: {what} is not a valid {} user id: {s:?}", t.name()),
            match t {
                UserIdType::Uuid => "User ids are uuids in this database (tenancy.user_id_type()); pass a uuid.",
                UserIdType::Bigint => {
                    "User ids are bigints in this database (tenancy.user_id_type()): decimal digits, an optional leading '-', no leading zeros, no spaces."
                }
                UserIdType::Text => {
                    "User ids are text in this database (tenancy.user_id_type()): 1 to 255 bytes, no leading or trailing spaces, no control characters; compared exactly."
                }
            },
        )
    })
}

/// The canonical form of `user_id` as a user id of this database's type (22P02 when it is not
/// one). Internal: the management functions and adopt_users pass every user id through it.
#[pg_extern(stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _user_id(user_id: &str) -> String {
    canonical_or_raise(configured(), user_id, "user id")
}

/// The type of user ids in this database: 'uuid', 'bigint' or 'text'.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn user_id_type() -> &'static str {
    configured().name()
}
