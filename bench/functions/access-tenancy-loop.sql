SELECT count(*) FILTER (WHERE tenancy.validate_client_access(u, o)) FROM public.bench_calls;
