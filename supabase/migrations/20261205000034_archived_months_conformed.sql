-- 34. A month retention moves to the archive becomes exactly what the archive would have made
--
-- Retention (21.) moves a month of public.responses or public.session_questions to its archive twin whole: detached
-- concurrently, set into the `archive` schema, attached. It kept what it had as a live month that the archive
-- table lacks: the check of its bounds the concurrent detach adds, column defaults (responses.category's, 19.),
-- and for answers the foreign keys to users and sessions (archive.responses has none: account deletion removes
-- archived answers itself, 16.). A restore makes each partition from its parent (functions/backup/logical.py),
-- so a restored archive differed from the backup's schema in those lines, and two archived months could differ
-- from each other depending on how they got there. Now retirement conforms the month to its new parent, and
-- this migration conforms the months already archived.
-- Dropping a foreign key takes a SHARE ROW EXCLUSIVE lock on the table it refers to (users, practice_sessions)
-- for a moment, as attaching did; retention runs it under its 2 s lock_timeout, and a month whose retirement
-- gives up stays detached in `private` for the next run (retire_partition is one transaction). This migration
-- takes those locks once, for every month archived so far, until it commits (catalog changes only: milliseconds).

-- A partition made exactly like one its parent makes: its own check constraints and foreign keys that are not
-- its parent's dropped, its column defaults made its parent's, its indexes that are not its parent's dropped.
create function private.conform_to_parent(child regclass) returns void
language plpgsql
set search_path = ''
as $$
declare
  parent regclass := (select i.inhparent from pg_catalog.pg_inherits i where i.inhrelid = child);
  item record;
begin
  if parent is null then
    raise sqlstate 'PT422' using message = format('%s is not a partition', child);
  end if;
  for item in
    select c.conname from pg_catalog.pg_constraint c
    where c.conrelid = child
      and ((c.contype = 'c' and c.coninhcount = 0) or (c.contype = 'f' and c.conparentid = 0))
  loop
    execute format('alter table %s drop constraint %I', child, item.conname);
  end loop;
  for item in
    select a.attname, pg_catalog.pg_get_expr(pd.adbin, pd.adrelid) as parent_default
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_attribute pa on pa.attrelid = parent and pa.attname = a.attname
    left join pg_catalog.pg_attrdef cd on cd.adrelid = child and cd.adnum = a.attnum
    left join pg_catalog.pg_attrdef pd on pd.adrelid = parent and pd.adnum = pa.attnum
    where a.attrelid = child and a.attnum > 0 and not a.attisdropped
      and pg_catalog.pg_get_expr(cd.adbin, cd.adrelid) is distinct from pg_catalog.pg_get_expr(pd.adbin, pd.adrelid)
  loop
    if item.parent_default is null then
      execute format('alter table %s alter column %I drop default', child, item.attname);
    else
      execute format('alter table %s alter column %I set default %s', child, item.attname, item.parent_default);
    end if;
  end loop;
  for item in
    select i.indexrelid::regclass as index from pg_catalog.pg_index i
    where i.indrelid = child and not exists (select from pg_catalog.pg_inherits h where h.inhrelid = i.indexrelid)
  loop
    execute format('drop index %s', item.index);
  end loop;
end
$$;

-- As 21. wrote it, but a month attached to the archive is then conformed to it (above). A month detached from a
-- live partitioned table leaves for good: a table with an archive twin (`archive.<table>`) has it moved to the
-- `archive` schema and attached there (its key, the archive's indexes and foreign keys are already there, so
-- nothing is built), if the archive already holds that month its rows are added to it, and rows of that month in
-- the archive's default partition (the service may insert archived answers) move into it; a table without one
-- (ai_usage) has it dropped.
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
  perform private.conform_to_parent(archived_table::regclass);
  return archived_table;
end
$$;

revoke all on function private.conform_to_parent(regclass) from public, anon, authenticated, service_role;

-- The months archived before this migration.
do $$
declare
  month regclass;
begin
  for month in
    select i.inhrelid::regclass from pg_catalog.pg_inherits i
    where i.inhparent in ('archive.responses'::regclass, 'archive.session_questions'::regclass)
  loop
    perform private.conform_to_parent(month);
  end loop;
end
$$;
