//! tenancy: turn a single-tenant PostgreSQL database into a multi-tenant one, from inside the
//! database, and keep every tenant's rows isolated with Row-Level Security.
//!
//! Load order of the extension script:
//! 1. `sql/guard.sql` (bootstrap): the install guard (the schema is taken over by the superuser
//!    running the script, and must be new and empty);
//! 2. `sql/catalog.sql`: the catalog tables in schema `tenancy`;
//! 3. the Rust functions of the modules below;
//! 4. `sql/helpers.sql`: identifiers, names and foreign key definitions built from the catalog;
//! 5. `sql/lint.sql`: tenancy.lint(), once the Rust helpers it calls exist;
//! 6. `sql/backfill/`, its files in the order of their numbers: the online backfill
//!    (`01_record.sql`: the record of a backfill and the catalog operation that writes it;
//!    `02_helpers.sql`; `03_plan.sql`: the first CALL's checks and plan; `04_indexes.sql`: the
//!    index plan; `05_step.sql`: one step of a phase; `06_procedures.sql`: tenancy.backfill,
//!    backfill_all, pending_statements, backfill_progress), `07_rollback.sql`,
//!    `08_adopt_users.sql`, and `09_comments.sql` (their comments and grants);
//! 7. `sql/citus.sql`: distribute(), distribute_all(), distribution_plan() (Citus), the
//!    catalog's subquery-free membership check;
//! 8. `sql/lifecycle.sql`: the tenant lifecycle (erase, usage, export, import) and its
//!    records;
//! 9. `sql/api.sql` (finalize): the SQL API that wraps them, comments, grants, and the
//!    hand-over of the catalog to the installing role.
use pgrx::prelude::*;

mod cache;
mod catalog;
mod citus;
mod context;
mod distribution;
mod errors;
mod export;
mod integrity;
mod lifecycle;
mod lint;
mod login;
mod lookups;
mod operator;
mod organization;
mod policies;
mod privileged;
mod probe;
mod security;
mod settings;
mod signed;
mod user_ids;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/guard.sql", name = "guard", bootstrap);
extension_sql_file!("../sql/catalog.sql", name = "catalog", requires = ["guard"]);
extension_sql_file!("../sql/helpers.sql", name = "helpers", requires = ["catalog"]);
extension_sql_file!(
    "../sql/lint.sql",
    name = "lint",
    requires = ["helpers", lint::_policy_calls, lint::_wrap_policy_calls]
);
// The backfill, one file per part, each loaded after the one before it (sql/backfill/NN_*.sql).
extension_sql_file!(
    "../sql/backfill/01_record.sql",
    name = "backfill_record",
    requires = ["lint", privileged::_privileged, security::_as_owner, lookups::get_user_organization_id]
);
extension_sql_file!("../sql/backfill/02_helpers.sql", name = "backfill_helpers", requires = ["backfill_record"]);
extension_sql_file!("../sql/backfill/03_plan.sql", name = "backfill_plan", requires = ["backfill_helpers"]);
extension_sql_file!("../sql/backfill/04_indexes.sql", name = "backfill_indexes", requires = ["backfill_plan"]);
extension_sql_file!("../sql/backfill/05_step.sql", name = "backfill_step", requires = ["backfill_indexes"]);
extension_sql_file!("../sql/backfill/06_procedures.sql", name = "backfill_procedures", requires = ["backfill_step"]);
extension_sql_file!("../sql/backfill/07_rollback.sql", name = "backfill_rollback", requires = ["backfill_procedures"]);
extension_sql_file!("../sql/backfill/08_adopt_users.sql", name = "adopt_users", requires = ["backfill_rollback"]);
extension_sql_file!("../sql/backfill/09_comments.sql", name = "backfill_comments", requires = ["adopt_users"]);
extension_sql_file!(
    "../sql/citus.sql",
    name = "citus",
    requires = ["backfill_comments", distribution::_distribute, lookups::get_user_organization_id]
);
extension_sql_file!(
    "../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "citus",
        lifecycle::_erase_batch,
        lifecycle::_erase_remaining,
        lifecycle::_erase_references,
        lifecycle::_usage,
        export::export_organization,
        lifecycle::_import_rows,
        lifecycle::_clone_batch,
        lifecycle::_lifecycle_check
    ]
);
extension_sql_file!("../sql/api.sql", name = "api", finalize);

