SELECT id, organization_id, created_at, status, amount_cents, note FROM @TABLE@ WHERE @TENANT@ AND id = :id;
