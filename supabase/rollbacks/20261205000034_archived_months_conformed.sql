-- Undo 34: retire_partition as 21. wrote it, without private.conform_to_parent. The months it conformed stay so
-- (nothing relied on what it dropped).

-- A month detached from a live partitioned table leaves for good: a table with an archive twin
-- (`archive.<table>`) has it moved to the `archive` schema and attached there (its key, the archive's indexes and
-- foreign keys are already there, so nothing is built; its other indexes are dropped), if the archive already
-- holds that month its rows are added to it, and rows of that month in the archive's default partition (the
-- service may insert archived answers) move into it; a table without one (ai_usage) has it dropped.
-- Returns the archive's partition, or null when dropped. Idempotent: a month already retired is not found.
create or replace function private.retire_partition(detached regclass) returns text
language plpgsql
security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
  live_name text := regexp_replace(detached::text, '^private\.(.*)_p[0-9]{6}$', 'public.\1');
  archive_parent regclass;
  month date;
  lower_bound timestamptz;
  archived_table text;
  archive_default regclass;
  extra_index regclass;
begin
  if detached::text !~ '^private\.[a-z_]+_p[0-9]{6}$'
     or not coalesce(to_regclass(live_name) = any(private.partitioned_parents()), false) then
    raise sqlstate 'PT422' using message = format('%s is not a month of a partitioned table', detached);
  end if;
  if exists (select from pg_catalog.pg_inherits i where i.inhrelid = detached) then
    raise sqlstate 'PT409' using message = format('%s is still attached to %s', detached, live_name);
  end if;
  archive_parent := to_regclass(replace(live_name, 'public.', 'archive.'));
  if archive_parent is null then
    execute format('drop table %s', detached);
    return null;
  end if;
  month := to_date(right(detached::text, 6), 'YYYYMM');
  lower_bound := month::timestamp at time zone 'UTC';
  archived_table := private.partition_name(archive_parent, month);
  archive_default := to_regclass(private.partition_name(archive_parent, null));
  if archive_default is not null then
    execute format('with moved as (delete from %s where %I >= $1 and %I < $2 returning *) insert into %s select * from moved',
                   archive_default, private.partition_key(archive_parent), private.partition_key(archive_parent),
                   detached)
      using lower_bound, lower_bound + interval '1 month';
  end if;
  if to_regclass(archived_table) is not null then
    execute format('insert into %s select * from %s', archived_table, detached);
    execute format('drop table %s', detached);
    return archived_table;
  end if;
  execute format('alter table %s set schema archive', detached);
  execute format('alter table %s attach partition %s for values from (%L) to (%L)', archive_parent,
                 archived_table, lower_bound, lower_bound + interval '1 month');
  for extra_index in
    select i.indexrelid::regclass from pg_catalog.pg_index i
    where i.indrelid = to_regclass(archived_table)
      and not exists (select from pg_catalog.pg_inherits h where h.inhrelid = i.indexrelid)
  loop
    execute format('drop index %s', extra_index);
  end loop;
  return archived_table;
end
$$;

drop function private.conform_to_parent(regclass);
