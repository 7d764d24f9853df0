-- 18. Statement statistics, where Supabase keeps them
--
-- Every Supabase project has pg_stat_statements in schema `extensions`, and `supabase inspect db outliers|calls`
-- (and `prep db inspect`, the operator dashboard's database health) read `extensions.pg_stat_statements`. On a
-- project this is a no-op; on a plain PostgreSQL (the embedded server, a DATABASE_URL server) it creates the
-- extension there, marked so that the rollback drops only what this migration created. The extension reads its
-- figures from shared memory, so the server must also preload it (`shared_preload_libraries`, as
-- prep/localdb.py starts the embedded server); without that, reading the view fails with SQLSTATE 55000 and
-- `prep db inspect` says what to change.
do $$
begin
  if not exists (select from pg_catalog.pg_extension where extname = 'pg_stat_statements') then
    create extension pg_stat_statements with schema extensions;
    comment on extension pg_stat_statements is 'created by migration 18 (statement statistics); its rollback drops it';
  end if;
end
$$;
