-- Every replica streaming from this server (any kind: `prep db replica up`, a Supabase read replica), read on the
-- primary: how far behind each one's replay is, in time and in bytes of WAL. No rows: no replica is configured.
select
  coalesce(nullif(application_name, ''), 'replica') as replica,
  coalesce(client_addr::text, 'local') as address,
  state,
  sync_state,
  coalesce(extract(epoch from replay_lag), 0)::numeric(12, 3) as replay_lag_seconds,
  coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint as replay_lag_bytes
from pg_stat_replication
order by replica
