SELECT count(public.sql_get_user_organization_id(u)) FROM public.bench_calls;
