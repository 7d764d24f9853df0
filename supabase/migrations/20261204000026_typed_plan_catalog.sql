-- 26. A plan's features and usage limits are typed columns
--
-- 19. declared what plans.features and plans.usage_limits hold as the composite types public.plan_features and
-- public.plan_usage_limits, but kept the columns jsonb (checked against the types), so the generated client kit
-- typed them `Json` and every client cast them by hand. Now the columns are of those types, and so are
-- entitlements()' features and usage_limits (public.entitlement's attributes): the generator names the types
-- (`Database["public"]["CompositeTypes"]["plan_features"]`, Python `PublicPlanFeatures`). PostgREST sends a
-- composite value as a JSON object with one key per attribute, the object the jsonb held, so clients read the
-- same JSON as before. SQL reads a field, `(e.features).voice_answers`, instead of casting `->>` text.
--
-- What the checks say, and why not "null means no limit": every flag is decided (`features is not null`, which
-- for a row means no field is null) and every limit is set and not negative. A limit left null to mean
-- "unlimited" would fail open: `alter type ... add attribute` leaves the new field null in every plan until a
-- later update sets it, and for that while the new limit would not apply to anyone. Readers treat a null
-- field as "not included" / "not allowed" (fail closed), and no plan is unlimited in anything today.
-- The generator renders every composite field as `| null` (PostgreSQL cannot declare a field of a composite
-- not null, see 19.); these checks are what make the plan's fields always set, as docs/client.md says.
--
-- A new feature or limit: `alter type public.plan_features add attribute x boolean`, then in the same migration
-- `update public.plans set features.x = (code <> 'free')`, and for a limit, its `>= 0` in plans_usage_limits_check.
-- Plans have no default features or limits: whoever adds a plan decides each one.

-- The upload policy reads entitlements().features: it goes while the attribute's type changes (recreated below).
drop policy "answers: upload own audio" on storage.objects;

-- A key the JSON left out meant "not included" / "not allowed" (a missing limit: none allowed), and becomes
-- false / 0 (the seeded plans state every key).
alter table public.plans
  drop constraint plans_features_check,
  drop constraint plans_features_shape,
  drop constraint plans_usage_limits_check,
  drop constraint plans_usage_limits_shape,
  alter column features drop default,
  alter column usage_limits drop default,
  alter column features type public.plan_features
    using jsonb_populate_record(row(false, false, false, false)::public.plan_features, features),
  alter column usage_limits type public.plan_usage_limits
    using jsonb_populate_record(row(0, 0, 0, 0, 0)::public.plan_usage_limits, usage_limits),
  add constraint plans_features_check check (features is not null),
  add constraint plans_usage_limits_check check (
    usage_limits is not null
    and (usage_limits).practice_sessions >= 0
    and (usage_limits).question_requests >= 0
    and (usage_limits).evaluations >= 0
    and (usage_limits).ai_spend_cents >= 0
    and (usage_limits).evaluations_per_answer >= 0
  );
comment on column public.plans.features is 'What the plan includes: every flag of public.plan_features set.';
comment on column public.plans.usage_limits is
  'Per-UTC-day limits of the plan: every field of public.plan_usage_limits set, none negative.';
comment on type public.plan_features is
  'plans.features and entitlements().features: each flag true when the plan includes it (never null).';
comment on type public.plan_usage_limits is
  'plans.usage_limits and entitlements().usage_limits: uses per UTC day of each metric, the AI spend ceiling '
  'per UTC day in cents, evaluations of one answer (never null, never negative).';

-- entitlements() returns the plan's columns as they are: its body is unchanged.
alter type public.entitlement
  alter attribute features type public.plan_features,
  alter attribute usage_limits type public.plan_usage_limits;
comment on type public.entitlement is
  'public.entitlements(): plan_code, plan_name, is_paid, features and usage_limits (every field set) are '
  'always set; subscription_status and current_period_end are null on the free plan.';

-- The readers of a flag or a limit, each its latest version with only that read changed. --------------------

-- As in 9., the day's limit read from the typed limits: the metric names the field.
create or replace function private.consume_quota(user_id uuid, metric text, amount integer default 1) returns integer
language plpgsql
set search_path = ''
as $$
declare
  plan_code text;
  day_limit integer;
  used_now integer;
