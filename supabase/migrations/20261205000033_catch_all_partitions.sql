-- 33. A catch-all range instead of a default partition: a user's latest answers read the newest month first
--
-- With a default partition PostgreSQL cannot scan a table's partitions in order (the default may hold any
-- month), so `order by created_at desc limit 20` without a time bound (a user's latest answers, as PostgREST
-- sends it with a generic plan) merged an index scan of every month: the one figure of bench/partitioning.py
-- over its 1.1x target. Without one, the partitions are ordered and an Append reads the newest month first and
-- stops at 20 rows. Each live partitioned table has instead `private.<table>_after`, from past its newest month
-- to MAXVALUE: a row of a month nobody made yet still lands somewhere (never a failed insert) and the maintenance
-- raises `rows_in_catch_all_partition` (was `rows_in_default_partition`). A row older than the oldest month
-- (nothing writes one: these timestamps default to now(); an import would) is refused by PostgreSQL ("no
-- partition of relation ... found for row"): such a row is past the retention window anyway.
-- Making a month past the newest now shrinks the catch-all: it is detached (ACCESS EXCLUSIVE on the parent,
-- briefly: the maintenance makes months 3 ahead, once a month per table, under a 2 s lock_timeout, and a run
-- that does not get the lock leaves it to the next), the months are attached, and it is attached again past
-- them. Before, attaching a month took ACCESS EXCLUSIVE on the default partition, which every read that does
-- not prune (the latest answers) locks too: the same brief stop. The maintenance now makes the months last,
-- right before it commits, so nothing else runs while it holds that lock.
-- Retention (21.) detaches old months concurrently, which a default partition forbade (it was detached around
-- them and attached again).
-- The archive tables keep their default partitions: retention attaches their months, and nothing reads them by
-- time with a limit.

-- 1. The catch-all and the months. --------------------------------------------------------------------------

alter table private.operator_alerts drop constraint operator_alerts_kind_check;
update private.operator_alerts set kind = 'rows_in_catch_all_partition' where kind = 'rows_in_default_partition';
alter table private.operator_alerts add constraint operator_alerts_kind_check
  check (kind in ('duplicate_live_subscriptions', 'unlinked_customer', 'unknown_price', 'unreadable_event',
                  'rows_in_catch_all_partition'));

-- `private.<table>_after`, the catch-all of a live partitioned table.
create function private.catch_all_partition(parent regclass) returns text
language sql stable
set search_path = ''
as $$
  select format('%I.%I', 'private', c.relname || '_after') from pg_catalog.pg_class c where c.oid = parent
$$;

-- The months attached to a partitioned table (a detach in progress no longer counts).
create function private.attached_months(parent regclass) returns setof date
language sql stable
set search_path = ''
as $$
  select to_date(right(c.relname, 6), 'YYYYMM')
  from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
  where i.inhparent = parent and not i.inhdetachpending and c.relname ~ '_p[0-9]{6}$'
$$;

-- A partition of `parent` attached with `bound` (`for values ...`), created standalone like its parent unless it
-- exists (17.'s create_month_partition): indexes, foreign keys and row triggers come from the parent; row
-- security on, no grants.
create function private.attach_partition(parent regclass, partition_table text, bound text) returns void
language plpgsql
set search_path = ''
as $$
begin
  if to_regclass(partition_table) is null then
    execute format('create table %s (like %s including defaults including constraints including comments)',
                   partition_table, parent);
    execute format('alter table %s enable row level security', partition_table);
    execute format('revoke all on table %s from public, anon, authenticated, service_role', partition_table);
  end if;
  execute format('alter table %s attach partition %s %s', parent, partition_table, bound);
end
$$;

-- One UTC month's partition.
create function private.attach_new_month(parent regclass, month date) returns void
language sql
set search_path = ''
set timezone = 'UTC'
as $$
  select private.attach_partition(parent, private.partition_name(parent, month),
                                  format('for values from (%L) to (%L)', date_trunc('month', month)::timestamptz,
                                         date_trunc('month', month)::timestamptz + interval '1 month'))
$$;

-- The catch-all attached from `edge` to MAXVALUE.
create function private.attach_catch_all(parent regclass, edge date) returns void
language sql
set search_path = ''
set timezone = 'UTC'
as $$
  select private.attach_partition(parent, private.catch_all_partition(parent),
                                  format('for values from (%L) to (maxvalue)', edge::timestamptz))
$$;

-- 2. Making months: past the newest, taken from the catch-all. -------------------------------------------

-- Make `month`'s partition (UTC month) unless it exists, and every month between it and the nearest existing one;
-- returns how many months were made. Past the newest month, they are made from the catch-all: detached (ACCESS
-- EXCLUSIVE on the parent, to the end of the caller's transaction), the months attached, the catch-all attached
-- again past them; if it holds rows of those months, nothing is done: PT409 (move them first,
-- docs/operations.md). Concurrent callers queue on the parent's SHARE UPDATE EXCLUSIVE lock, which reads and
-- writes do not wait for.
drop function private.create_month_partition(regclass, date);
create function private.create_month_partition(parent regclass, month date) returns integer
language plpgsql
set search_path = ''
set timezone = 'UTC'
set datestyle = 'ISO, YMD'
as $$
declare
  wanted date := date_trunc('month', month)::date;
  key text := private.partition_key(parent);
  catch_all text := private.catch_all_partition(parent);
  oldest date;
  first_new date;
  each_month date;
  made integer := 0;
  stray boolean;
begin
  execute format('lock table %s in share update exclusive mode', parent);
  if to_regclass(private.partition_name(parent, wanted)) is not null then
    return 0;
  end if;
  select min(m), (max(m) + interval '1 month')::date into oldest, first_new from private.attached_months(parent) m;
  if first_new is null then
    raise sqlstate 'PT409' using message = format('%s has no month partition to extend', parent);
  end if;
  if wanted < first_new then
    -- Before the oldest month, the months up to it too (no gap for a row to fall into); in a gap, that month.
    for each_month in select m::date from generate_series(wanted, greatest(wanted, oldest - interval '1 month'),
                                                         interval '1 month') m loop
      if to_regclass(private.partition_name(parent, each_month)) is null then
        perform private.attach_new_month(parent, each_month);
        made := made + 1;
      end if;
    end loop;
    return made;
  end if;
  execute format('select exists (select from %s where %I < $1)', catch_all, key)
    into stray using (wanted + interval '1 month')::timestamp at time zone 'UTC';
  if stray then
    raise sqlstate 'PT409'
      using message = format('%s holds rows of the months %s to %s: they need their months first', catch_all,
                             to_char(first_new, 'YYYY-MM'), to_char(wanted, 'YYYY-MM')),
            hint = 'docs/operations.md, section 7, "Partitions and retention": alert rows_in_catch_all_partition';
  end if;
  execute format('alter table %s detach partition %s', parent, catch_all);
  for each_month in select m::date from generate_series(first_new, wanted, interval '1 month') m loop
    perform private.attach_new_month(parent, each_month);
    made := made + 1;
  end loop;
  perform private.attach_catch_all(parent, (wanted + interval '1 month')::date);
  return made;
end
$$;

-- The scheduled part: this month and `months_ahead` more exist for every live partitioned table; rows in its
-- catch-all open (or keep open) an alert naming the table, the rows and their months, and an empty one closes
-- it. Months from the first one with such rows on are not made, nor while the parent's lock is not had within
-- 2 s (`waiting`): the next run tries again, with months ahead to spare.
create or replace function private.ensure_month_partitions(as_of timestamptz, months_ahead integer) returns jsonb
language plpgsql
security definer
set search_path = ''
set timezone = 'UTC'
set lock_timeout = '2s'
as $$
declare
  parent regclass;
  key text;
  last_month date := (date_trunc('month', as_of at time zone 'UTC') + make_interval(months => months_ahead))::date;
  first_stray date;
  created integer := 0;
  waiting jsonb := '{}';
  stray record;
  alerts jsonb := '{}';
begin
  if months_ahead not between 0 and 24 then
    raise sqlstate 'PT422' using message = 'partition_months_ahead must be between 0 and 24';
  end if;
  foreach parent in array private.partitioned_parents() loop
    key := private.partition_key(parent);
    execute format('select date_trunc(''month'', min(%I) at time zone ''UTC'')::date from %s', key,
                   private.catch_all_partition(parent))
      into first_stray;
    begin
      created := created + private.create_month_partition(parent, least(last_month, (first_stray - interval '1 month')::date));
    exception when lock_not_available or sqlstate 'PT409' or check_violation then
      -- check_violation: a row of a new month arrived in the catch-all while it was being detached.
      waiting := waiting || jsonb_build_object(parent::text, sqlerrm);
    end;
    -- At most 10,000 rows counted: the alert says there are some and which months, not an exact census.
    execute format('select count(*) as n, min(%I) as oldest, max(%I) as newest from '
                   '(select %I from %s limit 10000) d', key, key, key, private.catch_all_partition(parent))
      into stray;
    if stray.n > 0 then
      perform private.raise_operator_alert('rows_in_catch_all_partition', parent::text,
        jsonb_build_object('catch_all_partition', private.catch_all_partition(parent), 'rows_counted', stray.n,
                           'oldest', stray.oldest, 'newest', stray.newest));
      alerts := alerts || jsonb_build_object(parent::text, stray.n);
    else
      perform private.resolve_operator_alert('rows_in_catch_all_partition', parent::text, 'catch-all partition empty');
    end if;
  end loop;
  return jsonb_build_object('partitions_created', created, 'partitions_waiting', waiting,
                            'rows_in_catch_all_partitions', alerts);
end
$$;

-- As in 17., with the months made last: creating one holds the parent's ACCESS EXCLUSIVE lock until commit.
create or replace function service.run_maintenance(as_of timestamptz default now(), policy jsonb default '{}')
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  -- A session nobody touched for a day is over; a timed one once its limit has passed by an hour.
  abandon_after interval := make_interval(hours => coalesce((policy ->> 'abandon_after_hours')::integer, 24));
  -- The queue's own retries end about 65 minutes after a request (3 receives 30 minutes apart, the visibility
  -- timeout, each up to the worker's 5-minute timeout): past two hours nothing is coming.
  stuck_after interval := make_interval(mins => coalesce((policy ->> 'stuck_evaluation_minutes')::integer, 120));
  months_ahead integer := coalesce((policy ->> 'partition_months_ahead')::integer, 3);
  keep_stripe_events interval := make_interval(days => coalesce((policy ->> 'stripe_event_retention_days')::integer, 90));
  keep_counters interval := make_interval(days => coalesce((policy ->> 'usage_counter_retention_days')::integer, 90));
  abandoned integer;
  stuck integer := 0;
  purged_events integer;
  purged_counters integer;
  purged_leases integer;
  refreshed jsonb;
  pending record;
begin
  update public.practice_sessions s set status = 'abandoned'
  where s.status = 'in_progress'
    and s.started_at < as_of - greatest(abandon_after,
                                        make_interval(secs => coalesce(s.time_limit_seconds, 0)) + interval '1 hour');
  get diagnostics abandoned = row_count;

  -- Evaluations requested long ago and still unfinished (the worker crashed past its retries, the message was
  -- lost): fail them honestly, with the quota refunded, so the user can ask again.
  for pending in
    select r.id from public.responses r
    where r.evaluation_status in ('queued', 'processing') and r.evaluation_requested_at < as_of - stuck_after
    for update skip locked
  loop
    perform service.fail_evaluation(pending.id,
      'the evaluation did not finish in time; ask for it again (it was not counted)');
    stuck := stuck + 1;
  end loop;

  delete from private.stripe_events e where e.created_at < as_of - keep_stripe_events;
  get diagnostics purged_events = row_count;
  delete from public.usage_counters c where c.period_start < (as_of - keep_counters)::date;
  get diagnostics purged_counters = row_count;
  delete from private.generation_leases l where l.expires_at < as_of;
  get diagnostics purged_leases = row_count;
  refreshed := private.refresh_materialized_views();

  return jsonb_build_object(
    'sessions_abandoned', abandoned, 'evaluations_failed', stuck,
    'stripe_events_purged', purged_events, 'usage_counters_purged', purged_counters,
    'generation_leases_purged', purged_leases,
    'materialized_views_refreshed', refreshed) || private.ensure_month_partitions(as_of, months_ahead);
end
$$;

-- 3. Retention: months detached concurrently, nothing around them. --------------------------------------------

-- As in 21., without a default partition to detach around the months: `statements` detach each old month
-- concurrently (or finalize a pending detach). Nothing is planned (`skipped`) unless this month and the next
-- have their partitions: retention never runs ahead of the maintenance that makes them.
create or replace function private.table_retention_plan(parent regclass, as_of timestamptz, keep_months integer) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
  cutoff date := (date_trunc('month', as_of at time zone 'UTC') - make_interval(months => keep_months))::date;
  table_name text := (select c.relname from pg_catalog.pg_class c where c.oid = parent);
  months jsonb;
begin
  if to_regclass(private.partition_name(parent, as_of::date)) is null
     or to_regclass(private.partition_name(parent, (as_of + interval '1 month')::date)) is null then
    return jsonb_build_object('table', parent::text, 'statements', '[]'::jsonb, 'retire', '[]'::jsonb,
                              'skipped', 'this month or the next has no partition yet');
  end if;

  -- Old months of the table: attached, detach pending, or detached and still in `private`.
  select coalesce(jsonb_agg(jsonb_build_object('table', format('%I.%I', n.nspname, c.relname),
                                               'state', case when i.inhdetachpending then 'pending'
                                                             when i.inhrelid is not null then 'attached'
                                                             else 'detached' end)
                            order by c.relname), '[]')
    into months
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  left join pg_catalog.pg_inherits i on i.inhrelid = c.oid and i.inhparent = parent
  where n.nspname = 'private' and c.relkind = 'r' and c.relname ~ ('^' || table_name || '_p[0-9]{6}$')
    and to_date(right(c.relname, 6), 'YYYYMM') < cutoff
    and (i.inhrelid is not null or not exists (select from pg_catalog.pg_inherits other where other.inhrelid = c.oid));

  return jsonb_build_object(
    'table', parent::text,
    'statements', (select coalesce(jsonb_agg(to_jsonb(format('alter table %s detach partition %s %s', parent,
                                                             m ->> 'table',
                                                             case m ->> 'state' when 'pending' then 'finalize'
                                                                                else 'concurrently' end))), '[]')
                   from jsonb_array_elements(months) m where m ->> 'state' <> 'detached'),
    'retire', (select coalesce(jsonb_agg(m -> 'table'), '[]') from jsonb_array_elements(months) m),
    'skipped', null);
end
$$;

drop function private.attach_default_partition(regclass);
drop function private.create_default_partition(regclass);

revoke all on function private.catch_all_partition(regclass), private.attached_months(regclass),
  private.attach_partition(regclass, text, text), private.attach_new_month(regclass, date),
  private.attach_catch_all(regclass, date) from public, anon, authenticated, service_role;

-- 4. The live tables: default partitions replaced by the catch-all. -------------------------------------------

do $$
declare
  parent regclass;
  default_table text;
  stray bigint;
begin
  foreach parent in array private.partitioned_parents() loop
    default_table := private.partition_name(parent, null);
    execute format('select count(*) from (select from %s limit 10000) d', default_table) into stray;
    if stray > 0 then
      raise sqlstate 'PT409'
        using message = format('%s holds %s row(s): move them into their months before this migration', default_table,
                               case stray when 10000 then 'at least 10,000' else stray::text end),
              hint = 'Set them aside, make their months and put them back, as docs/operations.md (section 7, alert '
                     'rows_in_catch_all_partition) does for the catch-all; then migrate again.';
    end if;
    execute format('alter table %s detach partition %s', parent, default_table);
    execute format('drop table %s', default_table);
    perform private.attach_catch_all(parent,
                                     (select max(m) + interval '1 month' from private.attached_months(parent) m)::date);
  end loop;
end
$$;
