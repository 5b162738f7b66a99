//! User ids that are not uuids (issue 15 item 6): the isolation guarantees, run over real
//! connections in a database whose user ids are text (Auth0/Clerk/Firebase subjects, Prisma cuids)
//! and in one whose user ids are bigints (legacy serial ids). The application role is an ordinary
//! role (not a tenancy administrator) and the tenant table is isolated in membership mode.
use postgres::Client;
use tenancy_client_tests::*;

/// The user ids of one database: the owner of A, the owner of B, a member added and removed, a
/// user invited, a user of nothing; and the application users adopted from a users table.
struct Ids {
    ty: &'static str,
    a: &'static str,
    b: &'static str,
    c: &'static str,
    invited: &'static str,
    nobody: &'static str,
    /// The users table of the application: its id column type and its rows (id, role).
    users_type: &'static str,
    users: &'static [(&'static str, &'static str)],
    /// Spellings that are not user ids of this type (tenancy.user_id = one of them is 22P02).
    malformed: &'static [&'static str],
}

const TEXT: Ids = Ids {
    ty: "text",
    a: "auth0|alice",
    b: "user_2bobXYZ",
    c: "clx1a2b3c0000qwerty",
    invited: "firebase:K9zQ",
    nobody: "auth0|zed",
    users_type: "text",
    users: &[("ckz0adm1n0000", "ADMIN"), ("ckz0st4ff0001", "STAFF"), ("ckz0st4ff0002", "STAFF")],
    malformed: &[" auth0|alice", "auth0|alice ", "auth0|al\tice"],
};

const BIGINT: Ids = Ids {
    ty: "bigint",
    a: "1",
    b: "2",
    c: "3",
    invited: "42",
    nobody: "9",
    users_type: "bigint",
    users: &[("1001", "ADMIN"), ("1002", "STAFF"), ("9223372036854775807", "STAFF")],
    malformed: &["abc", "01", "+1", "1.0", "99999999999999999999"],
};

/// Database `db` with user ids of type `ids.ty`, organizations A and B and their owners,
/// table public.items isolated in membership mode (2 rows of A, 1 of B), the app role allowed
/// to read and write it.
fn setup(db: &str, ids: &Ids) -> Client {
    let (owner, app) = (format!("{db}_owner"), format!("{db}_app"));
    let mut c = fresh_db(db, &owner);
    role(&app, "");
    grant_role(&app, &owner);
    let changed: bool = c.query_one("SELECT tenancy.set_user_id_type($1)", &[&ids.ty]).unwrap().get(0);
    assert!(changed);
    let again: bool = c.query_one("SELECT tenancy.set_user_id_type($1)", &[&ids.ty]).unwrap().get(0);
    assert!(!again, "idempotent");
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}');
         SELECT tenancy.add_member('{ORG_A}', '{a}', 'owner');
         SELECT tenancy.add_member('{ORG_B}', '{b}', 'owner');
         CREATE TABLE public.items (id int PRIMARY KEY, organization_id uuid NOT NULL, body text);
         INSERT INTO public.items VALUES (1, '{ORG_A}', 'a1'), (2, '{ORG_A}', 'a2'), (3, '{ORG_B}', 'b1');
         SELECT tenancy.enable_isolation('public.items');
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO \"{app}\";",
        a = ids.a,
        b = ids.b
    ))
    .unwrap();
    let ty: String = c.query_one("SELECT tenancy.user_id_type()", &[]).unwrap().get(0);
    assert_eq!(ty, ids.ty);
    c
}

/// What the acting user (set by `how`) sees in one transaction of the app session: rows of
/// items, current_user_id_text(), current_organization_id().
fn as_user(app: &mut Client, how: &str) -> (i64, Option<String>, Option<String>) {
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(how).unwrap();
    let r = tx
        .query_one(
            "SELECT (SELECT count(*) FROM public.items), tenancy.current_user_id_text(),
                    tenancy.current_organization_id()::text",
            &[],
        )
        .unwrap();
    let out = (r.get(0), r.get(1), r.get(2));
    tx.commit().unwrap();
    out
}

