//! The tenant context over real connections: non-superuser install, context per transaction,
//! fail-closed, forged settings, reuse of a pooled connection, revocation.
use tenancy_client_tests::*;

fn uuid_or_null(c: &mut postgres::Client, sql: &str) -> Option<String> {
    c.query_one(&format!("SELECT ({sql})::text"), &[]).unwrap().get(0)
}

#[test]
fn a_database_owner_who_is_not_superuser_installs_tenancy_and_gains_nothing() {
    let mut c = two_tenant_db("ctx_install");
    let superuser: bool =
        c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[]).unwrap().get(0);
    assert!(!superuser, "the installing role must not be superuser for this test to mean anything");
    // The catalog belongs to the installing role, so it administers tenants without superuser.
    let not_owned: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'tenancy'::regnamespace
               AND relkind IN ('r', 'S') AND relowner <> current_user::regrole",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(not_owned, 0, "every catalog table and sequence is owned by the installer");
    // Nothing installed runs as its (superuser) owner on behalf of the caller.
    let definers: i64 = c
        .query_one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace AND prosecdef", &[])
        .unwrap()
        .get(0);
    assert_eq!(definers, 0, "no SECURITY DEFINER functions");
    let unpinned: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace AND prokind <> 'p'
               AND NOT coalesce(array_to_string(proconfig, ','), '') LIKE 'search_path=%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unpinned, 0, "every function pins its search_path");
    // The procedures that COMMIT (backfill, backfill_all, and the lifecycle's clone, erase and
    // import) cannot: they qualify every name instead.
    let procedures: Vec<String> = c
        .query("SELECT proname::text FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace AND prokind = 'p' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        procedures,
        ["backfill", "backfill_all", "clone_organization", "erase_organization", "import_organization"]
    );
    // The internal operations are closed to the installer's own users.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL ROLE ctx_install_app").unwrap();
    let r = tx.batch_execute("SELECT tenancy._op_create_organization('{}', 0, true, NULL)");
    assert_eq!(sqlstate(r), "42501");
    drop(tx);
    // The owner administers tenants (two_tenant_db created A and B as this owner).
    let n: i64 = c.query_one("SELECT count(*) FROM tenancy.organizations", &[]).unwrap().get(0);
    assert_eq!(n, 2);
    // ...but an ordinary role cannot create organizations.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL ROLE ctx_install_app").unwrap();
    assert_eq!(sqlstate(tx.batch_execute("SELECT tenancy.create_organization('X', 'x')")), "42501");
}

