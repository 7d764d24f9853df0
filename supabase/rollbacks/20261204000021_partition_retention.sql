-- Undo 21. Archived months of served questions go back to public.session_questions (detached from the archive,
-- attached to the live table, which builds its served_at index); months of ai_usage the retention dropped cannot
-- come back. 17.'s retention of answers only returns.
drop function private.retire_partition(regclass);
drop function private.attach_default_partition(regclass);
drop function service.retention_plan(timestamptz, integer, integer);
drop function private.table_retention_plan(regclass, timestamptz, integer);

create function service.response_retention_plan(as_of timestamptz, keep_months integer) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
  cutoff date := (date_trunc('month', as_of at time zone 'UTC') - make_interval(months => keep_months))::date;
  default_table text := private.partition_name('public.responses', null);
  default_attached boolean;
  months jsonb;
  statements jsonb := '[]';
  restore jsonb := '[]';
begin
  if keep_months is null or keep_months not between 1 and 120 then
    raise sqlstate 'PT422' using message = 'response_retention_months must be between 1 and 120';
  end if;
  select exists (select from pg_catalog.pg_inherits i
                 where i.inhrelid = to_regclass(default_table) and i.inhparent = 'public.responses'::regclass)
    into default_attached;
  if to_regclass(default_table) is not null and not default_attached then
    -- A run stopped between detaching the default and attaching it again.
    restore := to_jsonb(array[format('alter table public.responses attach partition %s default', default_table)]);
  end if;
  if to_regclass(private.partition_name('public.responses', as_of::date)) is null
     or to_regclass(private.partition_name('public.responses', (as_of + interval '1 month')::date)) is null then
    return jsonb_build_object('statements', statements, 'restore', restore, 'archive', '[]'::jsonb,
                              'skipped', 'this month or the next has no partition yet');
  end if;

  -- Old months of public.responses: attached, detach pending, or detached and still in `private`.
  select coalesce(jsonb_agg(jsonb_build_object('table', format('%I.%I', n.nspname, c.relname),
                                               'state', case when i.inhdetachpending then 'pending'
                                                             when i.inhrelid is not null then 'attached'
                                                             else 'detached' end)
                            order by c.relname), '[]')
    into months
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  left join pg_catalog.pg_inherits i on i.inhrelid = c.oid and i.inhparent = 'public.responses'::regclass
  where n.nspname = 'private' and c.relkind = 'r' and c.relname ~ '^responses_p[0-9]{6}$'
    and to_date(right(c.relname, 6), 'YYYYMM') < cutoff
    and (i.inhrelid is not null or not exists (select from pg_catalog.pg_inherits other where other.inhrelid = c.oid));

  if default_attached and exists (select from jsonb_array_elements(months) m where m ->> 'state' <> 'detached') then
    statements := to_jsonb(array[format('alter table public.responses detach partition %s', default_table)]);
    restore := to_jsonb(array[format('alter table public.responses attach partition %s default', default_table)]);
  end if;
  select statements || coalesce(jsonb_agg(to_jsonb(format('alter table public.responses detach partition %s %s',
                                                           m ->> 'table',
                                                           case m ->> 'state' when 'pending' then 'finalize'
                                                                              else 'concurrently' end))), '[]')
    into statements
  from jsonb_array_elements(months) m where m ->> 'state' <> 'detached';
  return jsonb_build_object('statements', statements, 'restore', restore,
                            'archive', (select coalesce(jsonb_agg(m -> 'table'), '[]') from jsonb_array_elements(months) m));
end
$$;

create function private.archive_response_partition(detached regclass) returns text
language plpgsql
security definer
set search_path = ''
set timezone = 'UTC'
as $$
declare
  month date;
  archived_table text;
  extra_index regclass;
