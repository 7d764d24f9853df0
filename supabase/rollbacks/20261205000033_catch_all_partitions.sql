-- Undo 33: default partitions again instead of the catch-all (the months made meanwhile stay), and the partition
-- functions as 17. and 21. wrote them. Refused while a catch-all holds rows (move them into their months first).

do $$
declare
  parent regclass;
  stray bigint;
begin
  foreach parent in array private.partitioned_parents() loop
    execute format('select count(*) from (select from %s limit 10000) d', private.catch_all_partition(parent))
      into stray;
    if stray > 0 then
      raise sqlstate 'PT409' using message = format('%s holds rows: move them into their months first',
                                                     private.catch_all_partition(parent));
    end if;
    execute format('alter table %s detach partition %s', parent, private.catch_all_partition(parent));
    execute format('drop table %s', private.catch_all_partition(parent));
  end loop;
end
$$;

-- What to run to retire the months of one live partitioned table wholly older than `keep_months` months before
-- as_of's month: `statements` to run one by one in autocommit (the default partition detached if a month is
-- still attached, each month detached concurrently, or a detach left pending finalized), then
-- private.attach_default_partition(table) whatever happened, then private.retire_partition for each of `retire`
-- (detached months, including those an earlier run detached and did not retire). PostgreSQL refuses a
-- concurrent detach while the table has a default partition, and meanwhile an insert for a month that has no
-- partition would fail: nothing is planned (`skipped`) unless this month and the next have theirs.
create or replace function private.table_retention_plan(parent regclass, as_of timestamptz, keep_months integer) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
  cutoff date := (date_trunc('month', as_of at time zone 'UTC') - make_interval(months => keep_months))::date;
  table_name text := (select c.relname from pg_catalog.pg_class c where c.oid = parent);
  default_table text := private.partition_name(parent, null);
  months jsonb;
  statements jsonb := '[]';
begin
  if to_regclass(private.partition_name(parent, as_of::date)) is null
     or to_regclass(private.partition_name(parent, (as_of + interval '1 month')::date)) is null then
    return jsonb_build_object('table', parent::text, 'statements', statements, 'retire', '[]'::jsonb,
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

  if exists (select from pg_catalog.pg_inherits i where i.inhrelid = to_regclass(default_table) and i.inhparent = parent)
     and exists (select from jsonb_array_elements(months) m where m ->> 'state' <> 'detached') then
    statements := to_jsonb(array[format('alter table %s detach partition %s', parent, default_table)]);
  end if;
  select statements || coalesce(jsonb_agg(to_jsonb(format('alter table %s detach partition %s %s', parent,
                                                           m ->> 'table',
                                                           case m ->> 'state' when 'pending' then 'finalize'
                                                                              else 'concurrently' end))), '[]')
    into statements
  from jsonb_array_elements(months) m where m ->> 'state' <> 'detached';
  return jsonb_build_object('table', parent::text, 'statements', statements,
                            'retire', (select coalesce(jsonb_agg(m -> 'table'), '[]') from jsonb_array_elements(months) m),
                            'skipped', null);
end
$$;

-- A table's default partition, attached again if a retention run detached it (brief ACCESS EXCLUSIVE on the
-- parent, under the caller's lock_timeout). Idempotent.
create function private.attach_default_partition(parent regclass) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  default_table regclass := to_regclass(private.partition_name(parent, null));
begin
  if default_table is null or exists (select from pg_catalog.pg_inherits i where i.inhrelid = default_table) then
    return false;
  end if;
  execute format('alter table %s attach partition %s default', parent, default_table);
  return true;
end
$$;

-- As in 12., with the answers' archiving moved out (retention by partition, below, run by the schedule outside
-- a transaction) and the months ahead created here (`partition_months_ahead`, 3). The old policy keys
-- `response_retention_days` and `archive_batch` are ignored.
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
  partitions jsonb;
  purged_events integer;
  purged_counters integer;
  purged_leases integer;
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

  partitions := private.ensure_month_partitions(as_of, months_ahead);

  delete from private.stripe_events e where e.created_at < as_of - keep_stripe_events;
  get diagnostics purged_events = row_count;
  delete from public.usage_counters c where c.period_start < (as_of - keep_counters)::date;
  get diagnostics purged_counters = row_count;
  delete from private.generation_leases l where l.expires_at < as_of;
  get diagnostics purged_leases = row_count;

  return jsonb_build_object(
    'sessions_abandoned', abandoned, 'evaluations_failed', stuck,
    'stripe_events_purged', purged_events, 'usage_counters_purged', purged_counters,
    'generation_leases_purged', purged_leases,
    'materialized_views_refreshed', private.refresh_materialized_views()) || partitions;
end
$$;