#[test]
fn context_lasts_one_transaction_and_no_context_means_null() {
    two_tenant_db("ctx_xact");
    let mut c = app_session("ctx_xact");

    assert_eq!(uuid_or_null(&mut c, "tenancy.current_user_id()"), None);
    assert_eq!(uuid_or_null(&mut c, "tenancy.current_organization_id()"), None);

    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let (u, o): (Option<String>, Option<String>) = {
        let r = tx
            .query_one("SELECT tenancy.current_user_id()::text, tenancy.current_organization_id()::text", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(u.as_deref(), Some(USER_A));
    assert_eq!(o.as_deref(), Some(ORG_A), "the user's default organization");
    tx.commit().unwrap();

    assert_eq!(uuid_or_null(&mut c, "tenancy.current_user_id()"), None, "gone after COMMIT");
    assert_eq!(uuid_or_null(&mut c, "tenancy.current_organization_id()"), None);
}

#[test]
fn hand_written_settings_cannot_reach_another_organization() {
    two_tenant_db("ctx_forge");
    let mut c = app_session("ctx_forge");

    let forgeries = [
        format!("SELECT set_config('tenancy.organization_id', '{ORG_B}', true)"),
        format!("SET LOCAL tenancy.organization_id = '{ORG_B}'"),
        format!("SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"organization_id\": \"{ORG_B}\"}}', true)"),
        format!("SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"app_metadata\": {{\"organization_id\": \"{ORG_B}\"}}}}', true)"),
        "SET LOCAL tenancy.organization_id = 'not-a-uuid'".to_string(),
    ];
    for forgery in &forgeries {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        tx.batch_execute(forgery).unwrap();
        let org: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
        assert_eq!(org, None, "forged with {forgery}: must be NULL, not another tenant");
        tx.rollback().unwrap();
    }
    // The legitimate paths work, and set_organization refuses the other tenant.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let org: Option<String> =
        tx.query_one(&format!("SELECT tenancy.set_organization('{ORG_A}')::text"), &[]).unwrap().get(0);
    assert_eq!(org.as_deref(), Some(ORG_A));
    assert_eq!(sqlstate(tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_B}')"))), "42501");
    drop(tx);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"organization_id\": \"{ORG_A}\"}}', true)"
    ))
    .unwrap();
    let org: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
    assert_eq!(org.as_deref(), Some(ORG_A));
}

#[test]
fn a_reused_pooled_connection_carries_no_context_to_the_next_client() {
    two_tenant_db("ctx_pool");
    let mut c = app_session("ctx_pool");

    // Client 1 misbehaves: session-level settings that outlive its transaction.
    c.batch_execute(&format!(
        "SET tenancy.user_id = '{USER_A}';
         SELECT set_config('tenancy.organization_id', '{ORG_A}', false);
         SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\"}}', false);"
    ))
    .unwrap();
    let leftover: Option<String> = c.query_one("SHOW tenancy.user_id", &[]).unwrap().get(0);
    assert_eq!(leftover.as_deref(), Some(USER_A), "the stale value is really there");

    // Client 2 gets the same server connection.
    let mut tx = c.transaction().unwrap();
    let r = tx
        .query_one(
            "SELECT tenancy.current_user_id()::text, tenancy.current_organization_id()::text,
                    (SELECT count(*) FROM tenancy.memberships)",
            &[],
        )
        .unwrap();
    let (u, o, visible): (Option<String>, Option<String>, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(u, None, "stale user is not this transaction's context");
    assert_eq!(o, None, "stale organization is not this transaction's context");
    assert_eq!(visible, 0, "no catalog rows without a context");
    // Its own transaction-local context works and wins.
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
    let o: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
    assert_eq!(o.as_deref(), Some(ORG_B));
}

#[test]
fn a_revoked_membership_is_seen_by_the_very_next_statement() {
    let mut owner = two_tenant_db("ctx_revoke");
    owner.batch_execute(&format!("SELECT tenancy.add_member('{ORG_A}', '{USER_B}', 'member')")).unwrap();

    let mut app = app_session("ctx_revoke");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
    tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')")).unwrap();
    let access = format!("SELECT tenancy.validate_client_access('{USER_B}', '{ORG_A}')");
    assert!(tx.query_one(&access, &[]).unwrap().get::<_, bool>(0));

    // Another session revokes and commits while this transaction is open.
    owner.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{USER_B}')")).unwrap();

    assert!(!tx.query_one(&access, &[]).unwrap().get::<_, bool>(0), "revocation seen at once");
    let org: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
    assert_eq!(org, None, "the chosen organization is re-checked, not cached");
}

/// `set_organization` and the policies read the acting user's own membership straight from the
/// catalog's indexes (src/probe.rs), but only where the catalog's row-level security and
/// privileges would give the query's answer: a policy the catalog's owner adds, or a privilege it
/// takes away, still decides, in the very next transaction.
#[test]
fn a_policy_or_a_revoked_privilege_on_the_catalog_still_decides_a_membership() {
    let mut owner = two_tenant_db("ctx_catalog_rls");
    let mut app = app_session("ctx_catalog_rls");
    // set_organization's verdict, what a policy finds for the organization the settings name, and
    // the organizations a membership-mode policy finds without a chosen one (each in a
    // transaction of its own).
    let choose = |app: &mut postgres::Client| {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        let chosen = tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')"));
        let chosen = if chosen.is_ok() { "ok".to_string() } else { sqlstate(chosen) };
        drop(tx);
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL tenancy.user_id = '{USER_A}'; SET LOCAL tenancy.organization_id = '{ORG_A}'"
        ))
        .unwrap();
        let policy: Option<String> = tx
            .query_one("SELECT tenancy.policy_organization_id('read')::text", &[])
            .map(|r| r.get(0))
            .unwrap_or_else(|e| Some(format!("error {}", e.code().map(|c| c.code()).unwrap_or("?"))));
        drop(tx);
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        let all: String = tx
            .query_one("SELECT tenancy.policy_organization_ids('read')::text", &[])
            .map(|r| r.get(0))
            .unwrap_or_else(|e| format!("error {}", e.code().map(|c| c.code()).unwrap_or("?")));
        (chosen, policy, all)
    };
    let a = || ("ok".to_string(), Some(ORG_A.to_string()), format!("{{{ORG_A}}}"));
    assert_eq!(choose(&mut app), a(), "the owner of A chooses A");

    // The catalog's owner hides A's memberships from everyone else with a policy of its own.
    owner
        .batch_execute(&format!(
            "CREATE POLICY hide_org_a ON tenancy.memberships AS RESTRICTIVE FOR SELECT USING (organization_id <> '{ORG_A}')"
        ))
        .unwrap();
    assert_eq!(choose(&mut app), ("42501".into(), None, "{}".into()), "the added policy hides the membership");
    owner.batch_execute("DROP POLICY hide_org_a ON tenancy.memberships").unwrap();
    assert_eq!(choose(&mut app), a());

    // ...or takes the right to read the roles away from the application role.
    owner.batch_execute("REVOKE SELECT ON tenancy.roles FROM PUBLIC").unwrap();
    assert_eq!(
        choose(&mut app),
        ("42501".into(), Some("error 42501".into()), "error 42501".into()),
        "permission denied for table roles"
    );
    owner.batch_execute("GRANT SELECT ON tenancy.roles TO PUBLIC").unwrap();
    assert_eq!(choose(&mut app), a());

    // A policy narrowed to another role leaves the application role with none: it reads no row.
    owner
        .batch_execute("ALTER POLICY organizations_of_current_user ON tenancy.organizations TO ctx_catalog_rls_owner")
        .unwrap();
    assert_eq!(choose(&mut app), ("42501".into(), None, "{}".into()), "no policy for this role: no organization row");
    owner.batch_execute("ALTER POLICY organizations_of_current_user ON tenancy.organizations TO PUBLIC").unwrap();
    assert_eq!(choose(&mut app), a());

    // The index the lookup reads, replaced by one of that name on another table (whose columns
    // 2 and 1, name and id, stand where memberships' user_id and organization_id are): read
    // through it, memberships' rows would be looked for at organizations' row addresses. The
    // catalog's owner cannot create anything in schema tenancy; a superuser can, and is not
    // followed either.
    let plant = "DROP INDEX tenancy.memberships_user_idx; CREATE INDEX memberships_user_idx ON tenancy.organizations (name, id);";
    assert_eq!(sqlstate(owner.batch_execute(&format!("BEGIN; {plant} COMMIT;"))), "42501");
    owner.batch_execute("ROLLBACK").unwrap();
    let mut su = superuser_of("ctx_catalog_rls");
    su.batch_execute(plant).unwrap();
    assert_eq!(choose(&mut app), a(), "an index of another table is not read");
    su.batch_execute(
        "DROP INDEX tenancy.memberships_user_idx;
         CREATE INDEX memberships_user_idx ON tenancy.memberships (user_id, organization_id) INCLUDE (role, is_active, is_default);",
    )
    .unwrap();
    assert_eq!(choose(&mut app), a());
    // The catalog's owner changes a column's type (here memberships.role to bigint, after dropping
    // its foreign key): a probe that read it as text crashed the server (SIGSEGV); the query now
    // answers (it cannot compare a role name with a bigint: 42883), and the server stays up.
    let mut tx = owner.transaction().unwrap();
    tx.batch_execute(
        "DO $$ DECLARE c text; BEGIN
           FOR c IN SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = 'tenancy.memberships'::regclass
                      AND confrelid = 'tenancy.roles'::regclass LOOP
             EXECUTE pg_catalog.format('ALTER TABLE tenancy.memberships DROP CONSTRAINT %I', c);
           END LOOP; END $$;
         ALTER TABLE tenancy.memberships ALTER COLUMN role TYPE bigint USING 123456789;",
    )
    .unwrap();
    tx.commit().unwrap();
    let (chosen, _, all) = choose(&mut app);
    assert_eq!((chosen.as_str(), all.as_str()), ("42883", "error 42883"), "the query decides, and raises");
    let alive: i32 = superuser_of("ctx_catalog_rls").query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(alive, 1);
}

