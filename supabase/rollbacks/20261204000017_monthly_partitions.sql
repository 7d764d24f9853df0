-- Undo 17. Monthly partitions: the tables become unpartitioned again, their rows (archived months included) copied
-- back and compared (counts and checksums) before the partitioned tables are dropped; any difference aborts.
create schema conversion;

drop function private.archive_response_partition(regclass);
drop function service.response_retention_plan(timestamptz, integer);
drop view public.session_summaries;
drop view public.response_history;
drop policy "question_ratings: rate questions served to me" on public.question_ratings;
drop policy "question_ratings: change own ratings of questions served to me" on public.question_ratings;
drop policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys;
alter publication supabase_realtime drop table public.responses;
alter publication supabase_realtime set (publish_via_partition_root = false);

alter table public.session_questions set schema conversion;
alter table public.responses set schema conversion;
alter table public.ai_usage set schema conversion;
alter table archive.responses rename constraint responses_pkey to archived_responses_pkey;
alter table archive.responses rename to archived_responses;
alter table archive.archived_responses set schema conversion;

create table public.session_questions (like conversion.session_questions including defaults including constraints including comments);
create table public.responses (like conversion.responses including defaults including constraints including comments);
create table public.ai_usage (like conversion.ai_usage including defaults including constraints including comments);
create table archive.responses (like conversion.responses including defaults including constraints including comments);

insert into public.session_questions select * from conversion.session_questions;
insert into public.responses select * from conversion.responses;
insert into public.ai_usage select * from conversion.ai_usage;
insert into archive.responses select * from conversion.archived_responses;

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
-- Partitions created as standalone tables by an interrupted retention run, if any.
do $$
declare
  leftover regclass;
begin
  for leftover in
    select c.oid::regclass from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'private' and c.relkind = 'r'
      and c.relname ~ '^(session_questions|responses|ai_usage)_(p[0-9]{6}|default)$'
  loop
    raise exception '% is a detached partition holding rows that the rollback did not copy: attach it first', leftover;
  end loop;
end
$$;
drop table public.served_questions;

alter table public.session_questions add primary key (id),
  add unique (session_id, position),
  add unique (id, session_id),
  add unique (user_id, question_id),
  add foreign key (session_id) references public.practice_sessions (id) on delete cascade,
  add foreign key (user_id) references public.users (id) on delete cascade,
  add foreign key (question_id) references public.questions (id);
create index idx_session_questions_question on public.session_questions (question_id, served_at);
create index idx_session_questions_served_at on public.session_questions (served_at);

alter table public.responses add primary key (id),
  add unique (session_question_id),
  add foreign key (session_id) references public.practice_sessions (id) on delete cascade,
  add foreign key (user_id) references public.users (id) on delete cascade,
  add foreign key (session_question_id, session_id) references public.session_questions (id, session_id)
    on delete cascade;
create index idx_responses_session on public.responses (session_id);
create index idx_responses_user_created on public.responses (user_id, created_at desc);
create index idx_responses_created_at_bucket on public.responses (created_at, (uuid_hash(user_id) & 63));
create index idx_responses_evaluated_at on public.responses (evaluated_at, created_at) where evaluated_at is not null;
create index idx_responses_evaluation_pending on public.responses (evaluation_requested_at)
  where evaluation_status in ('queued', 'processing');

alter table archive.responses add primary key (id);
create index idx_archive_responses_user on archive.responses (user_id, created_at desc);
create index idx_archive_responses_session on archive.responses (session_id);

alter table public.ai_usage add primary key (id),
  add foreign key (user_id) references public.users (id) on delete set null,
  add foreign key (response_id) references public.responses (id) on delete set null;
create index idx_ai_usage_created_at on public.ai_usage (created_at);
create index idx_ai_usage_user_created_at on public.ai_usage (user_id, created_at);
create index idx_ai_usage_response on public.ai_usage (response_id) where response_id is not null;

