SELECT count(*) FILTER (WHERE public.sql_validate_client_access(u, o)) FROM public.bench_calls;