/// The organizations a membership-mode policy finds without a chosen organization are read from
/// the catalog's indexes in a transaction that has written nothing (`crate::probe`), and by the
/// query in one that has: both give the list the catalog says, for a role with every right, one
/// that reads only, one that writes without reading (a role a DBA added), an inactive membership
/// and a deactivated organization.
#[test]
fn the_organizations_read_from_the_indexes_are_the_ones_the_query_finds() {
    let mut owner = two_tenant_db("ctx_org_list");
    let org = |n: u32| format!("00000000-0000-4000-8000-0000000000{n:02x}");
    let mut setup = String::from(
        "INSERT INTO tenancy.roles (name, rank, can_read, can_write, can_delete, can_manage_members, \
                                    can_manage_organization, is_builtin, description) \
         VALUES ('blind_writer', 5, false, true, false, false, false, false, 'Writes without reading');",
    );
    // USER_A owns A (two_tenant_db); in 0xc1.. it holds each kind of membership, in an order of
    // creation that is not the order of the ids.
    for (n, role) in [(0xc5, "viewer"), (0xc1, "member"), (0xc4, "manager"), (0xc2, "admin"), (0xc3, "blind_writer")] {
        setup.push_str(&format!(
            "SELECT tenancy.create_organization('Org {n:x}', 'org-{n:x}', '{id}', '{{}}', '{USER_B}');
             SELECT tenancy.add_member('{id}', '{USER_A}', '{role}');",
            id = org(n)
        ));
    }
    setup.push_str(&format!(
        "UPDATE tenancy.memberships SET is_active = false WHERE organization_id = '{}' AND user_id = '{USER_A}';
         SELECT tenancy.deactivate_organization('{}');",
        org(0xc4),
        org(0xc2)
    ));
    owner.batch_execute(&setup).unwrap();
    let list = |mut ids: Vec<String>| {
        ids.sort();
        format!("{{{}}}", ids.join(","))
    };
    let expected = [
        ("read", list(vec![ORG_A.into(), org(0xc1), org(0xc5)])),
        ("write", list(vec![ORG_A.into(), org(0xc1), org(0xc3)])),
        ("delete", list(vec![ORG_A.into()])),
    ];
    // Each in a new session (the memo is per session), first in a transaction that has written
    // nothing, then in one that has a transaction id (where the query answers).
    for writing in [false, true] {
        for (right, want) in &expected {
            let mut app = app_session("ctx_org_list");
            let mut tx = app.transaction().unwrap();
            tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
            if writing {
                tx.batch_execute("SELECT pg_catalog.txid_current()").unwrap();
            }
            let got: String =
                tx.query_one(&format!("SELECT tenancy.policy_organization_ids('{right}')::text"), &[]).unwrap().get(0);
            assert_eq!(&got, want, "{right}, {}", if writing { "the query" } else { "the indexes" });
        }
    }
}

