-- Client connections to the server against what it allows (max_connections less the superusers' reserve).
-- Through Supabase's pooler the functions hold at most maximum concurrency x DB_POOL_SIZE of them.
select
  count(*) filter (where backend_type = 'client backend') as connections,
  count(*) filter (where backend_type = 'client backend' and state = 'active') as active,
  count(*) filter (where backend_type = 'client backend' and state like 'idle in transaction%') as idle_in_transaction,
  current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int as allowed
from pg_stat_activity
