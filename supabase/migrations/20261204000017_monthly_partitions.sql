-- 17. Monthly partitions for the tables that grow with traffic, retention by partition
--
-- `session_questions` (by served_at), `responses` and `ai_usage` (by created_at) become range-partitioned by UTC
-- month; `archive.responses` too, so a month of answers past the retention window is detached from
-- `public.responses` and attached to the archive whole (functions/analytics/retention.py), not moved row by row.
-- Left whole: `practice_sessions` (a tenth of the served questions' rows; every table here refers to it),
-- `user_progress`/`progress_totals` (rewritten in place, bounded by active users), `analytics_daily`,
-- `subscription_changes` and the Stripe tables (small).
--
-- Keys. A unique constraint on a partitioned table must contain the partition key, so the two guarantees the
-- platform relies on, unique constraints of the unpartitioned tables until now, move to a narrow unpartitioned
-- ledger, `served_questions (user_id, question_id)`, written in the serving transaction:
--   * a question is never served twice to a user: its primary key (serving claims the pair first, `on conflict
--     do nothing` skips a question a concurrent serve took; any other insert into session_questions claims it in
--     a trigger and fails on a repeat);
--   * one answer per served question: the answer's insert trigger sets the pair's `response_id` where it is
--     still null; a second answer (or a concurrent one, once the first commits) finds none and is refused.
-- Co-partitioning answers on the served question's month (copying its served_at into the answer) would keep a
-- foreign key into session_questions, but the answer's trigger cannot set a partition key: a row is routed to
-- its partition before its BEFORE triggers run. So the foreign key from an answer to its served question is
-- replaced by that trigger's check (it made it already, with a clearer error), and `ai_usage.response_id` is a
-- plain reference (account deletion clears it explicitly). Positions stay unique per session because serving
-- gives them under the session's row lock (a unique index would have to contain served_at).
--
-- Partitions live in `private` (archive partitions in `archive`), have RLS enabled and no grants: PostgREST
-- never exposes them and reads go through the parents' policies. A default partition catches a row for a month
-- nobody created: the insert succeeds and the scheduled maintenance raises an operator alert
-- (`rows_in_default_partition`). The maintenance creates the months ahead (`partition_months_ahead`, 3) with
-- the small functions below: pg_partman is not available on the embedded PostgreSQL the project runs on.
--
-- Existing rows are copied month by month into the new tables, then counts and checksums of every table are
-- compared before the old tables are dropped; any difference aborts the migration (nothing changes).

create schema conversion;

-- 1. What refers to the old tables by identity: views, policies, a foreign key, the publication. ---------------
drop view public.session_summaries;
drop view public.response_history;
drop policy "question_ratings: rate questions served to me" on public.question_ratings;
drop policy "question_ratings: change own ratings of questions served to me" on public.question_ratings;
drop policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys;
alter table public.ai_usage drop constraint ai_usage_response_id_fkey;
alter publication supabase_realtime drop table public.responses;

alter table public.session_questions set schema conversion;
alter table public.responses set schema conversion;
alter table public.ai_usage set schema conversion;
alter table archive.responses rename constraint responses_pkey to archived_responses_pkey;
alter table archive.responses rename to archived_responses;
alter table archive.archived_responses set schema conversion;

-- 2. Partition management. -------------------------------------------------------------------------------------

-- The partition key of a partitioned table (one column here).
create function private.partition_key(parent regclass) returns text
language sql stable
set search_path = ''
as $$
  select a.attname::text from pg_catalog.pg_partitioned_table p
  join pg_catalog.pg_attribute a on a.attrelid = p.partrelid and a.attnum = p.partattrs[0]
  where p.partrelid = parent
$$;

-- Where a parent's partitions live and what they are called: `<schema>.<table>_p<YYYYMM>`, `<table>_default`.
create function private.partition_name(parent regclass, month date) returns text
language sql stable
set search_path = ''
as $$
  select format('%I.%I', case when n.nspname = 'archive' then 'archive' else 'private' end,
                c.relname || coalesce('_p' || to_char(month, 'YYYYMM'), '_default'))
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.oid = parent
$$;

-- Create and attach one month's partition (UTC month), unless it exists. Created standalone and attached, so the
-- parent is never locked against reads and writes (attaching takes SHARE UPDATE EXCLUSIVE; creating a table as a
-- partition would take ACCESS EXCLUSIVE). Indexes, foreign keys and row triggers come from the parent.
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

alter table private.operator_alerts drop constraint operator_alerts_kind_check;
alter table private.operator_alerts add constraint operator_alerts_kind_check
  check (kind in ('duplicate_live_subscriptions', 'unlinked_customer', 'unknown_price', 'unreadable_event',
                  'rows_in_default_partition'));

-- The scheduled part: this month and `months_ahead` more exist for every live partitioned table; rows in a
-- default partition open (or keep open) an alert naming the table, the rows and their months, and an empty
-- default closes it. A month that already has rows in the default partition is not created (attaching it would
-- fail on them): the alert says so, and the operator moves them (docs/operations.md).
create function private.ensure_month_partitions(as_of timestamptz, months_ahead integer) returns jsonb
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
revoke all on function private.ensure_month_partitions(timestamptz, integer) from public, anon, authenticated;
grant execute on function private.ensure_month_partitions(timestamptz, integer) to service_role;

-- 3. The new tables, loaded before their indexes, foreign keys and triggers exist. -----------------------------

create table public.session_questions (like conversion.session_questions including defaults including constraints including comments)
  partition by range (served_at);
create table public.responses (like conversion.responses including defaults including constraints including comments)
  partition by range (created_at);
create table public.ai_usage (like conversion.ai_usage including defaults including constraints including comments)
  partition by range (created_at);
comment on column public.ai_usage.response_id is
  'The answer the call was for (no foreign key: answers are partitioned); cleared when the account is deleted.';
create table archive.responses (like conversion.responses including defaults including constraints including comments)
  partition by range (created_at);

-- The live partitioned tables the schedule keeps months ahead for.
create function private.partitioned_parents() returns regclass[]
language sql stable
set search_path = ''
as $$
  select array['public.session_questions', 'public.responses', 'public.ai_usage']::regclass[]
$$;

-- The never-served / answered-once ledger (see the header).
create table public.served_questions (
  user_id uuid not null references public.users (id) on delete cascade,
  question_id uuid not null,
  session_question_id uuid not null,
  -- The answer given to it (one per served question); null until answered.
  response_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (user_id, question_id)
);
create trigger set_updated_at before update on public.served_questions
  for each row execute function private.set_updated_at();
comment on table public.served_questions is
  'One row per question ever served to a user: the no-repeat and one-answer guarantees of the partitioned tables.';

do $$
declare
  parent regclass;
  month date;
begin
  foreach parent in array private.partitioned_parents() || 'archive.responses'::regclass loop
    for month in
      execute format('select distinct date_trunc(''month'', %I at time zone ''UTC'')::date from %s
                      union select date_trunc(''month'', now() at time zone ''UTC'')::date + make_interval(months => n)
                      from generate_series(0, 3) n',
                     private.partition_key(parent),
                     case parent when 'archive.responses'::regclass then 'conversion.archived_responses'
                                 else 'conversion.' || (select c.relname from pg_class c where c.oid = parent) end)
    loop
      perform private.create_month_partition(parent, month);
    end loop;
    perform private.create_default_partition(parent);
  end loop;
end
$$;

-- Batched: one statement per month, each reading the month through the old table's time index.
do $$
declare
  copy record;
  month timestamptz;
begin
  for copy in
    select * from (values
      ('public.session_questions', 'conversion.session_questions', 'served_at'),
      ('public.responses', 'conversion.responses', 'created_at'),
      ('public.ai_usage', 'conversion.ai_usage', 'created_at'),
      ('archive.responses', 'conversion.archived_responses', 'created_at')
    ) t (target, source, key)
  loop
    for month in execute format('select distinct date_trunc(''month'', %I, ''UTC'') from %s', copy.key, copy.source)
    loop
      execute format('insert into %s select * from %s where %I >= $1 and %I < $1 + interval ''1 month''',
                     copy.target, copy.source, copy.key, copy.key)
        using month;
    end loop;
  end loop;
end
$$;

-- Joined, not looked up per row: the old archive has no index on session_question_id.
insert into public.served_questions (user_id, question_id, session_question_id, response_id)
select sq.user_id, sq.question_id, sq.id, coalesce(r.id, a.id)
from conversion.session_questions sq
left join conversion.responses r on r.session_question_id = sq.id
left join conversion.archived_responses a on a.session_question_id = sq.id;

-- Every row arrived, unchanged: counts and checksums of each old table against its new one.
create function conversion.compare(old_table regclass, new_table regclass) returns void
language plpgsql
set search_path = ''
as $$
declare
  columns text := (select string_agg(quote_ident(a.attname), ', ' order by a.attnum) from pg_catalog.pg_attribute a
                   where a.attrelid = old_table and a.attnum > 0 and not a.attisdropped);
  before record;
  after record;
begin
  execute format('select count(*) as n, coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) as sum '
                 'from (select %s from %s) t', columns, old_table) into before;
  execute format('select count(*) as n, coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) as sum '
                 'from (select %s from %s) t', columns, new_table) into after;
  if before is distinct from after then
    raise exception 'converting % to % changed its rows: % rows (checksum %) became % (checksum %)',
      old_table, new_table, before.n, before.sum, after.n, after.sum;
  end if;
end
$$;
select conversion.compare('conversion.session_questions', 'public.session_questions');
select conversion.compare('conversion.responses', 'public.responses');
select conversion.compare('conversion.ai_usage', 'public.ai_usage');
select conversion.compare('conversion.archived_responses', 'archive.responses');

drop table conversion.ai_usage, conversion.responses, conversion.archived_responses, conversion.session_questions;
drop function conversion.compare(regclass, regclass);
drop schema conversion;

-- 4. Keys, indexes, foreign keys, triggers (each cascades to every partition). ----------------------------------

alter table public.session_questions add primary key (id, served_at);
create index idx_session_questions_session on public.session_questions (session_id, position);
create index idx_session_questions_user_question on public.session_questions (user_id, question_id);
create index idx_session_questions_question on public.session_questions (question_id, served_at);
create index idx_session_questions_served_at on public.session_questions (served_at);
alter table public.session_questions
  add foreign key (session_id) references public.practice_sessions (id) on delete cascade,
  add foreign key (user_id) references public.users (id) on delete cascade,
  add foreign key (question_id) references public.questions (id);

alter table public.responses add primary key (id, created_at);
create index idx_responses_session on public.responses (session_id);
create index idx_responses_session_question on public.responses (session_question_id);
create index idx_responses_user_created on public.responses (user_id, created_at desc);
create index idx_responses_created_at_bucket on public.responses (created_at, (uuid_hash(user_id) & 63));
create index idx_responses_evaluated_at on public.responses (evaluated_at, created_at) where evaluated_at is not null;
create index idx_responses_evaluation_pending on public.responses (evaluation_requested_at)
  where evaluation_status in ('queued', 'processing');
alter table public.responses
  add foreign key (session_id) references public.practice_sessions (id) on delete cascade,
  add foreign key (user_id) references public.users (id) on delete cascade;

-- An archived month keeps the live table's key and these indexes (attaching it builds nothing).
alter table archive.responses add primary key (id, created_at);
create index idx_archive_responses_user on archive.responses (user_id, created_at desc);
create index idx_archive_responses_session on archive.responses (session_id);
create index idx_archive_responses_session_question on archive.responses (session_question_id);

alter table public.ai_usage add primary key (id, created_at);
create index idx_ai_usage_created_at on public.ai_usage (created_at);
create index idx_ai_usage_user_created_at on public.ai_usage (user_id, created_at);
create index idx_ai_usage_response on public.ai_usage (response_id) where response_id is not null;
alter table public.ai_usage add foreign key (user_id) references public.users (id) on delete set null;

-- Any insert into session_questions claims its (user, question) pair; serving has claimed it already.
create function private.claim_served_question() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select from public.served_questions s
                 where s.user_id = new.user_id and s.question_id = new.question_id and s.session_question_id = new.id)
  then
    -- A question already served to this user fails here: served_questions_pkey.
    insert into public.served_questions (user_id, question_id, session_question_id)
    values (new.user_id, new.question_id, new.id);
  end if;
  return new;
