-- Undo 18. Statement statistics: drop pg_stat_statements only if migration 18 created it (never Supabase's own).
do $$
begin
  if obj_description((select oid from pg_catalog.pg_extension where extname = 'pg_stat_statements'), 'pg_extension')
     = 'created by migration 18 (statement statistics); its rollback drops it' then
    drop extension pg_stat_statements;
  end if;
end
$$;