/// In-database tests (`cargo pgrx test`): each runs inside one transaction that is rolled back.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn parse_uuid_accepts_common_forms_and_rejects_garbage() {
        use crate::settings::parse_uuid;
        let a = parse_uuid("00000000-0000-0000-0000-000000000001").unwrap();
        assert_eq!(a.to_string(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(parse_uuid("{00000000000000000000000000000001}"), Some(a));
        assert_eq!(parse_uuid(""), None);
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid("00000000-0000-0000-0000-00000000000g"), None);
        // Exactly 32 hex digits, hyphens anywhere, braces only as a pair, spaces only around.
        assert_eq!(parse_uuid("0000000000000000000000000000000001"), None);
        assert_eq!(parse_uuid("000000000000000000000000000001"), None);
        assert_eq!(parse_uuid("{00000000000000000000000000000001"), None);
        assert_eq!(parse_uuid("0000000000000000 0000000000000001"), None);
        assert_eq!(parse_uuid("00000000-0000-0000-0000-0000000000é1"), None);
        assert_eq!(parse_uuid("  00000000-0000-0000-0000-000000000001\t"), Some(a));
        assert_eq!(parse_uuid("0-0000000-0000-0000-0000-00000000000-1"), Some(a));
    }

    /// `uuid_text` writes what Postgres' uuid output and pgrx's Display write, for every nibble.
    #[pg_test]
    fn uuid_text_is_what_postgres_writes() {
        use crate::settings::{parse_uuid, uuid_text};
        for s in [
            "00000000-0000-0000-0000-000000000000",
            "0123ABCD-4567-89ef-FEDC-ba9876543210",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            let u = parse_uuid(s).unwrap();
            let pg = one::<String>(&format!("SELECT '{s}'::uuid::text")).unwrap();
            assert_eq!(uuid_text(&u), pg);
            assert_eq!(uuid_text(&u), u.to_string());
            assert_eq!(parse_uuid(&pg), Some(u));
        }
    }

    fn one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).expect(sql)
    }

    #[pg_test]
    fn without_any_setting_there_is_no_user_and_no_organization() {
        assert_eq!(crate::context::current_user_id(), None);
        assert_eq!(crate::organization::current_organization_id(), None);
        assert_eq!(one::<bool>("SELECT tenancy.current_organization_id() IS NULL"), Some(true));
    }

    #[pg_test]
    fn a_setting_written_in_this_transaction_counts_and_an_empty_one_does_not() {
        use crate::settings::{setting_of_this_transaction, USER_SETTING};
        assert_eq!(setting_of_this_transaction(USER_SETTING), None);
        Spi::run("SET LOCAL tenancy.user_id = 'a0000000-0000-0000-0000-00000000000a'").unwrap();
        assert_eq!(setting_of_this_transaction(USER_SETTING).as_deref(), Some("a0000000-0000-0000-0000-00000000000a"));
        assert_eq!(
            crate::context::current_user_id().map(|u| u.to_string()).as_deref(),
            Some("a0000000-0000-0000-0000-00000000000a")
        );
        Spi::run("SET LOCAL tenancy.user_id = ''").unwrap();
        assert_eq!(crate::context::current_user_id(), None);
    }

    #[pg_test]
    fn the_jwt_subject_is_the_user_when_no_tenancy_user_is_set() {
        Spi::run("SELECT set_config('request.jwt.claims', '{\"sub\":\"b0000000-0000-0000-0000-00000000000b\"}', true)")
            .unwrap();
        assert_eq!(
            one::<String>("SELECT tenancy.current_user_id()::text").as_deref(),
            Some("b0000000-0000-0000-0000-00000000000b")
        );
        Spi::run("SELECT set_config('request.jwt.claims', '{\"sub\":\"anonymous\"}', true)").unwrap();
        assert_eq!(crate::context::current_user_id(), None, "a non-uuid subject is no user");
    }

    #[pg_test]
    fn membership_decides_access_and_the_default_organization() {
        Spi::run(
            "SELECT tenancy.create_organization('A', 'a', '00000000-0000-0000-0000-00000000000a', '{}', 'a0000000-0000-0000-0000-00000000000a');
             SELECT tenancy.create_organization('B', 'b', '00000000-0000-0000-0000-00000000000b');
             SELECT tenancy.add_member('00000000-0000-0000-0000-00000000000b', 'a0000000-0000-0000-0000-00000000000a', 'viewer');",
        )
        .unwrap();
        assert_eq!(
            one::<bool>("SELECT tenancy.validate_client_access('a0000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-00000000000b')"),
            Some(true)
        );
        assert_eq!(
            one::<String>("SELECT tenancy.get_user_organization_id('a0000000-0000-0000-0000-00000000000a')::text")
                .as_deref(),
            Some("00000000-0000-0000-0000-00000000000a"),
            "the owner membership created with the organization is the default"
        );
        Spi::run("UPDATE tenancy.memberships SET is_active = false WHERE organization_id = '00000000-0000-0000-0000-00000000000b'").unwrap();
        assert_eq!(
            one::<bool>("SELECT tenancy.validate_client_access('a0000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-00000000000b')"),
            Some(false),
            "an inactive membership gives no access, in the very next statement"
        );
    }

    #[pg_test]
    fn enable_isolation_creates_a_boundary_and_an_access_policy_per_command_once() {
        Spi::run("CREATE TABLE t (id int PRIMARY KEY, organization_id uuid NOT NULL)").unwrap();
        let first = one::<String>("SELECT tenancy.enable_isolation('t')").unwrap();
        assert!(first.contains("FORCE ROW LEVEL SECURITY"), "{first}");
        // Context mode (the default): and the operator policy, for the catalog's owner.
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass"), Some(9));
        assert_eq!(
            one::<String>("SELECT mode FROM tenancy.tenant_tables WHERE relid = 't'::regclass").as_deref(),
            Some("context")
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass AND NOT polpermissive"),
            Some(4),
            "one restrictive boundary per command"
        );
        let second = one::<String>("SELECT tenancy.enable_isolation('t')").unwrap();
        assert!(second.contains("nothing to do"), "{second}");
        Spi::run("SELECT tenancy.disable_isolation('t')").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass"), Some(0));
        assert_eq!(one::<bool>("SELECT relrowsecurity FROM pg_class WHERE oid = 't'::regclass"), Some(false));
    }

    #[pg_test(error = "tenancy.set_organization: organization_id must not be NULL")]
    fn set_organization_refuses_null() {
        Spi::run("SELECT tenancy.set_organization(NULL)").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