end
$$;
create trigger claim_served_question before insert on public.session_questions
  for each row execute function private.claim_served_question();
create trigger set_updated_at before update on public.session_questions
  for each row execute function private.set_updated_at();

-- The answer's category and its served question, as in 5.; and the served question's one answer, claimed.
create or replace function private.set_response_category() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  served record;
  started timestamptz := (select s.started_at from public.practice_sessions s where s.id = new.session_id);
begin
  select q.category, sq.user_id, sq.question_id into served
  from public.session_questions sq
  join public.questions q on q.id = sq.question_id
  where sq.id = new.session_question_id and sq.session_id = new.session_id and sq.served_at >= started;
  if not found then
    -- Rows loaded with a served_at before their session started (imports, fixtures): every month, once.
    select q.category, sq.user_id, sq.question_id into served
    from public.session_questions sq
    join public.questions q on q.id = sq.question_id
    where sq.id = new.session_question_id and sq.session_id = new.session_id;
  end if;
  if not found then
    raise foreign_key_violation using
      message = format('question %s was not served in session %s', new.session_question_id, new.session_id),
      hint = 'Answer one of the session''s served questions (its session_questions ids).';
  end if;
  new.category := served.category;
  if served.user_id = new.user_id and new.user_id = coalesce(auth.uid(), new.user_id) then
    -- Waits for a concurrent answer to the same question, then finds it answered.
    update public.served_questions s set response_id = new.id
    where s.user_id = served.user_id and s.question_id = served.question_id
      and s.session_question_id = new.session_question_id and s.response_id is null;
    if not found then
      -- A served question bulk-loaded without its ledger row (triggers off) is claimed now.
      insert into public.served_questions (user_id, question_id, session_question_id, response_id)
      values (served.user_id, served.question_id, new.session_question_id, new.id)
      on conflict on constraint served_questions_pkey do nothing;
    end if;
    if not found then
      raise unique_violation using
        message = format('question %s of session %s is already answered', new.session_question_id, new.session_id),
        hint = 'Revise the answer you gave (update it while the session is open).';
    end if;
  elsif auth.uid() is null then
    raise foreign_key_violation using
      message = format('question %s was served to another user than %s', new.session_question_id, new.user_id);
  end if;
  -- Otherwise a user answers in someone else's name or session: the row-level policy refuses it after this
  -- trigger, and nothing here may tell them whether that question was answered.
  return new;
