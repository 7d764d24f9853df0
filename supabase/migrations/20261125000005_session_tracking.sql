-- 5. Session tracking
--
-- A practice session serves an ordered list of questions (session_questions, append-only: it is also the
-- record of what each user has seen, so nobody is served the same question twice). The user answers each
-- served question once (responses); the service scores the answer. Ratings are of served questions.

create type public.session_type as enum ('quick', 'full', 'custom', 'mock_interview');
create type public.session_status as enum ('in_progress', 'completed', 'abandoned');
create type public.evaluation_status as enum ('not_requested', 'queued', 'processing', 'completed', 'failed');

create table public.practice_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  session_type public.session_type not null,
  status public.session_status not null default 'in_progress',
  -- The request the session was built from: filters, question count, time limits.
  config jsonb not null default '{}' check (jsonb_typeof(config) = 'object'),
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  time_limit_seconds integer check (time_limit_seconds > 0),
  overall_score numeric(5, 2) check (overall_score between 0 and 100),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((status = 'in_progress') = (ended_at is null))
);

create index idx_practice_sessions_started_at on public.practice_sessions (started_at desc);
create index idx_practice_sessions_user_started on public.practice_sessions (user_id, started_at desc);

-- Once completed or abandoned, a session is final.
create function private.guard_session_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if old.status <> 'in_progress' then
    raise sqlstate 'PT409' using
      message = format('session %s is already %s', old.id, old.status),
      hint = 'Start a new session to keep practising.';
  end if;
  if new.status <> 'in_progress' then
    new.ended_at := now();
  end if;
  return new;
end
$$;

create trigger guard_status before update of status on public.practice_sessions
  for each row execute function private.guard_session_status();

create table public.session_questions (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.practice_sessions (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  question_id uuid not null references public.questions (id),
  position integer not null check (position >= 1),
  -- How far the request was widened to find it (exact, any_tags, neighbour_level): cache-quality analytics.
  widening text,
  served_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (session_id, position),
  unique (id, session_id),
  -- A user is never served the same question twice.
  unique (user_id, question_id)
);
comment on table public.session_questions is 'Append-only record of every question served; usage_count is rolled up from it.';

create index idx_session_questions_question on public.session_questions (question_id, served_at);

create table public.responses (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.practice_sessions (id) on delete cascade,
  session_question_id uuid not null unique,
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  -- The answered question's category, copied from the bank when the answer is given (set_category below):
  -- per-category progress and platform scores read the answers alone, not each answer's served question.
  category public.question_category not null,
  answer_text text check (char_length(answer_text) <= 20000),
  -- Object path in the private `answers` storage bucket, under the user's own folder.
  audio_path text check (char_length(audio_path) <= 1024),
  transcript text,
  time_taken_seconds integer check (time_taken_seconds between 0 and 7200),
  evaluation_status public.evaluation_status not null default 'not_requested',
  -- When the evaluation was last queued: a request queued long ago and never picked up is queued again.
  evaluation_requested_at timestamptz,
  ai_score numeric(5, 2) check (ai_score between 0 and 100),
  feedback text,
  strengths text[] not null default '{}',
  improvements text[] not null default '{}',
  -- {"<criterion>": {"score": 4, "max": 5, "weight": 0.4, "justification": "..."}}
  criterion_scores jsonb not null default '{}' check (jsonb_typeof(criterion_scores) = 'object'),
  evaluation_error text,
  -- Model, rubric version and prompt hash that produced the score.
  evaluator jsonb not null default '{}' check (jsonb_typeof(evaluator) = 'object'),
  evaluated_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (session_question_id, session_id) references public.session_questions (id, session_id)
    on delete cascade,
  check (answer_text is not null or audio_path is not null)
);
comment on column public.responses.ai_score is 'Computed from the criterion scores and weights; written by the service only.';

-- The category comes from the served question, whoever inserts (the definer reads the bank even after a
-- question is retired). A question not served in the answer's session is refused as the foreign key would.
create function private.set_response_category() returns trigger
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
revoke all on function private.set_response_category() from public, anon, authenticated;

create trigger set_category before insert on public.responses
  for each row execute function private.set_response_category();

create index idx_responses_session on public.responses (session_id);
create index idx_responses_user_created on public.responses (user_id, created_at desc);

create table public.question_ratings (
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  question_id uuid not null references public.questions (id) on delete cascade,
  rating smallint not null check (rating between 1 and 5),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (user_id, question_id)
);
create index idx_question_ratings_question on public.question_ratings (question_id);

create trigger set_updated_at before update on public.practice_sessions
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.session_questions
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.responses
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.question_ratings
  for each row execute function private.set_updated_at();

-- Access. Column privileges keep scores service-only: a user writes their answer, never its evaluation.
alter table public.practice_sessions enable row level security;
alter table public.session_questions enable row level security;
alter table public.responses enable row level security;
alter table public.question_ratings enable row level security;

revoke all on public.practice_sessions, public.session_questions, public.responses, public.question_ratings
  from anon, authenticated;
grant select on public.practice_sessions, public.session_questions, public.responses to authenticated;
grant insert (user_id, session_type, config) on public.practice_sessions to authenticated;
grant update (status) on public.practice_sessions to authenticated;
grant insert (session_id, session_question_id, user_id, answer_text, audio_path, time_taken_seconds)
  on public.responses to authenticated;
grant update (answer_text, audio_path, time_taken_seconds) on public.responses to authenticated;
grant select, insert, update, delete on public.question_ratings to authenticated;
grant all on public.practice_sessions, public.session_questions, public.responses, public.question_ratings
  to service_role;

create policy "practice_sessions: read own" on public.practice_sessions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "practice_sessions: start own" on public.practice_sessions
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "practice_sessions: end own" on public.practice_sessions
  for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));

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

create policy "question_ratings: read own" on public.question_ratings
  for select to authenticated using (user_id = (select auth.uid()));
create policy "question_ratings: rate questions served to me" on public.question_ratings
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (
      select from public.session_questions sq
      where sq.question_id = question_ratings.question_id and sq.user_id = (select auth.uid())
    )
  );
create policy "question_ratings: change own" on public.question_ratings
  for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy "question_ratings: delete own" on public.question_ratings
  for delete to authenticated using (user_id = (select auth.uid()));

-- Clients watch their sessions and responses live (feedback arriving); RLS filters what each one receives.
alter publication supabase_realtime add table public.practice_sessions, public.responses;
