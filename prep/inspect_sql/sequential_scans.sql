-- Candidates for a missing index: tables of more than 1,000 rows read more often by sequential scans than through
-- an index, with the rows an average sequential scan reads. (Small tables are scanned sequentially by design.)
select
  format('%I.%I', schemaname, relname) as "table",
  n_live_tup as estimated_rows,
  seq_scan as seq_scans,
  coalesce(idx_scan, 0) as index_scans,
  (seq_tup_read / greatest(seq_scan, 1))::bigint as rows_per_seq_scan
from pg_stat_user_tables
where n_live_tup > 1000
  and seq_scan > coalesce(idx_scan, 0)
  and schemaname in ('public', 'private', 'service', 'archive')
order by seq_tup_read desc
limit 10