end
$$;
create trigger set_category before insert on public.responses
  for each row execute function private.set_response_category();
create trigger guard_answer before insert or update of answer_text, audio_path, time_taken_seconds
  on public.responses for each row execute function private.guard_response();
create trigger refuse_work_while_deleting before insert on public.responses
  for each row execute function private.refuse_work_while_deleting();
create trigger set_updated_at before update on public.responses
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.ai_usage
  for each row execute function private.set_updated_at();

-- 5. Access: as before on the parents; partitions have none (RLS on, no grants). -------------------------------

alter table public.session_questions enable row level security;
alter table public.responses enable row level security;
alter table public.ai_usage enable row level security;
alter table public.served_questions enable row level security;
alter table archive.responses enable row level security;

revoke all on public.session_questions, public.responses, public.ai_usage, public.served_questions
  from anon, authenticated;
grant select on public.session_questions, public.responses, public.ai_usage, public.served_questions to authenticated;
grant insert (session_id, session_question_id, user_id, answer_text, audio_path, time_taken_seconds)
  on public.responses to authenticated;
grant update (answer_text, audio_path, time_taken_seconds) on public.responses to authenticated;
grant all on public.session_questions, public.responses, public.ai_usage, public.served_questions to service_role;
revoke all on archive.responses from anon, authenticated;
grant select on archive.responses to authenticated;
grant select, insert, delete on archive.responses to service_role;

