//! Every failure reaches the client with a specific SQLSTATE, a message saying what was wrong,
//! and a hint saying what to do.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raise an ERROR with `code`, `message` and `hint`. Never returns.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "tenancy").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Unwrap an SPI result; an SPI failure is an internal error (the statements are fixed).
#[track_caller]
pub fn spi<T>(r: Result<T, pgrx::spi::SpiError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenancy: internal query failed: {e}"),
            "This is a bug in tenancy; please report it with the statement you ran.",
        ),
    }
}
