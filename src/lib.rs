//! tenancy: turn a single-tenant PostgreSQL database into a multi-tenant one, from inside the
//! database, and keep every tenant's rows isolated with Row-Level Security.
//!
//! Load order of the extension script:
//! 1. `sql/catalog.sql` (bootstrap): the catalog tables in schema `tenancy`;
//! 2. the Rust functions of the modules below;
//! 3. `sql/api.sql` (finalize): the SQL API that wraps them, comments, grants, and the
//!    hand-over of the catalog to the installing role.
use pgrx::prelude::*;

pub mod context;
pub mod errors;
pub mod integrity;
pub mod lookups;
pub mod privileged;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