create policy "session_questions: read own" on public.session_questions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "served_questions: read own" on public.served_questions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "responses: read own" on public.responses
  for select to authenticated using (user_id = (select auth.uid()));
create policy "responses: answer in own open session" on public.responses
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (
      select from public.practice_sessions s
      where s.id = session_id and s.user_id = (select auth.uid()) and s.status = 'in_progress'
    )
  );
create policy "responses: revise own answer in open session" on public.responses
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select from public.practice_sessions s
      where s.id = session_id and s.user_id = (select auth.uid()) and s.status = 'in_progress'
    )
  );
create policy "ai_usage: admins read" on public.ai_usage
  for select to authenticated using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
create policy "archived responses: read own" on archive.responses
  for select to authenticated using (user_id = (select auth.uid()));

-- Served-to-me checks read the ledger's primary key (one probe, not one per month).
create policy "question_ratings: rate questions served to me" on public.question_ratings
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (
      select from public.served_questions s
      where s.question_id = question_ratings.question_id and s.user_id = (select auth.uid())
    )
  );
create policy "question_ratings: change own ratings of questions served to me" on public.question_ratings
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select from public.served_questions s
      where s.question_id = question_ratings.question_id and s.user_id = (select auth.uid())
    )
  );
create policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys
  for select to authenticated using (
    exists (
      select from public.served_questions s
      where s.question_id = question_answer_keys.question_id and s.user_id = (select auth.uid())
        and s.response_id is not null
    )
  );

