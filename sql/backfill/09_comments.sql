----------------------------------------------------------------------------------------------
-- Comments and privileges
----------------------------------------------------------------------------------------------

COMMENT ON PROCEDURE tenancy.backfill(regclass, uuid, name, text, regclass, name, integer, interval, interval, integer, boolean) IS
  'Convert a live table online: add the tenant column, fill it in ctid-range batches (one COMMIT each) from a fixed organization, a parent row (parent =>) or a user column (user_column =>), then NOT NULL, a foreign key and tenant-scoped indexes and unique keys without long locks. Resumable: CALL again after any interruption. Progress: tenancy.backfill_progress.';
COMMENT ON PROCEDURE tenancy.backfill_all(regclass[], uuid, jsonb, name, text, integer, interval, interval, integer, boolean) IS
  'tenancy.backfill for several tables, parents before children (foreign-key order). derive maps a table to {"parent": "shipments"} or {"user_column": "created_by"}, optionally with a fallback "organization_id"; the other tables get organization_id.';
COMMENT ON FUNCTION tenancy.pending_statements() IS
  'Statements a backfill waits for that cannot run in a transaction (CREATE INDEX CONCURRENTLY). In psql: SELECT statement FROM tenancy.pending_statements() \gexec, then CALL tenancy.backfill again.';
COMMENT ON FUNCTION tenancy.rollback(regclass, boolean, boolean) IS
  'Undo a backfill (finished or not, isolated or not) in one transaction: isolation, foreign keys, unique keys and indexes it rewrote or added (the old ones restored under their names), NOT NULL, trigger and default. Drops the tenant column only with drop_column => true. cascade => true first rolls back the tables whose foreign keys reference its tenant keys, children first.';
COMMENT ON FUNCTION tenancy.rollback_all(name, boolean) IS
  'Roll back every table of a schema that tenancy converted or isolated, children first, all or nothing in one transaction; one row per table (rolled back / isolation removed). drop_column => true drops the tenant columns the backfill added.';
COMMENT ON FUNCTION tenancy._rollback_closure(oid[]) IS 'Internal: the tables with their children (foreign keys to a key holding the tenant column), recursively.';
COMMENT ON FUNCTION tenancy._rollback_many(oid[], boolean, text) IS 'Internal: roll back tables children first, each as its owner, all or nothing.';
COMMENT ON FUNCTION tenancy.adopt_users(regclass, jsonb, uuid, name, name, text) IS
  'Create memberships for the users of an existing users table, mapping application roles to tenancy roles (role_map jsonb). All or nothing; existing memberships are kept. Needs manage_members in the organization.';
COMMENT ON VIEW tenancy.backfill_progress IS
  'One row per table converted by tenancy.backfill: phase, rows filled, percent, rate, ETA, lock retries, whether a session is running it. \watch it from another session.';
COMMENT ON FUNCTION tenancy._backfill_step(oid) IS 'Internal: one step of a backfill, in the caller''s transaction, run as the table''s owner.';
COMMENT ON FUNCTION tenancy._owner_backfill_step(oid, jsonb) IS 'Internal: the work of one backfill step; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._check_backfill_record(oid, jsonb, jsonb) IS 'Internal: refuses a backfill record whose recorded definitions are not what the catalog says about the table.';
COMMENT ON FUNCTION tenancy._owner_rollback(oid, jsonb) IS 'Internal: the work of tenancy.rollback; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._backfill_fill() IS 'Internal: trigger giving rows written during a backfill their organization.';

GRANT SELECT ON tenancy.backfill_progress TO PUBLIC;
COMMENT ON FUNCTION tenancy._backfill_lock_all(oid, text) IS 'Internal: locks a table and the tables its foreign keys reference all at once (NOWAIT tries until lock_timeout), for the foreign-key phases: never waits while holding one, so no deadlock with applications.';
COMMENT ON TYPE tenancy.backfill_state IS
  'Internal: the record of a backfill, typed (stored as jsonb in tenancy.tenant_tables.details->''backfill'', read by tenancy._backfill_record, written by tenancy._backfill_save); its lists (indexes, skipped, fk_rewrites) stay jsonb.';
COMMENT ON TYPE tenancy.backfill_source IS
  'Internal: where a backfill takes each row''s organization from: a fixed organization, the parent row (its foreign key and column pairs) or a user column.';
COMMENT ON TYPE tenancy.backfill_options IS 'Internal: the options of a CALL tenancy.backfill, as the backfill''s record keeps them.';
COMMENT ON TYPE tenancy.backfill_fill IS
  'Internal: a backfill''s fill: blocks and rows to visit and visited, batches; fill.leaves (each leaf''s blocks and next block) stays jsonb.';
COMMENT ON TYPE tenancy.backfill_run IS 'Internal: a backfill''s counters when its current CALL began (its rate and ETA are reckoned from them).';
