//! The integrity report and the linter run next to a live application: they read, and never
//! hold a lock a writer waits for.
use tenancy_client_tests::*;

#[test]
fn writers_are_not_blocked_while_the_integrity_report_and_the_linter_run() {
    let db = "rep_locks";
    let mut owner = two_tenant_db(db);
    owner
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL, n int);
             INSERT INTO orders (organization_id, n) SELECT '{ORG_A}', g FROM generate_series(1, 20000) g;
             SELECT tenancy.enable_isolation('orders');"
        ))
        .unwrap();
    // The reports run in an open transaction, as a long report would: their locks stay held.
    let mut reporter = connect("postgres", db);
    let mut tx = reporter.transaction().unwrap();
    let rows = tx.query("SELECT total_rows, ok FROM tenancy.validate_client_data_integrity()", &[]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 20000);
    let findings: i64 = tx.query_one("SELECT count(*) FROM tenancy.lint()", &[]).unwrap().get(0);
    assert!(findings > 0, "the table has no foreign key to the organizations: the linter says so");

    let mut writer = connect("postgres", db);
    writer.batch_execute("SET lock_timeout = '2s'").unwrap();
    let inserted = writer.execute(&format!("INSERT INTO orders (organization_id, n) VALUES ('{ORG_B}', 1)"), &[]);
    assert_eq!(sqlstate(inserted), "ok", "an INSERT does not wait for the report");
    let updated = writer.execute("UPDATE orders SET n = n + 1 WHERE id <= 100", &[]);
    assert_eq!(sqlstate(updated), "ok", "an UPDATE does not wait for the report");
    let deleted = writer.execute("DELETE FROM orders WHERE id = 101", &[]);
    assert_eq!(sqlstate(deleted), "ok", "a DELETE does not wait for the report");
    tx.commit().unwrap();
}