-- The columns the view had since 12. (evaluation_attempts, added in 13., was never in it).
create view public.response_history with (security_invoker = true) as
select id, session_id, session_question_id, user_id, category, answer_text, audio_path, transcript, time_taken_seconds,
       evaluation_status, evaluation_requested_at, ai_score, feedback, strengths, improvements, criterion_scores,
       evaluation_error, evaluator, evaluated_at, created_at, updated_at
from public.responses
union all
select id, session_id, session_question_id, user_id, category, answer_text, audio_path, transcript, time_taken_seconds,
       evaluation_status, evaluation_requested_at, ai_score, feedback, strengths, improvements, criterion_scores,
       evaluation_error, evaluator, evaluated_at, created_at, updated_at
from archive.responses;
revoke all on public.response_history from anon, authenticated;
grant select on public.response_history to authenticated, service_role;

create view public.session_summaries with (security_invoker = true) as
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
revoke all on public.session_summaries from anon, authenticated;
grant select on public.session_summaries to authenticated, service_role;

-- Realtime: changes of a partition are published as the parent's (clients subscribe to `responses`).
alter publication supabase_realtime set (publish_via_partition_root = true);
alter publication supabase_realtime add table public.responses;

-- 6. Serving claims each question in the ledger first. ---------------------------------------------------------