begin
  if (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.oid = detached) <> 'private' or detached::text !~ '^private\.responses_p[0-9]{6}$' then
    raise sqlstate 'PT422' using message = format('%s is not a month of public.responses', detached);
  end if;
  if exists (select from pg_catalog.pg_inherits i where i.inhrelid = detached) then
    raise sqlstate 'PT409' using message = format('%s is still attached to public.responses', detached);
  end if;
  month := to_date(right(detached::text, 6), 'YYYYMM');
  archived_table := private.partition_name('archive.responses', month);
  -- Rows written straight into the archive for that month (it takes inserts from the service) join it.
  execute format('with moved as (delete from archive.responses_default where created_at >= $1 and created_at < $2 '
                 'returning *) insert into %s select * from moved', detached)
    using month::timestamp at time zone 'UTC', (month + interval '1 month')::timestamp at time zone 'UTC';
  if to_regclass(archived_table) is not null then
    execute format('insert into %s select * from %s', archived_table, detached);
    execute format('drop table %s', detached);
    return archived_table;
  end if;
  execute format('alter table %s set schema archive', detached);
  execute format('alter table %s attach partition %s for values from (%L) to (%L)', 'archive.responses',
                 archived_table, month::timestamp at time zone 'UTC',
                 (month + interval '1 month')::timestamp at time zone 'UTC');
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

revoke all on function service.response_retention_plan(timestamptz, integer),
  private.archive_response_partition(regclass) from public, anon, authenticated, service_role;
grant execute on function service.response_retention_plan(timestamptz, integer) to service_role;

-- As in 13.
create or replace function service.rollup_question_stats() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  started timestamptz := now();
  since timestamptz;
  touched integer;
begin
  select w.processed_until - interval '10 minutes' into since
  from private.rollup_watermarks w where w.name = 'question_stats' for update;
  since := coalesce(since, '-infinity');

  with changed as (
    select sq.question_id as id from public.session_questions sq where sq.served_at >= since
    union
    select r.question_id from public.question_ratings r where r.updated_at >= since
  ), stats as (
    select c.id,
           (select count(*) from public.session_questions sq where sq.question_id = c.id) as usage_count,
           (select round(avg(r.rating), 2) from public.question_ratings r where r.question_id = c.id) as rating_avg,
           (select count(*) from public.question_ratings r where r.question_id = c.id)::integer as rating_count
    from changed c
  )
  update public.questions q
  set usage_count = s.usage_count, rating_avg = s.rating_avg, rating_count = s.rating_count,
      rank_score = private.question_rank(s.rating_avg, s.rating_count, s.usage_count)
  from stats s
  where q.id = s.id
    and (q.usage_count, q.rating_avg, q.rating_count) is distinct from (s.usage_count, s.rating_avg, s.rating_count);
  get diagnostics touched = row_count;

  insert into private.rollup_watermarks (name, processed_until) values ('question_stats', started)
  on conflict (name) do update set processed_until = excluded.processed_until;
  return jsonb_build_object('questions_updated', touched, 'since', since,
                            'questions_promoted', private.promote_provisional_questions());
end
$$;

-- As in 16.
create or replace function service.export_account(user_id uuid, answers_after jsonb default null, max_bytes integer default 4000000)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  uid uuid := export_account.user_id;
  after_at timestamptz := (answers_after ->> 'created_at')::timestamptz;
  after_id uuid := (answers_after ->> 'id')::uuid;
  budget integer := least(greatest(coalesce(max_bytes, 4000000), 10000), 5000000);
  page_rows constant integer := 2000;
  page jsonb;
  last_answer jsonb;
  more boolean;
  result jsonb;
