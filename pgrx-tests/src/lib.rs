//! Shared harness for the client tests: real connections to a throwaway cluster started by
//! `scripts/test.sh` (port in TENANCY_TEST_PORT), with the extension installed on the server.
use postgres::{Client, NoTls};

pub fn port() -> u16 {
    std::env::var("TENANCY_TEST_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(28819)
}

pub fn connect(user: &str, db: &str) -> Client {
    let conn = format!("host=127.0.0.1 port={} user={user} dbname={db}", port());
    Client::connect(&conn, NoTls).unwrap_or_else(|e| panic!("connect {conn}: {e}"))
}

/// A superuser connection to the maintenance database.
pub fn superuser() -> Client {
    connect("postgres", "postgres")
}

/// Create (or recreate) login role `role`, not superuser.
pub fn role(role: &str, extra: &str) {
    let mut su = superuser();
    su.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN {extra}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;"
    ))
    .unwrap();
}

/// A fresh database owned by `owner` (a non-superuser), with tenancy installed by that owner.
pub fn fresh_db(db: &str, owner: &str) -> Client {
    role(owner, "");
    let mut su = superuser();
    su.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).unwrap();
    su.batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\"")).unwrap();
    let mut c = connect(owner, db);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    c
}

/// Let `member` SET ROLE to `granted` (done by the superuser).
pub fn grant_role(granted: &str, member: &str) {
    superuser().batch_execute(&format!("GRANT \"{granted}\" TO \"{member}\"")).unwrap();
}

/// The SQLSTATE of the error `r` carries, or "ok".
pub fn sqlstate<T>(r: Result<T, postgres::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no sqlstate: {e}")),
    }
}

pub const ORG_A: &str = "00000000-0000-0000-0000-00000000000a";
pub const ORG_B: &str = "00000000-0000-0000-0000-00000000000b";
pub const USER_A: &str = "aaaaaaaa-0000-0000-0000-000000000001";
pub const USER_B: &str = "bbbbbbbb-0000-0000-0000-000000000002";

/// A fresh database `name`, owned by the non-superuser `<name>_owner` who installed tenancy, with
/// organizations A (owner USER_A) and B (owner USER_B), and an application role `<name>_app`
/// the owner may SET ROLE to. Returns the owner's connection.
pub fn two_tenant_db(name: &str) -> Client {
    let (owner, app) = (format!("{name}_owner"), format!("{name}_app"));
    let mut c = fresh_db(name, &owner);
    role(&app, "");
    grant_role(&app, &owner);
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}', '{{}}', '{USER_B}');"
    ))
    .unwrap();
    c
}

/// A new connection to `two_tenant_db(name)` acting as the ordinary application role.
pub fn app_session(name: &str) -> Client {
    let mut c = connect(&format!("{name}_owner"), name);
    c.batch_execute(&format!("SET ROLE \"{name}_app\"")).unwrap();
    c
}

/// A superuser connection to database `db`.
pub fn superuser_of(db: &str) -> Client {
    connect("postgres", db)
}
