-- 21. Retention by partition for every partitioned table, not only the answers
--
-- Until now only `public.responses` gave up its old months (17.); `session_questions` and `ai_usage` grew without
-- bound. Now the schedule's retention step (functions/analytics/retention.py) retires a whole UTC month of each:
--   * `session_questions` and `responses`, past RESPONSE_RETENTION_MONTHS (12): archived together, a month of
--     served questions joining the new `archive.session_questions` as a month of answers joins `archive.responses`.
--     Their owner still reads them (public.response_history, public.session_summaries, the account export) and
--     deleting the account or the session still removes them (an archived month of served questions keeps its
--     `on delete cascade` foreign keys); public.questions' usage counts still count them.
--   * `ai_usage`, past AI_USAGE_RETENTION_MONTHS (13): dropped. Its rows are cost accounting, anonymised when their
--     user goes; what reports need of them is kept per day in `analytics_daily` (`ai.cost_usd`, calls by purpose),
--     the daily spend ceiling reads only today and the platform's day aggregation at most the trailing 31 days.
--     Thirteen months keep the same month of last year whole, for a year-over-year look at the raw calls.
-- The mechanics are 17.'s, for each table in turn: `detach partition ... concurrently` in autocommit (a pending
-- detach finalized, the default partition detached around it and attached again whatever happens), then the
-- detached month archived or dropped; recomputed from the catalog every run, so an interrupted run resumes.
-- `service.response_retention_plan` and `private.archive_response_partition` give way to the general
-- `service.retention_plan` and `private.retire_partition` (one way to do it).

-- 1. The archive of served questions: months detached from public.session_questions, attached whole. ----------

create table archive.session_questions (like public.session_questions including defaults including constraints including comments)
  partition by range (served_at);
-- A detached month brings its own key, these indexes and these foreign keys (which the attach adopts without
-- building or checking anything); its other index (served_at) is dropped.
alter table archive.session_questions add primary key (id, served_at);
create index idx_archive_session_questions_session on archive.session_questions (session_id, position);
create index idx_archive_session_questions_user_question on archive.session_questions (user_id, question_id);
create index idx_archive_session_questions_question on archive.session_questions (question_id, served_at);
alter table archive.session_questions
  add foreign key (session_id) references public.practice_sessions (id) on delete cascade,
  add foreign key (user_id) references public.users (id) on delete cascade,
  add foreign key (question_id) references public.questions (id);
comment on table archive.session_questions is
  'Months of public.session_questions past the retention window (RESPONSE_RETENTION_MONTHS), attached whole.';
alter table archive.session_questions enable row level security;
revoke all on archive.session_questions from anon, authenticated;
grant select on archive.session_questions to authenticated;
grant select, delete on archive.session_questions to service_role;
create policy "archived session_questions: read own" on archive.session_questions
  for select to authenticated using (user_id = (select auth.uid()));

-- 2. What reads a session's served questions after its months are archived. ------------------------------------

-- As in 17., counting archived served questions too.
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
left join (select id, session_id from public.session_questions
           union all
           select id, session_id from archive.session_questions) sq on sq.session_id = s.id
left join public.response_history r on r.session_question_id = sq.id
group by s.id;

-- As in 13., a question's usage count including its archived servings.
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
           (select count(*) from public.session_questions sq where sq.question_id = c.id)
             + (select count(*) from archive.session_questions sq where sq.question_id = c.id) as usage_count,
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

-- As in 16., the served questions live and archived.
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
    'session_questions', (select coalesce(jsonb_agg(q.doc order by q.served_at, q.position), '[]')
                          from (select to_jsonb(l) as doc, l.served_at, l.position from public.session_questions l
                                where l.user_id = uid
                                union all
                                select to_jsonb(a), a.served_at, a.position from archive.session_questions a
                                where a.user_id = uid) q),
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

-- 3. Retention, table by table. ---------------------------------------------------------------------------------

drop function service.response_retention_plan(timestamptz, integer);
drop function private.archive_response_partition(regclass);

-- What to run to retire the months of one live partitioned table wholly older than `keep_months` months before
-- as_of's month: `statements` to run one by one in autocommit (the default partition detached if a month is
-- still attached, each month detached concurrently, or a detach left pending finalized), then
-- private.attach_default_partition(table) whatever happened, then private.retire_partition for each of `retire`
-- (detached months, including those an earlier run detached and did not retire). PostgreSQL refuses a
-- concurrent detach while the table has a default partition, and meanwhile an insert for a month that has no
-- partition would fail: nothing is planned (`skipped`) unless this month and the next have theirs.
create function private.table_retention_plan(parent regclass, as_of timestamptz, keep_months integer) returns jsonb
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

-- The plans of the three live partitioned tables, in the order they are run: served questions and answers kept
-- `history_months` (RESPONSE_RETENTION_MONTHS), AI calls `ai_usage_months` (AI_USAGE_RETENTION_MONTHS).
create function service.retention_plan(as_of timestamptz, history_months integer, ai_usage_months integer)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
begin
  if history_months is null or history_months not between 1 and 120 then
    raise sqlstate 'PT422' using message = 'response_retention_months must be between 1 and 120';
  end if;
  if ai_usage_months is null or ai_usage_months not between 1 and 120 then
    raise sqlstate 'PT422' using message = 'ai_usage_retention_months must be between 1 and 120';
  end if;
  return jsonb_build_array(
    private.table_retention_plan('public.session_questions', as_of, history_months),
    private.table_retention_plan('public.responses', as_of, history_months),
    private.table_retention_plan('public.ai_usage', as_of, ai_usage_months));
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

-- A month detached from a live partitioned table leaves for good: a table with an archive twin
-- (`archive.<table>`) has it moved to the `archive` schema and attached there (its key, the archive's indexes and
-- foreign keys are already there, so nothing is built; its other indexes are dropped), if the archive already
-- holds that month its rows are added to it, and rows of that month in the archive's default partition (the
-- service may insert archived answers) move into it; a table without one (ai_usage) has it dropped.
-- Returns the archive's partition, or null when dropped. Idempotent: a month already retired is not found.
create function private.retire_partition(detached regclass) returns text
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

revoke all on function private.table_retention_plan(regclass, timestamptz, integer),
  service.retention_plan(timestamptz, integer, integer), private.attach_default_partition(regclass),
  private.retire_partition(regclass) from public, anon, authenticated, service_role;
-- Reading the plan is harmless; running it takes the tables' owner (functions/analytics/retention.py).
grant execute on function service.retention_plan(timestamptz, integer, integer),
  private.table_retention_plan(regclass, timestamptz, integer) to service_role;