begin
  if not exists (select from public.users u where u.id = uid) then
    raise sqlstate 'PT404' using message = 'no such account';
  end if;
  if answers_after is not null and (after_at is null or after_id is null) then
    raise sqlstate 'PT400' using message = 'the answers cursor needs created_at and id';
  end if;
  -- A page looks at no more than `page_rows` answers of each table past the cursor (their index order), so a page
  -- costs the same however many answers the account has.
  with answers as (
    (select r.created_at, r.id, to_jsonb(r) || jsonb_build_object('archived', false) as doc
     from public.responses r
     where r.user_id = uid and (after_at is null or (r.created_at, r.id) > (after_at, after_id))
     order by r.created_at, r.id limit page_rows + 1)
    union all
    (select a.created_at, a.id, to_jsonb(a) || jsonb_build_object('archived', true)
     from archive.responses a
     where a.user_id = uid and (after_at is null or (a.created_at, a.id) > (after_at, after_id))
     order by a.created_at, a.id limit page_rows + 1)
  ), sized as (
    select doc, created_at, id,
           row_number() over (order by created_at, id) as n,
           sum(octet_length(doc::text)) over (order by created_at, id) - octet_length(doc::text) as before
    from answers
  )
  select coalesce(jsonb_agg(doc order by created_at, id) filter (where before < budget and n <= page_rows), '[]'),
         bool_or(before >= budget or n > page_rows)
  into page, more
  from sized;
  last_answer := page -> (jsonb_array_length(page) - 1);
  result := jsonb_build_object(
    'format', 'interview-prep account export, version 1',
    'user_id', uid,
    'exported_at', now(),
    'answers', page,
    'next', case when coalesce(more, false)
                 then jsonb_build_object('created_at', last_answer -> 'created_at', 'id', last_answer -> 'id') end);
  if answers_after is not null then
    return result;
  end if;
  return result || private.auth_account(uid) || jsonb_build_object(
    'user', (select to_jsonb(u) from public.users u where u.id = uid),
    'profile', (select to_jsonb(p) from public.user_profiles p where p.user_id = uid),
    'billing_customers', (select coalesce(jsonb_agg(to_jsonb(b)), '[]') from public.billing_customers b
                          where b.user_id = uid),
    'subscriptions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.created_at), '[]') from public.subscriptions s
                      where s.user_id = uid),
    'subscription_changes', (select coalesce(jsonb_agg(to_jsonb(c) order by c.occurred_at), '[]')
                             from public.subscription_changes c where c.user_id = uid),
    'usage_counters', (select coalesce(jsonb_agg(to_jsonb(c) order by c.period_start, c.metric), '[]')
                       from public.usage_counters c where c.user_id = uid),
    'sessions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.started_at), '[]') from public.practice_sessions s
                 where s.user_id = uid),
    'session_questions', (select coalesce(jsonb_agg(to_jsonb(q) order by q.served_at, q.position), '[]')
                          from public.session_questions q where q.user_id = uid),
    'ratings', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]') from public.question_ratings r
                where r.user_id = uid),
    'achievements', (select coalesce(jsonb_agg(to_jsonb(a) order by a.awarded_at), '[]') from public.achievements a
                     where a.user_id = uid),
    'progress', (select coalesce(jsonb_agg(to_jsonb(p) order by p.period_start, p.metric_name), '[]')
                 from public.user_progress p where p.user_id = uid),
    'progress_totals', (select to_jsonb(t) from public.progress_totals t where t.user_id = uid),
    'ai_usage', (select coalesce(jsonb_agg(to_jsonb(a) order by a.created_at), '[]') from public.ai_usage a
                 where a.user_id = uid),
    'provisional_questions', (select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'content', q.content,
                                                                           'category', q.category,
                                                                           'created_at', q.created_at)), '[]')
                              from public.questions q where q.provisional_for = uid),
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers');
end
$$;

-- As in 17.
create or replace view public.session_summaries with (security_invoker = true) as
select
  s.id,
  s.user_id,
  s.session_type,
  s.status,
  s.started_at,
  s.ended_at,
  s.overall_score,
  count(sq.id) as question_count,
  count(r.id) as answered_count,
  count(r.id) filter (where r.evaluation_status = 'completed') as evaluated_count
from public.practice_sessions s
left join public.session_questions sq on sq.session_id = s.id
left join public.response_history r on r.session_question_id = sq.id
group by s.id;

do $$
declare
  archived regclass;
  month date;
  live_table text;
begin
  for archived in
    select i.inhrelid::regclass from pg_catalog.pg_inherits i where i.inhparent = 'archive.session_questions'::regclass
  loop
    execute format('alter table archive.session_questions detach partition %s', archived);
    month := to_date(right(archived::text, 6), 'YYYYMM');
    live_table := private.partition_name('public.session_questions', month);
    if to_regclass(live_table) is not null then
      execute format('insert into %s select * from %s', live_table, archived);
      execute format('drop table %s', archived);
    else
      execute format('alter table %s set schema private', archived);
      execute format('alter table public.session_questions attach partition %s for values from (%L) to (%L)',
                     live_table, month::timestamp at time zone 'UTC',
                     (month + interval '1 month')::timestamp at time zone 'UTC');
    end if;
  end loop;
end
$$;
drop table archive.session_questions;