begin
  select e.plan_code,
         case consume_quota.metric
           when 'practice_sessions' then (e.usage_limits).practice_sessions
           when 'question_requests' then (e.usage_limits).question_requests
           when 'evaluations' then (e.usage_limits).evaluations
         end
  into plan_code, day_limit
  from public.entitlements(consume_quota.user_id) e;
  if coalesce(day_limit, 0) < amount then
    raise sqlstate 'PT402' using
      message = format('the %s plan does not include %s', plan_code, replace(metric, '_', ' ')),
      hint = 'Upgrade with POST /billing/checkout.';
  end if;
  insert into public.usage_counters as c (user_id, metric, period_start, used)
  values (consume_quota.user_id, consume_quota.metric, (now() at time zone 'utc')::date, amount)
  on conflict on constraint usage_counters_pkey do update set used = c.used + excluded.used
    where c.used + excluded.used <= day_limit
  returning c.used into used_now;
  if used_now is null then
    raise sqlstate 'PT429' using
      message = format('daily limit reached: %s %s a day on the %s plan', day_limit, replace(metric, '_', ' '),
                       plan_code),
      hint = 'The limit resets at 00:00 UTC; a paid plan raises it.';
  end if;
  return day_limit - used_now;
end
$$;

-- As in 22., reading the mock_interviews flag.
create or replace function private.on_session_started() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  step jsonb;
  asked integer := 0;
  per_question_seconds integer := coalesce((new.config ->> 'question_time_limit_seconds')::integer, 180);
begin
  if new.config ->> 'mode' = 'recommended' then
    if new.session_type = 'mock_interview' then
      raise sqlstate 'PT422' using message = 'a mock interview follows its own arc; it has no recommended mode';
    end if;
    if new.user_id is distinct from auth.uid() then
      raise sqlstate 'PT422' using message = 'a recommended session is started by its user',
        hint = 'Call start_session with the user''s own token.';
    end if;
    perform private.consume_quota(new.user_id, 'practice_sessions');
    perform private.serve_recommended(new.id, coalesce((new.config ->> 'count')::integer, 5),
                                      (new.config ->> 'category')::public.question_category);
    return null;
  end if;
  if new.session_type = 'custom' and ((new.config ->> 'category') is null or (new.config ->> 'difficulty') is null
                                      or coalesce((new.config ->> 'count')::integer, 0) not between 1 and 20) then
    raise sqlstate 'PT422' using
      message = 'a custom session needs config.category, config.difficulty and config.count (1-20)';
  end if;
  if new.session_type = 'mock_interview' and not coalesce(
      (select (e.features).mock_interviews from public.entitlements(new.user_id) e), false) then
    raise sqlstate 'PT402' using message = 'mock interviews come with a paid plan',
      hint = 'Upgrade with POST /billing/checkout.';
  end if;
  perform private.consume_quota(new.user_id, 'practice_sessions');
  for step in select * from jsonb_array_elements(private.session_plan(new.user_id, new.session_type, new.config))
  loop
    perform private.serve_questions(new.user_id, new.id, step -> 'request', (step ->> 'count')::integer);
    asked := asked + (step ->> 'count')::integer;
  end loop;
  if new.session_type = 'mock_interview' then
    update public.practice_sessions set time_limit_seconds = asked * per_question_seconds where id = new.id;
  end if;
  return null;
end
$$;

