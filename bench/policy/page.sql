SELECT status, count(*), sum(amount_cents) FROM @TABLE@ WHERE @TENANT@ AND created_at >= timestamptz '2024-01-01 00:00:00+00' + :d * interval '1 day' AND created_at < timestamptz '2024-01-01 00:00:00+00' + (:d + 30) * interval '1 day' GROUP BY status ORDER BY status;
SELECT id, created_at, status, amount_cents FROM @TABLE@ WHERE @TENANT@ ORDER BY created_at DESC LIMIT 20;