drop function private.claim_served_question();
create or replace function private.set_response_category() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  select q.category into new.category
  from public.session_questions sq
  join public.questions q on q.id = sq.question_id
  where sq.id = new.session_question_id and sq.session_id = new.session_id;
  if not found then
    raise foreign_key_violation using
      message = format('question %s was not served in session %s', new.session_question_id, new.session_id),
      hint = 'Answer one of the session''s served questions (its session_questions ids).';
  end if;
  return new;
end
$$;

create trigger set_category before insert on public.responses
  for each row execute function private.set_response_category();
create trigger guard_answer before insert or update of answer_text, audio_path, time_taken_seconds
  on public.responses for each row execute function private.guard_response();
create trigger refuse_work_while_deleting before insert on public.responses
  for each row execute function private.refuse_work_while_deleting();
create trigger set_updated_at before update on public.session_questions
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.responses
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.ai_usage
  for each row execute function private.set_updated_at();

alter table public.session_questions enable row level security;
alter table public.responses enable row level security;
alter table public.ai_usage enable row level security;
alter table archive.responses enable row level security;
revoke all on public.session_questions, public.responses, public.ai_usage from anon, authenticated;
grant select on public.session_questions, public.responses, public.ai_usage to authenticated;
grant insert (session_id, session_question_id, user_id, answer_text, audio_path, time_taken_seconds)
  on public.responses to authenticated;
grant update (answer_text, audio_path, time_taken_seconds) on public.responses to authenticated;
grant all on public.session_questions, public.responses, public.ai_usage to service_role;
revoke all on archive.responses from anon, authenticated;
grant select on archive.responses to authenticated;
grant select, insert, delete on archive.responses to service_role;

create policy "session_questions: read own" on public.session_questions
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
create policy "question_ratings: rate questions served to me" on public.question_ratings
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (
      select from public.session_questions sq
      where sq.question_id = question_ratings.question_id and sq.user_id = (select auth.uid())
    )
  );
create policy "question_ratings: change own ratings of questions served to me" on public.question_ratings
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select from public.session_questions sq
      where sq.question_id = question_ratings.question_id and sq.user_id = (select auth.uid())
    )
  );
create policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys
  for select to authenticated using (
    exists (
      select from public.session_questions sq
      join public.responses r on r.session_question_id = sq.id
      where sq.question_id = question_answer_keys.question_id and sq.user_id = (select auth.uid())
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

alter publication supabase_realtime add table public.responses;

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
  -- One level per step: an equality on every index column lets the scan return questions in rank order and
  -- stop after the pool (an `= any(...)` or a tag index would make it fetch and sort the whole bucket).
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
            -- offset 0 keeps this a probe of the (user, question) index per candidate, not a scan of the
            -- user's whole history.
            select from public.session_questions s
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


create or replace function private.serve_questions(user_id uuid, session_id uuid, request jsonb, wanted integer)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  last_position integer;
begin
  perform set_config('synchronous_commit', 'off', true);
  perform from public.practice_sessions s where s.id = serve_questions.session_id for update;
  select coalesce(max(sq.position), 0) into last_position
  from public.session_questions sq where sq.session_id = serve_questions.session_id;

  insert into public.session_questions (session_id, user_id, question_id, position, widening)
  select serve_questions.session_id, serve_questions.user_id, c.question_id,
         last_position + row_number() over (), c.widening
  from private.question_candidates(serve_questions.user_id, request, wanted) c
  on conflict on constraint session_questions_user_id_question_id_key do nothing;

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
begin
  if not exists (select from public.practice_sessions s
                 where s.id = serve_more_questions.session_id and s.user_id = serve_more_questions.user_id) then
    raise sqlstate 'PT404' using message = format('no session %s of yours', serve_more_questions.session_id);
  end if;
  perform set_config('synchronous_commit', 'off', true);  -- as private.serve_questions explains
  perform from public.practice_sessions s where s.id = serve_more_questions.session_id for update;
  select coalesce(max(sq.position), 0) into last_position
  from public.session_questions sq where sq.session_id = serve_more_questions.session_id;

  insert into public.session_questions (session_id, user_id, question_id, position, widening)
  select serve_more_questions.session_id, serve_more_questions.user_id, g.id::uuid,
         last_position + row_number() over (order by g.ordinal), 'generated'
  from jsonb_array_elements_text(generated) with ordinality as g (id, ordinal)
  order by g.ordinal
  limit wanted
  on conflict on constraint session_questions_user_id_question_id_key do nothing;
  get diagnostics taken = row_count;

  if taken < wanted then
    perform private.serve_questions(serve_more_questions.user_id, serve_more_questions.session_id, request,
                                    wanted - taken);
  end if;
  return private.session_question_list(serve_more_questions.session_id, last_position);
end
$$;


create or replace function service.run_maintenance(as_of timestamptz default now(), policy jsonb default '{}') returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  -- A session nobody touched for a day is over; a timed one once its limit has passed by an hour.
  abandon_after interval := make_interval(hours => coalesce((policy ->> 'abandon_after_hours')::integer, 24));
  -- The queue's own retries end about 65 minutes after a request (3 receives 30 minutes apart, the visibility
  -- timeout, each up to the worker's 5-minute timeout): past two hours nothing is coming.
  stuck_after interval := make_interval(mins => coalesce((policy ->> 'stuck_evaluation_minutes')::integer, 120));
  keep_responses interval := make_interval(days => coalesce((policy ->> 'response_retention_days')::integer, 365));
  archive_batch integer := coalesce((policy ->> 'archive_batch')::integer, 10000);
  keep_stripe_events interval := make_interval(days => coalesce((policy ->> 'stripe_event_retention_days')::integer, 90));
  keep_counters interval := make_interval(days => coalesce((policy ->> 'usage_counter_retention_days')::integer, 90));
  abandoned integer;
  stuck integer := 0;
  archived integer;
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

  with moved as (
    delete from public.responses r
    where r.id in (select r2.id from public.responses r2
                   join public.practice_sessions s on s.id = r2.session_id
                   where s.ended_at < as_of - keep_responses
                   limit archive_batch)
    returning r.*
  )
  insert into archive.responses select * from moved;
  get diagnostics archived = row_count;

  delete from private.stripe_events e where e.created_at < as_of - keep_stripe_events;
  get diagnostics purged_events = row_count;
  delete from public.usage_counters c where c.period_start < (as_of - keep_counters)::date;
  get diagnostics purged_counters = row_count;
  delete from private.generation_leases l where l.expires_at < as_of;
  get diagnostics purged_leases = row_count;

  return jsonb_build_object(
    'sessions_abandoned', abandoned, 'evaluations_failed', stuck, 'responses_archived', archived,
    'stripe_events_purged', purged_events, 'usage_counters_purged', purged_counters,
    'generation_leases_purged', purged_leases,
    'materialized_views_refreshed', private.refresh_materialized_views());
end
$$;


create or replace function private.session_question_list(session_id uuid, after_position integer) returns jsonb
language plpgsql stable
set search_path = ''
as $$
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
    where sq.session_id = session_question_list.session_id and sq.position > after_position
  );
end
$$;

drop function private.ensure_month_partitions(timestamptz, integer);
drop function private.partitioned_parents();
drop function private.create_default_partition(regclass);
drop function private.create_month_partition(regclass, date);
drop function private.partition_name(regclass, date);
drop function private.partition_key(regclass);
delete from private.operator_alerts where kind = 'rows_in_default_partition';
alter table private.operator_alerts drop constraint operator_alerts_kind_check;
alter table private.operator_alerts add constraint operator_alerts_kind_check
  check (kind in ('duplicate_live_subscriptions', 'unlinked_customer', 'unknown_price', 'unreadable_event'));
