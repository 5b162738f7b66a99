-- The hand-written integrity queries that tenancy.validate_client_data_integrity() replaces, as a
-- runbook runs them on one table (@TABLE@): total rows, rows without a tenant, orphaned rows.
SELECT count(*) FROM @TABLE@;
SELECT count(*) FROM @TABLE@ WHERE organization_id IS NULL;
SELECT count(*) FROM @TABLE@ t WHERE t.organization_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM tenancy.organizations o WHERE o.id = t.organization_id);
