//! tenancy's error vocabulary: every condition it raises, each with one SQLSTATE, a message
//! saying what was wrong and a hint saying what to do.
//!
//! [`Error`] names the conditions, and [`Error::code`] maps each to exactly one SQLSTATE. The
//! PL/pgSQL half of tenancy (`sql/*.sql`) raises the same conditions by their PostgreSQL names
//! (`USING ERRCODE = 'undefined_object'`); a few variants exist only there and are marked so.
//! `docs/errors.md` documents the vocabulary, one row per SQLSTATE naming its conditions.
//! `scripts/errors.py` (run by `scripts/test.sh`) checks that the three agree: every SQLSTATE
//! raised in Rust or SQL is a variant's and has its row, each row lists exactly the variants
//! of its SQLSTATE, and no Rust code raises past this enum (`PgSqlErrorCode` is named only here).
//!
//! The message style, which the checker enforces on every Rust and SQL raise:
//! - `tenancy.<function>: ...` when the check belongs to one public function (its arguments, its
//!   preconditions): the caller learns which call of a script failed, e.g.
//!   `tenancy.backfill: batch_size must be between 1 and 10000000, not 0`;
//! - `tenancy: ...` when the check is shared by several functions (a helper: the acting user,
//!   the table owner, an organization looked up by id, the catalog), e.g.
//!   `tenancy: organization 0c1b... does not exist`.
//!
//! The message says what is wrong in lower case, without a trailing period, naming the object;
//! the hint is one or more sentences saying what to do.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// A condition tenancy raises. Several conditions may share a SQLSTATE (a client tells them apart
/// by the message); one condition never has two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A required argument is NULL (`22004`).
    NullArgument,
    /// An argument (or an input's content) has a value the function does not accept (`22023`).
    InvalidParameter,
    /// A user id that is not a valid id of the database's user id type (`22P02`).
    InvalidUserId,
    /// Imported data that differs from what its export declared (`22000`).
    #[allow(dead_code)] // raised in sql/lifecycle.sql only
    DataException,
    /// A function that needs a transaction block called outside one (`25P01`).
    NoTransaction,
    /// A schema that does not exist (`3F000`).
    #[allow(dead_code)] // raised in sql/*.sql only
    UndefinedSchema,
    /// A table (or relation oid) that does not exist (`42P01`).
    UndefinedTable,
    /// A column the table does not have (`42703`).
    UndefinedColumn,
    /// An organization id that names no organization (`42704`).
    UnknownOrganization,
    /// A table that is not a registered tenant table (`42704`).
    NotRegistered,
    /// Any other object that does not exist: a role, a tenancy role, an invitation token, a
    /// membership (`42704`).
    UndefinedObject,
    /// An object tenancy would create exists already and is not tenancy's (`42710`).
    DuplicateObject,
    /// A unique key taken: a slug, an organization id, a membership, an accepted invitation
    /// (`23505`).
    #[allow(dead_code)] // raised in sql/*.sql only
    UniqueViolation,
    /// Rows outside an organization reference its rows (`23503`).
    #[allow(dead_code)] // raised in sql/lifecycle.sql only
    ForeignKeyViolation,
    /// Rows left without an organization (`23502`).
    #[allow(dead_code)] // raised in sql/backfill/*.sql only
    NotNullViolation,
    /// The caller is not a tenancy administrator acting as itself (`42501`).
    NotAdministrator,
    /// The caller does not own the table (`42501`): the one ownership check,
    /// `tenancy._owned_table`, which Rust calls too.
    #[allow(dead_code)] // raised in sql/api.sql only
    NotTableOwner,
    /// Any other missing right: not a member, no right to do this in the organization, no acting
    /// user, a role the table's owner did not allow (`42501`).
    InsufficientPrivilege,
    /// A foreign key missing, ambiguous or in a cycle (`42830`).
    #[allow(dead_code)] // raised in sql/backfill/*.sql only
    InvalidForeignKey,
    /// A table Citus cannot distribute by its tenant column as it is defined (`42P16`).
    InvalidTableDefinition,
    /// A column of a type tenancy cannot use there (`42804`).
    DatatypeMismatch,
    /// An object of a kind the function does not take: a view, a partition, a catalog table
    /// (`42809`).
    WrongObjectType,
    /// Something that works, but not here: a version of Citus, a table whose reading could run
    /// code, a user id type with Citus (`0A000`).
    FeatureNotSupported,
    /// The object is not in the state the operation needs: a deactivated organization, an
    /// unfinished backfill, a last owner, an expired invitation (`55000`).
    PrerequisiteState,
    /// Another session is working on the object (`55006`).
    #[allow(dead_code)] // raised in sql/*.sql only
    ObjectInUse,
    /// Lock timeouts exhausted the retries (`55P03`).
    #[allow(dead_code)] // raised in sql/backfill/*.sql only
    LockNotAvailable,
    /// A limit of PostgreSQL's reached: an export line over 1 GB (`54000`).
    ProgramLimit,
    /// A bug in tenancy: an internal query failed, an impossible state (`XX000`).
    Internal,
}

impl Error {
    /// The condition's SQLSTATE.
    pub const fn code(self) -> PgSqlErrorCode {
        match self {
            Error::NullArgument => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Error::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Error::InvalidUserId => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            Error::DataException => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            Error::NoTransaction => PgSqlErrorCode::ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
            Error::UndefinedSchema => PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            Error::UndefinedTable => PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            Error::UndefinedColumn => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            Error::UnknownOrganization => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            Error::NotRegistered => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            Error::UndefinedObject => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            Error::DuplicateObject => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            Error::UniqueViolation => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            Error::ForeignKeyViolation => PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            Error::NotNullViolation => PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
            Error::NotAdministrator => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Error::NotTableOwner => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Error::InsufficientPrivilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            Error::InvalidForeignKey => PgSqlErrorCode::ERRCODE_INVALID_FOREIGN_KEY,
            Error::InvalidTableDefinition => PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
            Error::DatatypeMismatch => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            Error::WrongObjectType => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            Error::FeatureNotSupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            Error::PrerequisiteState => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Error::ObjectInUse => PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            Error::LockNotAvailable => PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            Error::ProgramLimit => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            Error::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raise an ERROR of this condition with `message` (in the module's style) and `hint`.
    /// Never returns.
    #[track_caller]
    pub fn raise(self, message: impl Into<String>, hint: impl Into<String>) -> ! {
        ErrorReport::new(self.code(), message.into(), "tenancy").set_hint(hint).report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }

    /// `table` is not a registered tenant table; `function` is the public function that needed
    /// one (`tenancy.<function>: ...`).
    #[track_caller]
    pub fn not_registered(function: &str, table: &str) -> ! {
        Error::NotRegistered.raise(
            format!("tenancy.{function}: {table} is not a registered tenant table"),
            "Register it first (tenancy.register_table, tenancy.backfill or tenancy.enable_isolation); \
             SELECT relid FROM tenancy.tenant_tables lists the registered ones.",
        )
    }
}

/// Unwrap an SPI result; an SPI failure is an internal error (the statements are fixed).
#[track_caller]
pub fn spi<T>(r: Result<T, pgrx::spi::SpiError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => Error::Internal.raise(
            format!("tenancy: internal query failed: {e}"),
            "This is a bug in tenancy; please report it with the statement you ran.",
        ),
    }
}