-- The scheduled part: this month and `months_ahead` more exist for every live partitioned table; rows in a
-- default partition open (or keep open) an alert naming the table, the rows and their months, and an empty
-- default closes it. A month that already has rows in the default partition is not created (attaching it would
-- fail on them): the alert says so, and the operator moves them (docs/operations.md).
create or replace function private.ensure_month_partitions(as_of timestamptz, months_ahead integer) returns jsonb
language plpgsql
security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
  parent regclass;
  month date;
  key text;
  default_table text;
  blocked boolean;
  created integer := 0;
  stray record;
  alerts jsonb := '{}';
begin
  if months_ahead not between 0 and 24 then
    raise sqlstate 'PT422' using message = 'partition_months_ahead must be between 0 and 24';
  end if;
  foreach parent in array private.partitioned_parents() loop
    key := private.partition_key(parent);
    default_table := private.partition_name(parent, null);
    for month in
      select m::date from generate_series(date_trunc('month', as_of at time zone 'UTC'),
                                          date_trunc('month', as_of at time zone 'UTC')
                                            + make_interval(months => months_ahead), interval '1 month') m
    loop
      execute format('select exists (select from %s where %I >= $1 and %I < $2)', default_table, key, key)
        into blocked using month::timestamp at time zone 'UTC', (month + interval '1 month') at time zone 'UTC';
      if not blocked and private.create_month_partition(parent, month) then
        created := created + 1;
      end if;
    end loop;
    -- At most 10,000 rows counted: the alert says there are some and which months, not an exact census.
    execute format('select count(*) as n, min(%I) as oldest, max(%I) as newest from '
                   '(select %I from %s limit 10000) d', key, key, key, default_table)
      into stray;
    if stray.n > 0 then
      perform private.raise_operator_alert('rows_in_default_partition', parent::text,
        jsonb_build_object('default_partition', default_table, 'rows_counted', stray.n, 'oldest', stray.oldest,
                           'newest', stray.newest));
      alerts := alerts || jsonb_build_object(parent::text, stray.n);
    else
      perform private.resolve_operator_alert('rows_in_default_partition', parent::text, 'default partition empty');
    end if;
  end loop;
  return jsonb_build_object('partitions_created', created, 'rows_in_default_partitions', alerts);
end
$$;

-- Create and attach one month's partition (UTC month), unless it exists. Created standalone and attached, so the
-- parent is never locked against reads and writes (attaching takes SHARE UPDATE EXCLUSIVE; creating a table as a
-- partition would take ACCESS EXCLUSIVE). Indexes, foreign keys and row triggers come from the parent.
drop function private.create_month_partition(regclass, date);
create function private.create_month_partition(parent regclass, month date) returns boolean
language plpgsql
set search_path = ''
set timezone = 'UTC'
set datestyle = 'ISO, YMD'
as $$
declare
  partition_table text := private.partition_name(parent, month);
  lower_bound timestamptz := date_trunc('month', month)::timestamp at time zone 'UTC';
begin
  if to_regclass(partition_table) is not null then
    return false;
  end if;
  execute format('create table %s (like %s including defaults including constraints including comments)', partition_table, parent);
  execute format('alter table %s enable row level security', partition_table);
  execute format('revoke all on table %s from public, anon, authenticated, service_role', partition_table);
  execute format('alter table %s attach partition %s for values from (%L) to (%L)', parent, partition_table,
                 lower_bound, lower_bound + interval '1 month');
  return true;
end
$$;

drop function private.attach_catch_all(regclass, date);
drop function private.attach_new_month(regclass, date);
drop function private.attach_partition(regclass, text, text);
drop function private.attached_months(regclass);
drop function private.catch_all_partition(regclass);

-- The catch-all partition: a row for a month nobody created lands here instead of failing.
create function private.create_default_partition(parent regclass) returns void
language plpgsql
set search_path = ''
as $$
declare
  partition_table text := private.partition_name(parent, null);
begin
  execute format('create table %s (like %s including defaults including constraints including comments)', partition_table, parent);
  execute format('alter table %s enable row level security', partition_table);
  execute format('revoke all on table %s from public, anon, authenticated, service_role', partition_table);
  execute format('alter table %s attach partition %s default', parent, partition_table);
end
$$;

do $$
declare
  parent regclass;
begin
  foreach parent in array private.partitioned_parents() loop
    perform private.create_default_partition(parent);
  end loop;
end
$$;

revoke all on function private.attach_default_partition(regclass) from public, anon, authenticated, service_role;

alter table private.operator_alerts drop constraint operator_alerts_kind_check;
update private.operator_alerts set kind = 'rows_in_default_partition' where kind = 'rows_in_catch_all_partition';
alter table private.operator_alerts add constraint operator_alerts_kind_check
  check (kind in ('duplicate_live_subscriptions', 'unlinked_customer', 'unknown_price', 'unreadable_event',
                  'rows_in_default_partition'));
