//! tenancy.rollback of an isolated, converted schema whose tables belong to a role that is not a
//! superuser (issue 15 item 1): a child rolls back while its parent stays isolated (FORCE ROW
//! LEVEL SECURITY applies to the owner, and Postgres's check of the re-added foreign key runs as
//! the owner); the parent's FORCE is off only inside the rollback's transaction, and no other
//! session reads the parent before it is back on.
use tenancy_client_tests::*;

const DB: &str = "rollback_force";

fn one_i64(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn one_bool(c: &mut postgres::Client, sql: &str) -> bool {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_child_rolls_back_under_its_isolated_parent_and_nobody_sees_the_parent_unforced() {
    let mut owner = two_tenant_db(DB);
    let app = format!("{DB}_app");
    owner
        .batch_execute(&format!(
            "CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE);
             CREATE TABLE jobs (id serial PRIMARY KEY, user_id uuid REFERENCES users, code text NOT NULL);
             INSERT INTO users SELECT ('11111111-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'u' || g || '@example.com'
               FROM generate_series(1, 40) g;
             INSERT INTO jobs (user_id, code) SELECT ('11111111-0000-0000-0000-' || lpad((1 + g % 40)::text, 12, '0'))::uuid, 'J' || g
               FROM generate_series(1, 1000) g;
             GRANT SELECT ON users, jobs TO \"{app}\";"
        ))
        .unwrap();
    owner
        .batch_execute(&format!(
            "CALL tenancy.backfill_all('{{users,jobs}}', organization_id => '{ORG_A}',
                                       derive => '{{\"jobs\": {{\"parent\": \"users\"}}}}', build_indexes => true)"
        ))
        .unwrap();
    owner.batch_execute("SELECT * FROM tenancy.enable_isolation_all('public')").unwrap();
    let jobs_before = {
        let mut su = connect("postgres", DB);
        one_i64(&mut su, "SELECT count(*) FROM jobs")
    };
    assert_eq!(jobs_before, 1000);

    // The child's rollback, in a transaction kept open: its original foreign key is validated
    // against every parent row although the parent stays isolated and forced.
    let mut rb = connect(&format!("{DB}_owner"), DB);
    rb.batch_execute("BEGIN").unwrap();
    let r = rb.batch_execute("SELECT tenancy.rollback('jobs', drop_column => true)");
    assert_eq!(sqlstate(r), "ok", "the child rolls back while its parent is isolated (FORCE ROW LEVEL SECURITY)");

    // Meanwhile nobody reads the parent: its ALTER TABLE holds the lock until the commit.
    let mut reader = app_session(DB);
    reader.batch_execute("SET lock_timeout = '300ms'").unwrap();
    assert_eq!(
        sqlstate(reader.query("SELECT count(*) FROM users", &[])),
        "55P03",
        "another session waits for the rollback's transaction instead of reading the parent"
    );
    rb.batch_execute("COMMIT").unwrap();

    // After the commit: the parent is forced and isolated as before, the child is as it was.
    let mut su = connect("postgres", DB);
    assert!(one_bool(
        &mut su,
        "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'users'::regclass"
    ));
    // 8 and the operator policy (context mode).
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM pg_policy WHERE polrelid = 'users'::regclass"), 9);
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_user_id_fkey' AND convalidated
                AND pg_get_constraintdef(oid) = 'FOREIGN KEY (user_id) REFERENCES users(id)'"
        ),
        1,
        "the original foreign key is back, validated, under its name"
    );
    assert!(!one_bool(
        &mut su,
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'jobs'::regclass AND attname = 'organization_id' AND NOT attisdropped)"
    ));
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM jobs"), jobs_before, "every row of the child is kept");
    // FORCE is on again: the owner, without a tenant, sees no parent row; nor does the application.
    assert_eq!(
        one_i64(&mut owner, "SELECT count(*) FROM users"),
        0,
        "the owner is subject to the parent's policies again"
    );
    reader.batch_execute("RESET lock_timeout").unwrap();
    assert_eq!(
        one_i64(&mut reader, "SELECT count(*) FROM users"),
        0,
        "the application without a tenant sees no parent row"
    );

    // The parent now rolls back alone too (nothing references its tenant keys any more).
    let r = owner.batch_execute("SELECT tenancy.rollback('users', drop_column => true)");
    assert_eq!(sqlstate(r), "ok");
    assert!(!one_bool(
        &mut su,
        "SELECT relrowsecurity OR relforcerowsecurity FROM pg_class WHERE oid = 'users'::regclass"
    ));
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM tenancy.tenant_tables"), 0);
}
