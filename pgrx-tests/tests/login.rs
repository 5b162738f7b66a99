//! Login before any tenant context on a managed install (no BYPASSRLS anywhere): the application
//! looks its user up by email with `tenancy.login_lookup`, as a role the table's owner named,
//! gets exactly the columns login needs, then sets the user and reads through the policies.
use tenancy_client_tests::*;

#[test]
fn a_login_role_reads_exactly_what_login_needs_and_nothing_else() {
    let db = "login_lookup";
    let mut c = two_tenant_db(db);
    let login = format!("{db}_login");
    role(&login, "");
    c.batch_execute(&format!(
        "CREATE TABLE public.users (id uuid PRIMARY KEY, email text NOT NULL, password_hash text NOT NULL,
                                    phone text, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id));
         CREATE UNIQUE INDEX ON public.users (email);
         CREATE INDEX ON public.users (organization_id, id);
         INSERT INTO public.users VALUES ('{USER_A}', 'alice@example.com', 'hash-a', '+49 1', '{ORG_A}'),
                                         ('{USER_B}', 'bob@example.com', 'hash-b', '+49 2', '{ORG_B}');
         SELECT tenancy.enable_isolation('public.users');
         GRANT SELECT ON public.users TO \"{db}_app\";
         SELECT tenancy.allow_login_lookup('public.users', 'email', '{{id,password_hash}}', '{login}');"
    ))
    .unwrap();
    let (sup, bypass): (bool, bool) = c
        .query_one(&format!("SELECT bool_or(rolsuper), bool_or(rolbypassrls) FROM pg_roles WHERE rolname IN ('{db}_owner', '{login}', '{db}_app')"), &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!sup && !bypass, "no superuser, no BYPASSRLS");

    // The login role: no privilege on the table at all, yet both organizations' users by email.
    let mut l = connect(&login, db);
    assert_eq!(sqlstate(l.query("SELECT * FROM public.users", &[])), "42501");
    let found: Vec<String> = l
        .query("SELECT x::text FROM tenancy.login_lookup('public.users', 'bob@example.com') x", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(found, vec![format!("{{\"id\": \"{USER_B}\", \"password_hash\": \"hash-b\"}}")]);
    let none = l.query("SELECT * FROM tenancy.login_lookup('public.users', 'nobody@example.com')", &[]).unwrap();
    assert!(none.is_empty());

    // Everybody else: refused (the application role, before and after a user is set).
    let mut app = app_session(db);
    assert_eq!(
        sqlstate(app.query("SELECT * FROM tenancy.login_lookup('public.users', 'bob@example.com')", &[])),
        "42501"
    );

    // The login flow: the id found, then the user set; the policies take it from there.
    let id: String = l
        .query_one("SELECT x->>'id' FROM tenancy.login_lookup('public.users', 'alice@example.com') x", &[])
        .unwrap()
        .get(0);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{id}'")).unwrap();
    let emails: Vec<String> =
        tx.query("SELECT email FROM public.users ORDER BY 1", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(emails, vec!["alice@example.com".to_string()]);
    drop(tx);

    // Revoked: refused from the very next statement of the login role's open session; logged.
    c.batch_execute("SELECT tenancy.revoke_login_lookup('public.users')").unwrap();
    assert_eq!(
        sqlstate(l.query("SELECT * FROM tenancy.login_lookup('public.users', 'bob@example.com')", &[])),
        "42501"
    );
    let logged: i64 = c
        .query_one(
            "SELECT count(*) FROM tenancy.migration_log WHERE operation IN ('allow_login_lookup', 'revoke_login_lookup')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(logged, 2);
    println!(
        "login: a role without BYPASSRLS found users of both organizations by email, columns id and password_hash only"
    );
}
