-- 23. A question bank that curates itself: reports, a lifecycle, an audit trail, versions, moderation
--
-- A question is `provisional` (AI-made, served only to the user it was made for), `active` (the shared bank),
-- `under_review` (out of the bank until a moderator decides) or `retired`. The truth is `questions.status`;
-- `is_active` (and `provisional_for`), which selection and the read policy use, follow it by trigger, so serving
-- is unchanged.
--
-- Every change of status is a row of `public.question_transitions` (append-only): its before-insert trigger
-- applies the change to the question. The scheduled step `service.curate_questions` inserts them for what the
-- evidence says (ratings, reports, answer scores, near-duplicates); moderators insert them through PostgREST
-- (approve, edit, retire, with a reason); operators through `prep questions`.
--
-- Editing a question's face (text, category, difficulty, level, role, tags) makes a new version: the question
-- keeps its id (so never-repeat, one-answer and dedup treat its versions as one question), the old face stays in
-- `question_versions`, and each served row records the version it showed (so its answer keeps it too).
--
-- This replaces 13.'s gate (private.promote_provisional_questions, run by the rollup): admission of provisional
-- questions is one of the curation step's transitions.

-- 1. Status and version. -----------------------------------------------------------------------------------------

create type public.question_status as enum ('provisional', 'active', 'under_review', 'retired');

alter table public.questions
  add column status public.question_status not null default 'active',
  add column version integer not null default 1 check (version >= 1);
update public.questions set status = case when not is_active then 'retired'
                                          when provisional_for is not null then 'provisional'
                                          else 'active' end::public.question_status
where status is distinct from (case when not is_active then 'retired'
                                    when provisional_for is not null then 'provisional'
                                    else 'active' end)::public.question_status;
comment on column public.questions.status is
  'Lifecycle (23.): provisional, active, under_review, retired. is_active follows it (a trigger).';
comment on column public.questions.version is 'The current version of the face (public.question_versions).';
create index idx_questions_status on public.questions (status) where status in ('provisional', 'under_review');

