SELECT id, created_at, status, amount_cents FROM @TABLE@ WHERE @TENANT@ ORDER BY created_at DESC LIMIT 20;