-- As in 22., reading the ai_generated_questions flag.
create or replace function service.request_questions(user_id uuid, request jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  ahead_after constant integer := 40;
  ahead_batch constant integer := 30;
  wanted integer;
  session uuid;
  session_owner uuid;
  session_status public.session_status;
  served jsonb;
  widened integer;
  ahead jsonb;
begin
  request := private.checked_request(request);
  wanted := (request ->> 'count')::integer;
  session := (request ->> 'session_id')::uuid;
  if wanted is null then
    raise sqlstate 'PT422' using message = 'count must be between 1 and 20';
  end if;
  perform private.consume_quota(request_questions.user_id, 'question_requests');

  if session is null then
    -- Starting the session serves its first questions (private.on_session_started).
    insert into public.practice_sessions (user_id, session_type, config)
    values (request_questions.user_id, 'custom', request - 'session_id')
    returning id into session;
    served := private.session_question_list(session, 0);
  else
    select s.user_id, s.status into session_owner, session_status
    from public.practice_sessions s where s.id = session;
    if session_owner is distinct from request_questions.user_id then
      raise sqlstate 'PT404' using message = format('no session %s of yours', session);
    elsif session_status <> 'in_progress' then
      raise sqlstate 'PT409' using
        message = format('session %s is %s', session, session_status), hint = 'Start a new session.';
    end if;
    served := private.serve_questions(request_questions.user_id, session, request, wanted);
  end if;

  select count(*) into widened from jsonb_array_elements(served) q
  where q ->> 'widening' not in ('exact', 'generated', 'recommended');
  if widened > 0 and request ? 'category' and request ? 'difficulty' and request ? 'experience_level' then
    with keys as (
      select coalesce(t, '') as tag
      from (select jsonb_array_elements_text(coalesce(nullif(request -> 'tags', '[]'), '[null]')) t) k
    ), counted as (
      insert into private.widening_demand as d (category, difficulty, experience_level, tag, widened)
      select (request ->> 'category')::public.question_category, (request ->> 'difficulty')::public.difficulty,
             (request ->> 'experience_level')::public.experience_level, k.tag, widened
      from keys k
      order by k.tag  -- the same lock order in every request
      on conflict (category, difficulty, experience_level, tag) do update
        set widened = case when d.widened + excluded.widened >= ahead_after then 0
                           else d.widened + excluded.widened end,
            generations = d.generations + (d.widened + excluded.widened >= ahead_after)::integer,
            last_generated_at = case when d.widened + excluded.widened >= ahead_after then now()
                                     else d.last_generated_at end
      returning d.tag, d.widened = 0 and d.last_generated_at = now() as due
    )
    select jsonb_build_object('category', request -> 'category', 'difficulty', request -> 'difficulty',
                              'experience_level', request -> 'experience_level',
                              'tags', case when c.tag = '' then '[]'::jsonb else jsonb_build_array(c.tag) end,
                              'count', ahead_batch)
    into ahead
    from counted c where c.due order by c.tag limit 1;
  end if;

  return jsonb_build_object(
    'session_id', session,
    'request', request - 'session_id',
    'questions', served,
    'deficit', wanted - jsonb_array_length(served),
    'generate_ahead', ahead,
    'ai_generation_included',
      coalesce((select (e.features).ai_generated_questions
                from public.entitlements(request_questions.user_id) e), false)
  );
end
$$;

-- As in 13., reading the voice_answers flag.
create or replace function private.guard_response() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  session_status public.session_status;
begin
  if octet_length(new.answer_text) > 80000 or char_length(new.answer_text) > 20000 then
    raise sqlstate 'PT413' using message = 'answer_text is longer than 20,000 characters';
  end if;
  if octet_length(new.audio_path) > 300 or new.audio_path !~ (
       '^' || new.user_id::text || '(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){1,3}$') then
    raise sqlstate 'PT422' using
      message = 'audio_path must be an object in your own folder of the answers bucket: <your user id>/<file>',
      hint = 'Folder and file names: letters, digits, dot, dash and underscore, not starting with a dot.';
  end if;
  if new.audio_path is not null and (tg_op = 'INSERT' or new.audio_path is distinct from old.audio_path)
     and not coalesce((select (e.features).voice_answers from public.entitlements(new.user_id) e), false) then
    raise sqlstate 'PT402' using message = 'voice answers come with a paid plan',
      hint = 'Answer in writing, or upgrade with POST /billing/checkout.';
  end if;
  -- A session the caller cannot see is left to RLS (and the foreign key) to refuse.
  select s.status into session_status from public.practice_sessions s where s.id = new.session_id;
  if session_status <> 'in_progress' then
    raise sqlstate 'PT409' using
      message = format('session %s is %s: answers are closed', new.session_id, session_status),
      hint = 'Start a new session to keep practising.';
  end if;
  if tg_op = 'UPDATE' and old.evaluation_status not in ('not_requested', 'failed') then
    raise sqlstate 'PT409' using
      message = format('response %s is %s: an answer is final once sent for evaluation', old.id,
                       old.evaluation_status);
  end if;
  return new;
end
$$;

-- As in 13., reading evaluations_per_answer and the voice_answers flag.
create or replace function service.request_evaluation(user_id uuid, response_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  response public.responses;
  plan record;
begin
  select * into response from public.responses r
  where r.id = request_evaluation.response_id and r.user_id = request_evaluation.user_id for update;
  if not found then
    raise sqlstate 'PT404' using message = format('no response %s of yours', response_id);
  elsif response.evaluation_status = 'completed' then
    raise sqlstate 'PT409' using message = format('response %s is already evaluated', response_id);
  elsif response.evaluation_status = 'queued' and response.evaluation_requested_at < now() - interval '5 minutes' then
    -- Counted already, but its message never arrived (the sender died after this commit): send it again.
    update public.responses r set evaluation_requested_at = now() where r.id = response.id;
    return jsonb_build_object('response_id', response.id, 'evaluation_status', 'queued',
                              'already_requested', false);
  elsif response.evaluation_status in ('queued', 'processing') then
    return jsonb_build_object('response_id', response.id, 'evaluation_status', response.evaluation_status,
                              'already_requested', true);
  end if;
  select e.plan_code, e.features, coalesce((e.usage_limits).evaluations_per_answer, 1) as attempts
  into plan from public.entitlements(response.user_id) e;
  if response.evaluation_attempts >= plan.attempts then
    raise sqlstate 'PT429' using
      message = format('response %s was sent for evaluation %s times, the most the %s plan allows', response_id,
                       response.evaluation_attempts, plan.plan_code),
      hint = 'Answer the question again in a new session.';
  end if;
  if response.audio_path is not null and response.transcript is null
     and not coalesce((plan.features).voice_answers, false) then
    raise sqlstate 'PT402' using message = 'voice answers come with a paid plan',
      hint = 'Answer in writing, or upgrade with POST /billing/checkout.';
  end if;
  perform private.consume_quota(response.user_id, 'evaluations');
  update public.responses r set evaluation_status = 'queued', evaluation_error = null, evaluation_requested_at = now(),
                                evaluation_attempts = r.evaluation_attempts + 1
  where r.id = response.id;
  return jsonb_build_object('response_id', response.id, 'evaluation_status', 'queued', 'already_requested', false);
end
$$;

-- As in 13., reading the ai_spend_cents ceiling.
create or replace function service.ai_budget(user_id uuid default null) returns jsonb
language sql stable
set search_path = ''
as $$
  with today as (select date_trunc('day', now() at time zone 'utc') at time zone 'utc' as start)
  select jsonb_build_object(
    'platform_spent_usd', (select coalesce(sum(u.cost_usd), 0) from public.ai_usage u, today
                           where u.created_at >= today.start),
    'user_spent_usd', (select coalesce(sum(u.cost_usd), 0) from public.ai_usage u, today
                       where u.user_id = ai_budget.user_id and u.created_at >= today.start),
    'user_ceiling_usd', (select coalesce((e.usage_limits).ai_spend_cents::numeric, 0) / 100
                         from public.entitlements(ai_budget.user_id) e)
  )
$$;

-- As in 24., reading the peer_sessions flag.
create or replace function private.check_peer_request() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  no_shows integer;
begin
  if octet_length(new.target_role) > 120 then
    raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
  end if;
  if octet_length(new.timezone) > 64 or not exists (select from private.time_zones z where z.name = new.timezone) then
    raise sqlstate 'PT422' using
      message = format('timezone %L is not an IANA time zone name', left(new.timezone, 64)),
      hint = 'Use a name such as Europe/Paris or America/New_York (pg_timezone_names).';
  end if;
  if not coalesce((select (e.features).peer_sessions from public.entitlements(new.user_id) e), false)
  then
    raise sqlstate 'PT402' using message = 'peer sessions come with a paid plan',
      hint = 'Upgrade to a weekly or monthly plan to practise with peers.';
  end if;
  if (select count(*) from public.peer_requests r
      where r.user_id = new.user_id and r.created_at > now() - interval '1 day') >= 10 then
    raise sqlstate 'PT429' using message = 'at most 10 peer session requests a day',
      hint = 'Keep your waiting request: the matcher pairs it as soon as a peer fits.';
  end if;
  new.target_role := private.canonical_term('role', new.target_role);
  new.available_from := greatest(new.available_from, now());
  if new.available_until > now() + interval '14 days' then
    raise sqlstate 'PT422' using message = 'available_until is more than 14 days ahead';
  end if;
  if new.available_until < new.available_from + interval '1 hour' then
    raise sqlstate 'PT422' using message = 'the time window must hold a one-hour session (from now at the earliest)';
  end if;
  select count(*) into no_shows from public.peer_seats s
  where s.user_id = new.user_id and s.no_show and s.created_at > now() - interval '90 days';
  new.priority_at := now() + make_interval(hours => no_shows);
  new.status := 'waiting';
  new.room_id := null;
  new.created_at := now();
  return new;
end
$$;

create policy "answers: upload own audio" on storage.objects
  for insert to authenticated
  with check (
    bucket_id = 'answers'
    and owner_id = (select auth.uid())::text
    and name ~ ('^' || (select auth.uid())::text || '(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){1,3}$')
    and coalesce(pg_column_size(user_metadata), 0) <= 1024
    and coalesce((select (e.features).voice_answers from public.entitlements() e), false)
    and (select public.stored_recordings()) < 200
  );