-- As in 13., the never-served probe reading the ledger's primary key.
create or replace function private.question_candidates(user_id uuid, request jsonb, wanted integer)
returns table (question_id uuid, widening text)
language plpgsql volatile
set search_path = ''
as $$
declare
  want_category public.question_category := (request ->> 'category')::public.question_category;
  want_difficulty public.difficulty := (request ->> 'difficulty')::public.difficulty;
  want_level public.experience_level := (request ->> 'experience_level')::public.experience_level;
  want_role text := nullif(btrim(request ->> 'target_role'), '');
  want_tags text[] := (select array_agg(lower(t)) from jsonb_array_elements_text(request -> 'tags') t);
  levels public.experience_level[] := enum_range(null::public.experience_level);
  level_index integer := array_position(enum_range(null::public.experience_level), want_level);
  picked uuid[] := '{}';
  step record;
  found_ids uuid[];
begin
  for step in
    select * from (values
      (1, 'exact', want_level, want_tags),
      (2, 'any_tags', want_level, null::text[]),
      (3, 'neighbour_level', levels[level_index - 1], null::text[]),
      (4, 'neighbour_level', levels[level_index + 1], null::text[])
    ) as steps (ordinal, name, step_level, step_tags)
    where (name <> 'any_tags' or want_tags is not null) and step_level is not null
    order by ordinal
  loop
    exit when cardinality(picked) >= wanted;
    select array_agg(pool.id) into found_ids from (
      select c.id from (
        select q.id, q.rank_score
        from public.questions q
        where q.is_active
          and q.category = want_category
          and q.difficulty = want_difficulty
          and q.experience_level = step.step_level
          and (q.provisional_for is null or q.provisional_for = question_candidates.user_id)
          and (want_role is null or q.target_role is null or lower(q.target_role) = lower(want_role))
          and (step.step_tags is null or (q.tags && step.step_tags) is true)
          and q.id <> all(picked)
          and not exists (
            select from public.served_questions s
            where s.user_id = question_candidates.user_id and s.question_id = q.id
            offset 0
          )
        order by q.rank_score desc
        limit 4 * (wanted - cardinality(picked))
      ) c
      order by c.rank_score + random() * 0.15 desc
      limit wanted - cardinality(picked)
    ) pool;
    if found_ids is not null then
      picked := picked || found_ids;
      return query select unnest(found_ids), step.name::text;
    end if;
  end loop;
end
$$;

-- As in 9.: positions are given under the session's row lock, so they stay unique per session without a unique
-- index (which would have to contain served_at). A session's questions are served once it started, so its
-- lookups read only the months since (`served_at >= started_at`: the partitions before are pruned).
create or replace function private.session_question_list(session_id uuid, after_position integer) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  started timestamptz := (select s.started_at from public.practice_sessions s
                          where s.id = session_question_list.session_id);
begin
  return (
    select coalesce(jsonb_agg(jsonb_build_object(
        'session_question_id', sq.id, 'position', sq.position, 'widening', sq.widening, 'id', q.id,
        'content', q.content, 'category', q.category, 'difficulty', q.difficulty,
        'experience_level', q.experience_level, 'target_role', q.target_role, 'tags', q.tags,
        'source', q.source
      ) order by sq.position), '[]')
    from public.session_questions sq
    join public.questions q on q.id = sq.question_id
    where sq.session_id = session_question_list.session_id and sq.served_at >= started
      and sq.position > after_position
  );
end
$$;

create or replace function private.serve_questions(user_id uuid, session_id uuid, request jsonb, wanted integer)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  last_position integer;
  started timestamptz;