-- `is_active` follows `status`. Older writers that set is_active (the seed's upserts, a harness) still work: a
-- change of is_active alone maps onto a status, as does clearing provisional_for. A provisional question whose
-- user was deleted (provisional_for set null by the foreign key) goes to review rather than into the bank.
create function private.keep_question_state() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    if new.provisional_for is not null and new.status = 'active' then
      new.status := 'provisional';
    end if;
    if not new.is_active and new.status in ('provisional', 'active') then
      new.status := 'retired';
    end if;
  else
    if new.is_active is distinct from old.is_active and new.status = old.status then
      new.status := case when not new.is_active then 'retired'
                         when new.provisional_for is not null then 'provisional'
                         else 'active' end;
    end if;
    if new.status = 'active' then
      new.provisional_for := null;  -- admitted to the shared bank
    elsif new.status = 'provisional' and new.provisional_for is null then
      -- Cleared by a statement (13.'s way of admitting one): admitted. Cleared by the foreign key's action (a
      -- trigger: the user was deleted): nobody vouched for it, so it waits for a moderator.
      new.status := case when pg_trigger_depth() > 1 then 'under_review' else 'active' end;
    end if;
    -- A new face is a new version (the old one is kept by record_question_version).
    if (new.content, new.category, new.difficulty, new.experience_level, new.target_role, new.tags)
       is distinct from (old.content, old.category, old.difficulty, old.experience_level, old.target_role, old.tags)
    then
      new.version := old.version + 1;
    else
      new.version := old.version;
    end if;
  end if;
  new.is_active := new.status in ('provisional', 'active');
  return new;
end
$$;
create trigger keep_question_state before insert or update on public.questions
  for each row execute function private.keep_question_state();

-- 2. Versions. ---------------------------------------------------------------------------------------------------

create table public.question_versions (
  question_id uuid not null references public.questions (id) on delete cascade,
  version integer not null check (version >= 1),
  content text not null,
  category public.question_category not null,
  difficulty public.difficulty not null,
  experience_level public.experience_level not null,
  target_role text,
  tags text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (question_id, version)
);
comment on table public.question_versions is
  'Every face a question has had; served rows and their answers name the version they showed.';
create trigger set_updated_at before update on public.question_versions
  for each row execute function private.set_updated_at();

insert into public.question_versions (question_id, version, content, category, difficulty, experience_level,
                                      target_role, tags, created_at)
select q.id, q.version, q.content, q.category, q.difficulty, q.experience_level, q.target_role, q.tags, q.created_at
from public.questions q;

create function private.record_question_version() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' or new.version <> old.version then
    insert into public.question_versions (question_id, version, content, category, difficulty, experience_level,
                                          target_role, tags)
    values (new.id, new.version, new.content, new.category, new.difficulty, new.experience_level,
            new.target_role, new.tags);
  end if;
  return null;
end
$$;
create trigger record_question_version after insert or update on public.questions
  for each row execute function private.record_question_version();

-- The version each served question showed. A constant default adds the column without rewriting the table
-- (every row served so far showed version 1); the trigger fills it for new rows, so serving needs no change.
alter table public.session_questions add column question_version integer not null default 1;
alter table archive.session_questions add column question_version integer not null default 1;

create function private.record_served_version() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.question_version := (select q.version from public.questions q where q.id = new.question_id);
  return new;
end
$$;
create trigger record_served_version before insert on public.session_questions
  for each row execute function private.record_served_version();

-- 3. Reports: a user reports a question served to them, once. -------------------------------------------------

create type public.question_report_reason as enum ('wrong', 'unclear', 'offensive', 'duplicate');

create table public.question_reports (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  question_id uuid not null references public.questions (id) on delete cascade,
  -- The version the user saw (the one they were served), set by the trigger.
  question_version integer not null default 1,
  reason public.question_report_reason not null,
  details text check (char_length(details) <= 1000),
  -- Set when a moderator or operator approves or edits the question (the report was heard).
  resolved_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (user_id, question_id)
);
comment on table public.question_reports is
  'Users'' reports of questions served to them (one per user and question); open until a moderator decides.';
create index idx_question_reports_question on public.question_reports (question_id, created_at);
create index idx_question_reports_created on public.question_reports (created_at);
create trigger set_updated_at before update on public.question_reports
  for each row execute function private.set_updated_at();
create trigger refuse_work_while_deleting before insert on public.question_reports
  for each row execute function private.refuse_work_while_deleting();

-- Size first (the value's header: constant time), then the version the reporter was served (security definer:
-- reporters have no access to `private`).
create function private.check_question_report() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.limit_size('details', new.details, 4000);
  new.question_version := coalesce(
    (select sq.question_version from public.served_questions s
     join public.session_questions sq on sq.id = s.session_question_id and sq.question_id = s.question_id
     where s.user_id = new.user_id and s.question_id = new.question_id),
    (select q.version from public.questions q where q.id = new.question_id), 1);
  return new;
end
$$;
create trigger check_question_report before insert on public.question_reports
  for each row execute function private.check_question_report();

-- 4. The audit trail, which is also how every transition is made. ---------------------------------------------

create table public.question_transitions (
  id bigint generated always as identity primary key,
  question_id uuid not null references public.questions (id) on delete cascade,
  from_status public.question_status,
  to_status public.question_status not null,
  -- The question's version after the transition.
  version integer,
  reason text not null check (char_length(reason) between 1 and 500),
  -- The evidence: counts, averages, thresholds (the curation step), or nothing (a person's decision).
  figures jsonb not null default '{}' check (jsonb_typeof(figures) = 'object'),
  -- An edit: the new text (null when the text did not change).
  content text check (char_length(content) between 10 and 2000),
  actor text not null default 'operator' check (actor in ('curation', 'moderator', 'operator', 'system')),
  moderator_id uuid default auth.uid() references public.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.question_transitions is
  'Append-only: every change of a question''s status or text, with who made it, why, and the figures.';
create index idx_question_transitions_question on public.question_transitions (question_id, id);
create index idx_question_transitions_moderator on public.question_transitions (moderator_id)
  where moderator_id is not null;
create trigger set_updated_at before update on public.question_transitions
  for each row execute function private.set_updated_at();

-- Applies the transition to its question (security definer: moderators may not update questions themselves;
-- the insert policy below admitted only moderators). Bounded first, then checked, then applied whole.
-- A row inserted from a trigger (the audit of a direct change, below) only records.
create function private.apply_question_transition() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  current public.questions;
begin
  perform private.limit_size('reason', new.reason, 2000);
  perform private.limit_size('content', new.content, 8000);
  if pg_trigger_depth() > 1 then
    return new;
  end if;
  -- A signed-in caller is a moderator (or refused); the service names itself (curation, operator).
  if (select auth.jwt()) ->> 'role' = 'authenticated' then
    if ((select auth.jwt()) -> 'app_metadata' ->> 'role') is distinct from 'moderator' then
      raise sqlstate '42501' using message = 'only moderators decide on questions';
    end if;
    new.actor := 'moderator';
    new.moderator_id := (select auth.uid());
    new.figures := '{}';
  elsif new.actor = 'moderator' or new.moderator_id is not null then
    raise sqlstate 'PT422' using message = 'a moderator''s decision comes with a moderator''s token',
      hint = 'The service records actor curation or operator.';
  end if;
  if new.to_status = 'provisional' then
    raise sqlstate 'PT422' using message = 'a question cannot be made provisional again',
      hint = 'Approve (active), send to review (under_review) or retire (retired).';
  end if;
  select * into current from public.questions q where q.id = new.question_id for update;
  if not found then
    raise sqlstate 'PT404' using message = format('no question %s', new.question_id);
  end if;
  new.from_status := current.status;
  perform set_config('curation.applying', 'on', true);
  update public.questions q
  set status = new.to_status, content = coalesce(btrim(new.content), q.content)
  where q.id = new.question_id
  returning q.version into new.version;
  perform set_config('curation.applying', 'off', true);
  if new.actor in ('moderator', 'operator') and (new.to_status = 'active' or new.content is not null) then
    -- Heard: the open reports are resolved, and the answer statistics start again.
    update public.question_reports r set resolved_at = now()
    where r.question_id = new.question_id and r.resolved_at is null;
    delete from private.question_score_stats c where c.question_id = new.question_id;
  end if;
  return new;
end
$$;
create trigger apply_transition before insert on public.question_transitions
  for each row execute function private.apply_question_transition();

-- A status changed by anything else (a direct update, the foreign key of a deleted user) is recorded too.
create function private.audit_direct_status_change() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and current_setting('curation.applying', true) is distinct from 'on' then
    insert into public.question_transitions (question_id, from_status, to_status, version, reason, actor,
                                             moderator_id)
    values (new.id, old.status, new.status, new.version, 'status changed outside the curation step', 'system',
            null);
  end if;
  return null;
end
$$;
create trigger audit_direct_status_change after update of status, is_active, provisional_for on public.questions
  for each row execute function private.audit_direct_status_change();

-- 5. Answer statistics, accumulated incrementally by the curation step. --------------------------------------

-- Sums over the evaluated answers of each question since its version's last approval: scores, and scores
-- paired with the answering user's overall mean (progress_totals.average_score, their ability), for the
-- correlation that says whether the question tells strong candidates from weak ones.
create table private.question_score_stats (
  question_id uuid primary key references public.questions (id) on delete cascade,
  answers integer not null default 0,
  score_sum double precision not null default 0,
  low_scores integer not null default 0,   -- below 25 of 100
  high_scores integer not null default 0,  -- 90 or more
  -- Answers whose user has an overall mean (the correlation's sample).
  paired integer not null default 0,
  paired_score_sum double precision not null default 0,
  paired_score_squares double precision not null default 0,
  ability_sum double precision not null default 0,
  ability_squares double precision not null default 0,
  score_ability_sum double precision not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on private.question_score_stats
  for each row execute function private.set_updated_at();
alter table private.question_score_stats enable row level security;
revoke all on private.question_score_stats from anon, authenticated;
grant all on private.question_score_stats to service_role;

-- 6. Who may do what. ----------------------------------------------------------------------------------------

alter table public.question_versions enable row level security;
alter table public.question_reports enable row level security;
alter table public.question_transitions enable row level security;

revoke all on public.question_versions, public.question_reports, public.question_transitions from anon, authenticated;
grant select on public.question_versions to authenticated;
grant select on public.question_reports to authenticated;
grant insert (user_id, question_id, reason, details) on public.question_reports to authenticated;
grant select on public.question_transitions to authenticated;
grant insert (question_id, to_status, reason, content) on public.question_transitions to authenticated;
grant all on public.question_versions, public.question_reports to service_role;
-- Append-only, even for the service (whose default privileges would grant everything).
revoke all on public.question_transitions from service_role;
grant select, insert on public.question_transitions to service_role;
grant select (status, version) on public.questions to authenticated;

-- Moderators: `app_metadata.role = 'moderator'` in the JWT (app_metadata is written only by the service;
-- user_metadata by the user, so it grants nothing).
drop policy "questions: signed-in users read the shared bank and their provisional questions" on public.questions;
create policy "questions: signed-in users read the shared bank and their provisional questions; moderators all"
  on public.questions for select to authenticated
  using ((is_active and (provisional_for is null or provisional_for = (select auth.uid())))
         or ((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');
create policy "question_versions: moderators read" on public.question_versions
  for select to authenticated using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');
create policy "question_reports: read own; moderators read all" on public.question_reports
  for select to authenticated
  using (user_id = (select auth.uid()) or ((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');
create policy "question_reports: report a question served to me" on public.question_reports
  for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and exists (select from public.served_questions s
                where s.user_id = (select auth.uid()) and s.question_id = question_reports.question_id)
  );
create policy "question_transitions: moderators read" on public.question_transitions
  for select to authenticated using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');
create policy "question_transitions: moderators decide" on public.question_transitions
  for insert to authenticated
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');

-- The moderators' queue: what the curation step sent to review, with why and its open reports.
create view public.question_review_queue with (security_invoker = true) as
select q.id, q.content, q.category, q.difficulty, q.experience_level, q.source, q.status, q.version,
       q.usage_count, q.rating_avg, q.rating_count,
       t.reason, t.figures, t.created_at as flagged_at,
       (select count(*) from public.question_reports r where r.question_id = q.id and r.resolved_at is null)
         as open_reports
from public.questions q
left join lateral (select t.reason, t.figures, t.created_at from public.question_transitions t
                   where t.question_id = q.id order by t.id desc limit 1) t on true
where q.status = 'under_review';
comment on view public.question_review_queue is 'Questions under review, oldest flag first; moderators only.';
revoke all on public.question_review_queue from anon, authenticated;
grant select on public.question_review_queue to authenticated, service_role;

-- 7. The curation step. --------------------------------------------------------------------------------------

drop function private.promote_provisional_questions();

-- As in 21., without 13.'s promotion (now the curation step's).
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
  return jsonb_build_object('questions_updated', touched, 'since', since);
end
$$;


-- The scheduled curation step: fold the answers evaluated since the last run into each question's sums, look
-- again at every question with new evidence (answers, ratings, reports, a new version, or still provisional),
-- and move those the evidence condemns or admits, each move a row of question_transitions with its figures.
-- Rules, first match wins (thresholds in the figures):
--   near-duplicate of an older question of the bank (trigram similarity >= 0.6 in its category: the bank's
--     dedup rule), checked for new versions and questions reported as duplicates         -> retired
--   open reports: offensive ones >= max(2, 0.5% of exposures), any >= max(3, 2% of exposures) -> under_review
--   30+ evaluated answers: mean < 15 or 80% below 25 (nobody can answer), 80% at 90+ (everybody aces), the mean
--     outside its difficulty's band (easy below 55, hard above 65: mislabelled); 50+ answers by users with an
--     overall mean whose scores correlate < 0.1 with it (does not discriminate)          -> under_review
--   10+ ratings whose Bayesian average (the bank's prior in private.question_rank: 10 votes of 3.5) < 2.5
--                                                                                      -> retired
--   provisional, served to the user it was made for, no rating below 3 (13.'s gate)    -> active
-- Answers count once: a run takes those evaluated in (the last run's end, as_of - 5 minutes], the 5 minutes
-- letting evaluations still committing land first.
create function service.curate_questions(as_of timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  since timestamptz;
  until timestamptz := as_of - interval '5 minutes';
  recent timestamptz;
  oldest timestamptz;
  tallied bigint;
  examined integer;
  moves jsonb;
begin
  select w.processed_until into since
  from private.rollup_watermarks w where w.name = 'question_curation' for update;
  since := coalesce(since, '-infinity');
  until := greatest(until, since);
  recent := since - interval '10 minutes';

  -- 1. Answers evaluated in the window, into each question's sums.
  select min(r.created_at) into oldest
  from public.responses r where r.evaluated_at > since and r.evaluated_at <= until and r.ai_score is not null;
  with answered as (
    select sq.question_id, r.ai_score::double precision as score, t.average_score::double precision as ability
    from public.responses r
    -- By id alone: the session is implied, and a second key column misleads the row estimate into nested loops.
    join public.session_questions sq on sq.id = r.session_question_id
    left join public.progress_totals t on t.user_id = r.user_id
    where r.evaluated_at > since and r.evaluated_at <= until and r.ai_score is not null
      and r.created_at >= oldest
      -- A question is served before it is answered, in a session that lasts at most a day or so.
      and sq.served_at >= oldest - interval '7 days' and sq.served_at <= until
  ), grouped as (
    -- The regr_* aggregates of one (ability, score) pair share one transition state (n, sums, centred
    -- squares and products), less than half the work of a sum per figure; raw sums are rebuilt from them.
    select a.question_id, count(*)::integer as answers, sum(a.score) as score_sum,
           (count(*) filter (where a.score < 25))::integer as low_scores,
           (count(*) filter (where a.score >= 90))::integer as high_scores,
           regr_count(a.ability, a.score)::integer as paired,
           coalesce(regr_avgx(a.ability, a.score), 0) as score_mean,
           coalesce(regr_avgy(a.ability, a.score), 0) as ability_mean,
           coalesce(regr_sxx(a.ability, a.score), 0) as sxx, coalesce(regr_syy(a.ability, a.score), 0) as syy,
           coalesce(regr_sxy(a.ability, a.score), 0) as sxy
    from answered a group by a.question_id
  ), sums as (
    select g.question_id, g.answers, g.score_sum, g.low_scores, g.high_scores, g.paired,
           g.paired * g.score_mean as paired_score_sum,
           g.sxx + g.paired * g.score_mean ^ 2 as paired_score_squares,
           g.paired * g.ability_mean as ability_sum,
           g.syy + g.paired * g.ability_mean ^ 2 as ability_squares,
           g.sxy + g.paired * g.score_mean * g.ability_mean as score_ability_sum
    from grouped g
  ), saved as (
    insert into private.question_score_stats as c
      (question_id, answers, score_sum, low_scores, high_scores, paired, paired_score_sum, paired_score_squares,
       ability_sum, ability_squares, score_ability_sum)
    select * from sums
    on conflict (question_id) do update
    set answers = c.answers + excluded.answers, score_sum = c.score_sum + excluded.score_sum,
        low_scores = c.low_scores + excluded.low_scores, high_scores = c.high_scores + excluded.high_scores,
        paired = c.paired + excluded.paired, paired_score_sum = c.paired_score_sum + excluded.paired_score_sum,
        paired_score_squares = c.paired_score_squares + excluded.paired_score_squares,
        ability_sum = c.ability_sum + excluded.ability_sum,
        ability_squares = c.ability_squares + excluded.ability_squares,
        score_ability_sum = c.score_ability_sum + excluded.score_ability_sum
    returning 1
  )
  select coalesce(sum(s.answers), 0) into tallied from sums s;

  -- 2. The questions with new evidence, and what it says.
  perform set_config('pg_trgm.similarity_threshold', '0.6', true);
  with touched as (
    select c.question_id as id from private.question_score_stats c where c.updated_at >= now()
    union select r.question_id from public.question_reports r where r.created_at >= recent
    union select r.question_id from public.question_ratings r where r.updated_at >= recent
    union select v.question_id from public.question_versions v where v.created_at >= recent
    union select q.id from public.questions q where q.status = 'provisional'
  ), evidence as (
    select q.id, q.status, q.difficulty, q.usage_count, q.rating_count,
           (10 * 3.5 + q.rating_count * coalesce(q.rating_avg, 3.5)) / (10 + q.rating_count) as bayesian_rating,
           coalesce(c.answers, 0) as answers, c.score_sum / nullif(c.answers, 0) as mean_score,
           c.low_scores::double precision / nullif(c.answers, 0) as low_share,
           c.high_scores::double precision / nullif(c.answers, 0) as high_share,
           coalesce(c.paired, 0) as paired,
           (c.paired * c.score_ability_sum - c.paired_score_sum * c.ability_sum)
             / nullif(sqrt(greatest(c.paired * c.paired_score_squares - c.paired_score_sum ^ 2, 0)
                           * greatest(c.paired * c.ability_squares - c.ability_sum ^ 2, 0)), 0) as correlation,
           r.open_reports, r.offensive_reports,
           greatest(3, ceil(0.02 * q.usage_count))::integer as report_threshold,
           greatest(2, ceil(0.005 * q.usage_count))::integer as offensive_threshold,
           d.id as duplicate_of, d.similarity,
           q.status = 'provisional'
             and exists (select from public.served_questions s
                         where s.user_id = q.provisional_for and s.question_id = q.id)
             and not exists (select from public.question_ratings x where x.question_id = q.id and x.rating < 3)
             as admissible
    from touched t
    join public.questions q on q.id = t.id and q.status in ('provisional', 'active')
    left join private.question_score_stats c on c.question_id = q.id
    cross join lateral (
      select count(*)::integer as open_reports,
             (count(*) filter (where x.reason = 'offensive'))::integer as offensive_reports,
             bool_or(x.reason = 'duplicate') as duplicate_reported
      from public.question_reports x where x.question_id = q.id and x.resolved_at is null
    ) r
    left join lateral (
      select o.id, extensions.similarity(private.normalize_question(o.content),
                                         private.normalize_question(q.content)) as similarity
      from public.questions o
      where (r.duplicate_reported
             or exists (select from public.question_versions v
                        where v.question_id = q.id and v.version = q.version and v.created_at >= recent))
        and private.normalize_question(o.content) operator(extensions.%) private.normalize_question(q.content)
        and o.category = q.category and o.status = 'active' and (o.created_at, o.id) < (q.created_at, q.id)
      order by 2 desc limit 1
    ) d on true
  ), verdicts as (
    select e.*, v.to_status, v.reason
    from evidence e
    cross join lateral (
      select case
        when e.duplicate_of is not null then 'retired'
        when e.offensive_reports >= e.offensive_threshold then 'under_review'
        when e.open_reports >= e.report_threshold then 'under_review'
        when e.answers >= 30 and (e.mean_score < 15 or e.low_share >= 0.8) then 'under_review'
        when e.answers >= 30 and e.high_share >= 0.8 then 'under_review'
        when e.answers >= 30 and ((e.difficulty = 'easy' and e.mean_score < 55)
                                  or (e.difficulty = 'hard' and e.mean_score > 65)) then 'under_review'
        when e.paired >= 50 and e.correlation < 0.1 then 'under_review'
        when e.rating_count >= 10 and e.bayesian_rating < 2.5 then 'retired'
        when e.admissible then 'active'
      end::public.question_status as to_status,
      case
        when e.duplicate_of is not null then 'near-duplicate of an older question'
        when e.offensive_reports >= e.offensive_threshold then 'reported offensive'
        when e.open_reports >= e.report_threshold then 'reported'
        when e.answers >= 30 and (e.mean_score < 15 or e.low_share >= 0.8) then 'nobody can answer it'
        when e.answers >= 30 and e.high_share >= 0.8 then 'everybody aces it'
        when e.answers >= 30 and e.difficulty = 'easy' and e.mean_score < 55 then 'harder than its difficulty says'
        when e.answers >= 30 and e.difficulty = 'hard' and e.mean_score > 65 then 'easier than its difficulty says'
        when e.paired >= 50 and e.correlation < 0.1 then 'scores do not follow ability'
        when e.rating_count >= 10 and e.bayesian_rating < 2.5 then 'rated poorly'
        when e.admissible then 'admitted: served to its user, no rating below 3'
      end as reason
    ) v
  ), moved as (
    insert into public.question_transitions (question_id, to_status, reason, figures, actor, moderator_id)
    select v.id, v.to_status, v.reason,
           jsonb_strip_nulls(jsonb_build_object(
             'usage_count', v.usage_count, 'open_reports', v.open_reports,
             'report_threshold', v.report_threshold, 'offensive_reports', v.offensive_reports,
             'offensive_threshold', v.offensive_threshold, 'answers', v.answers,
             'mean_score', round(v.mean_score::numeric, 2), 'low_share', round(v.low_share::numeric, 3),
             'high_share', round(v.high_share::numeric, 3), 'paired_answers', v.paired,
             'correlation', round(v.correlation::numeric, 3), 'rating_count', v.rating_count,
             'bayesian_rating', round(v.bayesian_rating::numeric, 2), 'duplicate_of', v.duplicate_of,
             'similarity', round(v.similarity::numeric, 3))),
           'curation', null
    from verdicts v
    where v.to_status is not null and v.to_status <> v.status
    order by v.id
    returning to_status
  )
  select (select count(*) from evidence),
         jsonb_build_object(
           'questions_promoted', count(*) filter (where m.to_status = 'active'),
           'questions_sent_to_review', count(*) filter (where m.to_status = 'under_review'),
           'questions_retired', count(*) filter (where m.to_status = 'retired'))
  into examined, moves
  from moved m;

  insert into private.rollup_watermarks (name, processed_until) values ('question_curation', until)
  on conflict (name) do update set processed_until = excluded.processed_until;
  return moves || jsonb_build_object('answers_tallied', tallied, 'questions_examined', examined,
                                     'since', since, 'until', until);
end
$$;
grant execute on function service.curate_questions(timestamptz) to service_role;

-- 8. Operators (`prep questions`): the same decisions as moderators, as the service. ----------------------------

-- The review queue, oldest flag first.
create function service.question_queue(max_rows integer default 100) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(q) order by q.flagged_at nulls first, q.id), '[]')
  from (select * from public.question_review_queue order by flagged_at nulls first, id
        limit least(greatest(coalesce(max_rows, 100), 1), 1000)) q
$$;
grant execute on function service.question_queue(integer) to service_role;

-- One question: its current face, its versions, its transitions and its reports by reason.
create function service.question_detail(question_id uuid) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  found jsonb;
begin
  select to_jsonb(q) - 'generation_metadata' into found from public.questions q where q.id = question_detail.question_id;
  if found is null then
    raise sqlstate 'PT404' using message = format('no question %s', question_detail.question_id);
  end if;
  return found || jsonb_build_object(
    'versions', (select coalesce(jsonb_agg(to_jsonb(v) - 'question_id' order by v.version), '[]')
                 from public.question_versions v where v.question_id = question_detail.question_id),
    'transitions', (select coalesce(jsonb_agg(to_jsonb(t) - 'question_id' order by t.id), '[]')
                    from public.question_transitions t where t.question_id = question_detail.question_id),
    'open_reports', (select coalesce(jsonb_object_agg(r.reason, r.n), '{}')
                     from (select x.reason, count(*) as n from public.question_reports x
                           where x.question_id = question_detail.question_id and x.resolved_at is null
                           group by x.reason) r),
    'score_stats', (select to_jsonb(c) - 'question_id' from private.question_score_stats c
                    where c.question_id = question_detail.question_id));
end
$$;
grant execute on function service.question_detail(uuid) to service_role;

-- An operator's decision: approve (active), review (under_review) or retire (retired), with a reason, optionally a
-- new text. Returns the transition recorded.
create function service.moderate_question(question_id uuid, to_status public.question_status, reason text,
                                          content text default null)
returns jsonb
language sql
set search_path = ''
as $$
  insert into public.question_transitions (question_id, to_status, reason, content, actor, moderator_id)
  values (moderate_question.question_id, moderate_question.to_status, moderate_question.reason,
          moderate_question.content, 'operator', null)
  returning to_jsonb(question_transitions.*)
$$;
grant execute on function service.moderate_question(uuid, public.question_status, text, text) to service_role;

-- The bank as a curated file: every question (or those of one status) with its answer key, in the shape
-- service.import_questions reads.
create function service.export_questions(only_status public.question_status default null) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
           'id', q.id, 'content', q.content, 'category', q.category, 'difficulty', q.difficulty,
           'experience_level', q.experience_level, 'target_role', q.target_role, 'tags', to_jsonb(q.tags),
           'source', q.source, 'status', q.status, 'version', q.version,
           'evaluation_criteria', k.evaluation_criteria, 'key_points', to_jsonb(k.key_points)))
         order by q.created_at, q.id), '[]')
  from public.questions q
  left join public.question_answer_keys k on k.question_id = q.id
  where only_status is null or q.status = only_status
$$;
grant execute on function service.export_questions(public.question_status) to service_role;

-- Import a curated file: a JSON array of questions ({"content", "category", "difficulty", "experience_level",
-- "target_role"?, "tags"?, "status"?, "evaluation_criteria"?, "key_points"?, "id"?}). A question with a known id is
-- updated (a new face is a new version; a new status a transition by the operator); one without is added unless
-- its text is already in the bank. All or nothing: the first bad entry refuses the file, naming it.
create function service.import_questions(questions jsonb, reason text default 'imported from a curated file')
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  entry jsonb;
  entry_number integer := 0;
  known public.questions;
  wanted public.question_status;
  new_id uuid;
  inserted integer := 0;
  updated integer := 0;
  unchanged integer := 0;
  duplicates integer := 0;
begin
  perform private.limit_size('the file', questions, 50000000);
  if jsonb_typeof(questions) is distinct from 'array' or jsonb_array_length(questions) > 20000 then
    raise sqlstate 'PT422' using message = 'the file must be a JSON array of at most 20000 questions';
  end if;
  for entry in select value from jsonb_array_elements(questions) loop
    entry_number := entry_number + 1;
    begin
      if jsonb_typeof(entry) is distinct from 'object'
         or exists (select from jsonb_object_keys(entry) k
                    where k not in ('id', 'content', 'category', 'difficulty', 'experience_level', 'target_role',
                                    'tags', 'source', 'status', 'version', 'evaluation_criteria', 'key_points'))
      then
        raise sqlstate 'PT422' using message = 'unknown keys (or not an object)';
      end if;
      wanted := coalesce(entry ->> 'status', 'active')::public.question_status;
      if wanted = 'provisional' then
        raise sqlstate 'PT422' using message = 'a curated question is not provisional';
      end if;
      known := null;
      if entry ? 'id' then
        select * into known from public.questions q where q.id = (entry ->> 'id')::uuid for update;
      end if;
      if known.id is not null then
        update public.questions q
        set content = btrim(entry ->> 'content'),
            category = (entry ->> 'category')::public.question_category,
            difficulty = (entry ->> 'difficulty')::public.difficulty,
            experience_level = (entry ->> 'experience_level')::public.experience_level,
            target_role = nullif(btrim(entry ->> 'target_role'), ''),
            tags = coalesce((select array_agg(lower(t)) from jsonb_array_elements_text(entry -> 'tags') t), '{}')
        where q.id = known.id
          and (q.content, q.category::text, q.difficulty::text, q.experience_level::text, q.target_role, q.tags)
              is distinct from (btrim(entry ->> 'content'), entry ->> 'category', entry ->> 'difficulty',
                                entry ->> 'experience_level', nullif(btrim(entry ->> 'target_role'), ''),
                                coalesce((select array_agg(lower(t)) from jsonb_array_elements_text(entry -> 'tags') t),
                                         '{}'));
        if found or wanted <> known.status then
          updated := updated + 1;
        else
          unchanged := unchanged + 1;
        end if;
        if wanted <> known.status then
          perform service.moderate_question(known.id, wanted, reason);
        end if;
        new_id := known.id;
      else
        insert into public.questions (id, content, category, difficulty, experience_level, target_role, tags, source,
                                      status)
        values (coalesce((entry ->> 'id')::uuid, gen_random_uuid()), btrim(entry ->> 'content'),
                (entry ->> 'category')::public.question_category, (entry ->> 'difficulty')::public.difficulty,
                (entry ->> 'experience_level')::public.experience_level, nullif(btrim(entry ->> 'target_role'), ''),
                coalesce((select array_agg(lower(t)) from jsonb_array_elements_text(entry -> 'tags') t), '{}'),
                'curated', wanted)
        on conflict (md5(private.normalize_question(content))) do nothing
        returning id into new_id;
        if new_id is null then
          duplicates := duplicates + 1;
          continue;
        end if;
        inserted := inserted + 1;
      end if;
      if entry ? 'evaluation_criteria' or entry ? 'key_points' then
        insert into public.question_answer_keys (question_id, evaluation_criteria, key_points)
        values (new_id, coalesce(entry -> 'evaluation_criteria', '[]'),
                coalesce((select array_agg(k) from jsonb_array_elements_text(entry -> 'key_points') k), '{}'))
        on conflict (question_id) do update
        set evaluation_criteria = excluded.evaluation_criteria, key_points = excluded.key_points
        where (question_answer_keys.evaluation_criteria, question_answer_keys.key_points)
              is distinct from (excluded.evaluation_criteria, excluded.key_points);
      end if;
    exception when others then
      raise sqlstate 'PT422' using message = format('question %s of the file: %s', entry_number, sqlerrm),
        hint = 'Nothing was imported; fix the entry and import the file again.';
    end;
  end loop;
  return jsonb_build_object('inserted', inserted, 'updated', updated, 'unchanged', unchanged,
                            'duplicates', duplicates);
end
$$;
grant execute on function service.import_questions(jsonb, text) to service_role;

-- 9. The account export (22.'s), with the user's reports and their decisions as a moderator. -------------------

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
    'abilities', (select coalesce(jsonb_agg(to_jsonb(a) order by a.category), '[]') from public.category_abilities a
                  where a.user_id = uid),
    'ai_usage', (select coalesce(jsonb_agg(to_jsonb(a) order by a.created_at), '[]') from public.ai_usage a
                 where a.user_id = uid),
    'provisional_questions', (select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'content', q.content,
                                                                           'category', q.category,
                                                                           'created_at', q.created_at)), '[]')
                              from public.questions q where q.provisional_for = uid),
    'question_reports', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]')
                         from public.question_reports r where r.user_id = uid),
    'moderation', (select coalesce(jsonb_agg(to_jsonb(t) order by t.id), '[]') from public.question_transitions t
                   where t.moderator_id = uid),
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers');
end
$$;
