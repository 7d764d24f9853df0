-- The dashboard's slowest statements: every role's (the functions run theirs as service_role, which the CLI's
-- `outliers` leaves out: it shows the connecting role's only), by total execution time.
select
  r.rolname as role,
  left(regexp_replace(s.query, '\s+', ' ', 'g'), 400) as query,
  s.calls,
  round(s.total_exec_time::numeric, 1) as total_ms,
  round(s.mean_exec_time::numeric, 2) as mean_ms,
  round((100 * s.total_exec_time / nullif(sum(s.total_exec_time) over (), 0))::numeric, 1) as share_percent
from extensions.pg_stat_statements s
left join pg_roles r on r.oid = s.userid
where s.dbid = (select oid from pg_database where datname = current_database())
order by s.total_exec_time desc
limit 10