#[test]
fn users_cannot_probe_other_users_memberships() {
    two_tenant_db("ctx_probe");
    let mut c = app_session("ctx_probe");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let r = tx
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM tenancy.memberships),
                        (SELECT count(*) FROM tenancy.organizations),
                        tenancy.validate_client_access('{USER_B}', '{ORG_B}'),
                        tenancy.get_user_organization_id('{USER_B}')::text"
            ),
            &[],
        )
        .unwrap();
    let (members, orgs, probe, other_default): (i64, i64, bool, Option<String>) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(members, 1, "only the user's own membership");
    assert_eq!(orgs, 1, "only the user's own organization");
    assert!(!probe, "another user's membership is invisible");
    assert_eq!(other_default, None);
}

#[test]
fn a_garbage_jwt_organization_claim_gives_no_context_not_the_default() {
    two_tenant_db("ctx_garbage");
    let mut c = app_session("ctx_garbage");
    for claim in ["\"x\"", "42", "{\"id\": 1}"] {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"organization_id\": {claim}}}', true)"
        ))
        .unwrap();
        let org: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
        assert_eq!(org, None, "organization_id claim {claim}");
    }
}

#[test]
fn memoized_membership_answers_are_forgotten_when_the_catalog_changes() {
    let mut owner = two_tenant_db("ctx_memo");
    owner.batch_execute(&format!("SELECT tenancy.add_member('{ORG_A}', '{USER_B}', 'member')")).unwrap();
    let mut app = app_session("ctx_memo");
    let read_in_a = |app: &mut postgres::Client| -> (Option<String>, i64) {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL tenancy.user_id = '{USER_B}'; SELECT tenancy.set_organization('{ORG_A}')"
        ))
        .unwrap();
        let r = tx
            .query_one("SELECT tenancy.policy_organization_id('write')::text, tenancy.lookup_cache_size()", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    // An answer is kept once the snapshot it was computed under is newer than every transaction
    // that was writing when the memo was last emptied (the setup's, and other tests' in this
    // cluster): poll until then.
    let mut kept = 0;
    for _ in 0..100 {
        let (org, k) = read_in_a(&mut app);
        assert_eq!(org.as_deref(), Some(ORG_A));
        kept = k;
        if kept > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(kept > 0, "answers are memoized");
    // Rights of a role change in another session: the next transaction sees it.
    owner.batch_execute("UPDATE tenancy.roles SET can_write = false WHERE name = 'member'").unwrap();
    assert_eq!(read_in_a(&mut app).0, None, "members may no longer write");
    owner.batch_execute("UPDATE tenancy.roles SET can_write = true WHERE name = 'member'").unwrap();
    assert_eq!(read_in_a(&mut app).0.as_deref(), Some(ORG_A));
    // A deactivated organization stops counting at once.
    owner.batch_execute(&format!("UPDATE tenancy.organizations SET is_active = false WHERE id = '{ORG_A}'")).unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
    let deactivated = sqlstate(tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')")));
    assert_eq!(deactivated, "55000", "organization is deactivated");
    drop(tx);
    owner.batch_execute(&format!("UPDATE tenancy.organizations SET is_active = true WHERE id = '{ORG_A}'")).unwrap();
    assert_eq!(read_in_a(&mut app).0.as_deref(), Some(ORG_A));
    // Without the invalidating triggers (turned off by a DBA), nothing is memoized.
    superuser_of("ctx_memo").batch_execute("ALTER TABLE tenancy.memberships DISABLE TRIGGER lookups_changed").unwrap();
    let (org, kept) = read_in_a(&mut app);
    assert_eq!((org.as_deref(), kept), (Some(ORG_A), 0), "no memo without the triggers");
    owner.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{USER_B}')")).unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
    let revoked = sqlstate(tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')")));
    assert_eq!(revoked, "42501", "revocation seen without the memo too");
}