begin
  perform set_config('synchronous_commit', 'off', true);
  select s.started_at into started from public.practice_sessions s where s.id = serve_questions.session_id for update;
  select coalesce(max(sq.position), 0) into last_position
  from public.session_questions sq
  where sq.session_id = serve_questions.session_id and sq.served_at >= started;

  with candidates as (
    select c.question_id, c.widening, gen_random_uuid() as id, row_number() over () as ordinal
    from private.question_candidates(serve_questions.user_id, request, wanted) c
  ), claimed as (
    insert into public.served_questions (user_id, question_id, session_question_id)
    select serve_questions.user_id, c.question_id, c.id from candidates c
    on conflict on constraint served_questions_pkey do nothing
    returning session_question_id
  )
  insert into public.session_questions (id, session_id, user_id, question_id, position, widening)
  select c.id, serve_questions.session_id, serve_questions.user_id, c.question_id, last_position + c.ordinal,
         c.widening
  from candidates c join claimed on claimed.session_question_id = c.id;

  return private.session_question_list(serve_questions.session_id, last_position);
end
$$;

create or replace function service.serve_more_questions(
  user_id uuid, session_id uuid, request jsonb, wanted integer, generated jsonb default '[]'
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  last_position integer;
  taken integer;
  started timestamptz;
begin
  if not exists (select from public.practice_sessions s
                 where s.id = serve_more_questions.session_id and s.user_id = serve_more_questions.user_id) then
    raise sqlstate 'PT404' using message = format('no session %s of yours', serve_more_questions.session_id);
  end if;
  perform set_config('synchronous_commit', 'off', true);  -- as private.serve_questions explains
  select s.started_at into started from public.practice_sessions s
  where s.id = serve_more_questions.session_id for update;
  select coalesce(max(sq.position), 0) into last_position
  from public.session_questions sq
  where sq.session_id = serve_more_questions.session_id and sq.served_at >= started;

  with candidates as (
    select g.id::uuid as question_id, gen_random_uuid() as id, g.ordinal
    from jsonb_array_elements_text(generated) with ordinality as g (id, ordinal)
    order by g.ordinal
    limit wanted
  ), claimed as (
    insert into public.served_questions (user_id, question_id, session_question_id)
    select serve_more_questions.user_id, c.question_id, c.id from candidates c
    on conflict on constraint served_questions_pkey do nothing
    returning session_question_id
  )
  insert into public.session_questions (id, session_id, user_id, question_id, position, widening)
  select c.id, serve_more_questions.session_id, serve_more_questions.user_id, c.question_id,
         last_position + row_number() over (order by c.ordinal), 'generated'
  from candidates c join claimed on claimed.session_question_id = c.id;
  get diagnostics taken = row_count;

  if taken < wanted then
    perform private.serve_questions(serve_more_questions.user_id, serve_more_questions.session_id, request,
                                    wanted - taken);
  end if;
  return private.session_question_list(serve_more_questions.session_id, last_position);
end
$$;

-- 7. Housekeeping: months ahead instead of row moves; retention by partition. ----------------------------------

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

-- Retention of answers, a UTC month at a time: the months of `public.responses` wholly older than `keep_months`
-- months before as_of's month are detached and attached to `archive.responses` (their owners still read them
-- through public.response_history; deleting a user still removes them). `detach partition ... concurrently`
-- cannot run in a transaction, so this returns the statements for the caller to run one by one in autocommit
-- (functions/analytics/retention.py): `statements`, then `restore` whatever happened, then each of `archive`
-- with private.archive_response_partition. It is recomputed from the catalog every run, so an interrupted run
-- resumes (a detach left pending is finalized, a detached month still in `private` is archived).
-- PostgreSQL refuses a concurrent detach while the table has a default partition, so the default is detached
-- (briefly, ACCESS EXCLUSIVE under the caller's lock_timeout) around them and attached again by `restore`;
-- meanwhile an insert for a month that has no partition would fail, so nothing runs unless this month and the
-- next have theirs.
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

-- A month detached from public.responses joins archive.responses: moved to the `archive` schema and attached
-- (its key and the archive's indexes are already there, so nothing is built; its other indexes are dropped).
-- If the archive already holds that month (answers archived row by row before 17.), the rows are added to it;
-- rows of that month in the archive's default partition move into it.
-- Idempotent: a month already archived is left alone.
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
