SELECT status, count(*), sum(amount_cents) FROM @TABLE@ WHERE @TENANT@ GROUP BY status ORDER BY status;