fn user_id(u: &str) -> String {
    format!("SELECT set_config('tenancy.user_id', '{}', true)", u.replace('\'', "''"))
}

fn json_escape(s: &str) -> String {
    s.chars()
        .map(|ch| match ch {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn isolation_holds(db: &str, ids: &Ids) {
    let mut c = setup(db, ids);
    let mut app = app_session(db);

    // A member sees its own organization only; the context names the user as given.
    let (n, u, o) = as_user(&mut app, &user_id(ids.a));
    assert_eq!((n, u.as_deref(), o.as_deref()), (2, Some(ids.a), Some(ORG_A)), "{}: member of A", ids.ty);
    let (n, _, o) = as_user(&mut app, &user_id(ids.b));
    assert_eq!((n, o.as_deref()), (1, Some(ORG_B)), "{}: member of B", ids.ty);
    // A non-member sees nothing, and cannot choose an organization.
    let (n, u, o) = as_user(&mut app, &user_id(ids.nobody));
    assert_eq!((n, u.as_deref(), o), (0, Some(ids.nobody), None), "{}: non-member", ids.ty);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.nobody)).unwrap();
    assert_eq!(sqlstate(tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')"))), "42501");
    drop(tx);
    // ...nor write into one.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.nobody)).unwrap();
    assert_eq!(sqlstate(tx.batch_execute(&format!("INSERT INTO public.items VALUES (10, '{ORG_A}', 'x')"))), "42501");
    drop(tx);
    // No user: nothing.
    let (n, u, _) = as_user(&mut app, "SELECT 1");
    assert_eq!((n, u), (0, None));

    // current_user_id() cannot name a non-uuid user: an error, not a silent NULL.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.a)).unwrap();
    assert_eq!(sqlstate(tx.query_one("SELECT tenancy.current_user_id()", &[])), "42804");
    drop(tx);
    // A malformed tenancy.user_id is an error, as in uuid mode.
    for bad in ids.malformed {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&user_id(bad)).unwrap();
        assert_eq!(sqlstate(tx.query_one("SELECT count(*) FROM public.items", &[])), "22P02", "{}: {bad:?}", ids.ty);
        drop(tx);
    }

    // The runbook functions take the id as text (an untyped literal resolves to text).
    let r = c
        .query_one(
            &format!(
                "SELECT tenancy.get_user_organization_id('{a}')::text, tenancy.validate_client_access('{a}', '{ORG_A}'),
                        tenancy.validate_client_access('{a}', '{ORG_B}'), tenancy.validate_client_access('{n}', '{ORG_A}')",
                a = ids.a,
                n = ids.nobody
            ),
            &[],
        )
        .unwrap();
    let got: (Option<String>, bool, bool, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(got, (Some(ORG_A.to_string()), true, false, false), "{}", ids.ty);

    // A member with manage_members (A's owner, through the ordinary app role) adds a member by
    // its text id; the member reads A; removed, it loses access in the same session at once,
    // although its answers were memoized.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.a)).unwrap();
    let added: bool =
        tx.query_one(&format!("SELECT tenancy.add_member('{ORG_A}', '{}', 'member')", ids.c), &[]).unwrap().get(0);
    assert!(added);
    tx.commit().unwrap();
    let (n, _, o) = as_user(&mut app, &user_id(ids.c));
    assert_eq!((n, o.as_deref()), (2, Some(ORG_A)), "{}: added member", ids.ty);
    let (n, _, _) = as_user(&mut app, &user_id(ids.c));
    assert_eq!(n, 2, "{}: memoized", ids.ty);
    // (Whether the answers were kept depends on other transactions running meanwhile: the memo
    // keeps only answers computed under a snapshot newer than the last invalidation.)
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{}')", ids.c)).unwrap();
    let (n, _, o) = as_user(&mut app, &user_id(ids.c));
    assert_eq!((n, o), (0, None), "{}: removed member, same session", ids.ty);

    // The JWT subject (PostgREST's request.jwt.claims) names the user the same way.
    let claims = |sub: &str| {
        format!(
            "SELECT set_config('request.jwt.claims', '{}', true)",
            format!(r#"{{"sub": "{}", "role": "authenticated"}}"#, json_escape(sub)).replace('\'', "''")
        )
    };
    let (n, u, _) = as_user(&mut app, &claims(ids.a));
    assert_eq!((n, u.as_deref()), (2, Some(ids.a)), "{}: JWT sub", ids.ty);
    for bad in ids.malformed {
        let (n, u, _) = as_user(&mut app, &claims(bad));
        assert_eq!((n, u), (0, None), "{}: a sub {bad:?} that is not a user id is no user", ids.ty);
    }
    if ids.ty == "bigint" {
        // A numeric subject, as some legacy issuers write it.
        let (n, u, _) = as_user(&mut app, "SELECT set_config('request.jwt.claims', '{\"sub\": 1}', true)");
        assert_eq!((n, u.as_deref()), (2, Some("1")));
    }

    // Invitations: created by A's owner through the app role, accepted by a new user.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.a)).unwrap();
    let token: String = tx
        .query_one(&format!("SELECT tenancy.create_invitation('{ORG_A}', 'new@example.com', 'viewer')"), &[])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.invited)).unwrap();
    let org: String = tx.query_one("SELECT tenancy.accept_invitation($1)::text", &[&token]).unwrap().get(0);
    assert_eq!(org, ORG_A);
    tx.commit().unwrap();
    let (n, _, o) = as_user(&mut app, &user_id(ids.invited));
    assert_eq!((n, o.as_deref()), (2, Some(ORG_A)), "{}: invited user", ids.ty);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&user_id(ids.invited)).unwrap();
    assert_eq!(sqlstate(tx.batch_execute("DELETE FROM public.items")), "ok");
    let left: i64 = tx.query_one("SELECT count(*) FROM public.items", &[]).unwrap().get(0);
    assert_eq!(left, 2, "{}: a viewer deletes nothing", ids.ty);
    drop(tx);
    let r = c.query_one("SELECT invited_by::text, accepted_by::text FROM tenancy.invitations", &[]).unwrap();
    let (by, acc): (Option<String>, Option<String>) = (r.get(0), r.get(1));
    assert_eq!((by.as_deref(), acc.as_deref()), (Some(ids.a), Some(ids.invited)));

    // adopt_users: the application's users table, ids of the application's type.
    c.batch_execute(&format!("CREATE TABLE public.users (id {} PRIMARY KEY, role text NOT NULL)", ids.users_type))
        .unwrap();
    for (id, r) in ids.users {
        c.execute(&format!("INSERT INTO public.users VALUES ($1::text::{}, $2)", ids.users_type), &[id, r]).unwrap();
    }
    let adopted: Vec<(String, i64, i64)> = c
        .query(
            &format!(
                "SELECT role, candidates, added FROM tenancy.adopt_users('public.users', '{{\"ADMIN\": \"admin\", \"STAFF\": \"member\"}}', '{ORG_B}')"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(adopted, [("admin".to_string(), 1, 1), ("member".to_string(), 2, 2)], "{}", ids.ty);
    for (id, _) in ids.users {
        let (n, u, o) = as_user(&mut app, &user_id(id));
        assert_eq!((n, u.as_deref(), o.as_deref()), (1, Some(*id), Some(ORG_B)), "{}: adopted {id}", ids.ty);
    }
    // Again: nothing added (idempotent).
    let added: i64 = c
        .query_one(
            &format!("SELECT sum(added)::bigint FROM tenancy.adopt_users('public.users', '{{\"ADMIN\": \"admin\", \"STAFF\": \"member\"}}', '{ORG_B}')"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(added, 0);

    // Once members exist, the type is fixed.
    let other = if ids.ty == "text" { "bigint" } else { "text" };
    assert_eq!(sqlstate(c.batch_execute(&format!("SELECT tenancy.set_user_id_type('{other}')"))), "55000");
    let logged: i64 = c
        .query_one("SELECT count(*) FROM tenancy.migration_log WHERE operation = 'set_user_id_type'", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 1, "the change is logged once");
}

#[test]
fn text_user_ids_keep_every_isolation_guarantee() {
    isolation_holds("uid_text", &TEXT);
}

#[test]
fn bigint_user_ids_keep_every_isolation_guarantee() {
    isolation_holds("uid_bigint", &BIGINT);
}

#[test]
fn adopt_users_refuses_ids_of_the_wrong_type() {
    // A text id column with values that are not bigints, in a bigint database: nobody added.
    let mut c = setup("uid_adopt", &BIGINT);
    c.batch_execute(
        "CREATE TABLE public.users (id text PRIMARY KEY, role text NOT NULL);
         INSERT INTO public.users VALUES ('1001', 'STAFF'), ('clx_not_a_number', 'STAFF');",
    )
    .unwrap();
    let r = c.batch_execute(&format!(
        "SELECT * FROM tenancy.adopt_users('public.users', '{{\"STAFF\": \"member\"}}', '{ORG_A}')"
    ));
    assert_eq!(sqlstate(r), "22P02");
    let n: i64 = c.query_one("SELECT count(*) FROM tenancy.memberships WHERE user_id = 1001", &[]).unwrap().get(0);
    assert_eq!(n, 0, "all or nothing");
    // A uuid column in a bigint database is refused by its type.
    c.batch_execute("CREATE TABLE public.people (id uuid PRIMARY KEY, role text NOT NULL)").unwrap();
    let r = c.batch_execute(&format!("SELECT * FROM tenancy.adopt_users('public.people', '{{}}', '{ORG_A}')"));
    assert_eq!(sqlstate(r), "42804");
}

#[test]
fn uuid_stays_the_default_and_uuid_calls_keep_working() {
    let mut c = two_tenant_db("uid_default");
    let ty: String = c.query_one("SELECT tenancy.user_id_type()", &[]).unwrap().get(0);
    assert_eq!(ty, "uuid");
    // The uuid signatures and the untyped literal (now the text overload) both work.
    c.batch_execute(&format!(
        "SELECT tenancy.add_member('{ORG_A}', 'cccccccc-0000-0000-0000-000000000003'::uuid, 'viewer');
         SELECT tenancy.add_member('{ORG_A}', 'DDDDDDDD-0000-0000-0000-000000000004', 'viewer');"
    ))
    .unwrap();
    let ids: Vec<String> = c
        .query(
            &format!("SELECT user_id::text FROM tenancy.memberships WHERE organization_id = '{ORG_A}' ORDER BY 1"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [USER_A, "cccccccc-0000-0000-0000-000000000003", "dddddddd-0000-0000-0000-000000000004"]);
    let mut app = app_session("uid_default");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute("SET LOCAL tenancy.user_id = '{DDDDDDDD-0000-0000-0000-000000000004}'").unwrap();
    let r = tx.query_one("SELECT tenancy.current_user_id()::text, tenancy.current_user_id_text()", &[]).unwrap();
    let (u, t): (Option<String>, Option<String>) = (r.get(0), r.get(1));
    assert_eq!(u.as_deref(), Some("dddddddd-0000-0000-0000-000000000004"));
    assert_eq!(t, u, "one canonical spelling");
    drop(tx);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute("SET LOCAL tenancy.user_id = 'auth0|alice'").unwrap();
    assert_eq!(sqlstate(tx.query_one("SELECT tenancy.current_user_id()", &[])), "22P02");
}
