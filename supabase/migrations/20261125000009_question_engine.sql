-- 9. Question engine
--
-- Serving questions from the bank (the AI cache) before paying for generation:
--   a session starts -> private.on_session_started: count it against the plan, serve its first questions;
--   POST /questions -> service.request_questions: check and count the plan's limit, pick questions the user
--     has never been served (private.question_candidates), record them append-only in session_questions;
--   the handler generates only the deficit, under a lease so concurrent requests for one empty bucket make
--     one AI call (service.acquire_generation_lease), stores the new questions without duplicates
--     (service.add_generated_questions) and serves them (service.serve_more_questions);
--   the schedule rolls the append-only records up into questions' statistics (service.rollup_question_stats).
-- Serving never updates a question row, so popular questions are no lock hot spots.

-- Generation leases: one holder per bucket until it releases or the lease expires.
create table private.generation_leases (
  bucket_key text primary key,
  holder uuid not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on private.generation_leases
  for each row execute function private.set_updated_at();
alter table private.generation_leases enable row level security;
grant select, insert, update, delete on private.generation_leases to service_role;

-- Where the last rollup of question statistics got to.
create table private.rollup_watermarks (
  name text primary key,
  processed_until timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on private.rollup_watermarks
  for each row execute function private.set_updated_at();
alter table private.rollup_watermarks enable row level security;
grant select, insert, update, delete on private.rollup_watermarks to service_role;

-- Check and count one use of a plan's per-day limit (UTC days), atomically: the counter row is the lock.
create function private.consume_quota(user_id uuid, metric text, amount integer default 1) returns integer
language plpgsql
set search_path = ''
as $$
declare
  plan_code text;
  day_limit integer;
  used_now integer;
begin
  select e.plan_code, (e.usage_limits ->> consume_quota.metric)::integer into plan_code, day_limit
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

-- Questions this user has never been served, best first, for a request
-- {"category", "difficulty", "experience_level", "target_role"?, "tags"?}. When the exact bucket runs short
-- the request widens: first without the tags, then to the neighbouring experience levels. Within a step the
-- pool is the best 4x of what is needed, drawn with jitter so two users asking alike get different sets.
create function private.question_candidates(user_id uuid, request jsonb, wanted integer)
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

-- The questions of a session after `after_position`, as handlers and clients receive them. PL/pgSQL so its
-- plan is cached for the session: it runs on every serve, and planning it each time cost a fifth of a serve.
create function private.session_question_list(session_id uuid, after_position integer) returns jsonb
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

-- Serve up to `wanted` new questions into a session: append-only, at the session's next positions.
-- The serving transaction commits without waiting for its WAL flush (synchronous_commit is transaction-local
-- here): under load the flush wait, not the insert, is what serving costs. A server crash can lose at most the
-- last ~0.6 s of serves, whole and consistently (the session, its questions, the quota count); anything durable
-- that refers to a serve afterwards (an answer, a rating) flushes the WAL up to and including it first.
create function private.serve_questions(user_id uuid, session_id uuid, request jsonb, wanted integer)
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

-- Which questions each session type asks, as serving steps [{"request": {...}, "count": n}], in order.
-- The user's profile supplies the level and role the config leaves out.
--   quick: a few questions of one category; full: a round across the categories;
--   custom: the user's own filters; mock_interview: an interview's usual arc, easy to hard, timed.
create function private.session_plan(user_id uuid, session_type public.session_type, config jsonb)
returns jsonb
language sql stable
set search_path = ''
as $$
  with base as (
    select
      coalesce(config ->> 'experience_level', p.experience_level::text, 'mid') as level,
      coalesce(config ->> 'target_role', p.target_role) as role,
      coalesce(config -> 'tags', '[]') as tags,
      coalesce(config ->> 'difficulty', 'medium') as difficulty
    from (select) one
    left join public.user_profiles p on p.user_id = session_plan.user_id
  ), steps (category, difficulty, count, ordinal) as (
    select coalesce(config ->> 'category', 'behavioral'), b.difficulty,
           least(greatest(coalesce((config ->> 'count')::integer, 3), 1), 5), 1
    from base b where session_type = 'quick'
    union all
    select c.category, b.difficulty, c.count, c.ordinal
    from base b, (values ('behavioral', 2, 1), ('technical', 2, 2), ('situational', 1, 3),
                         ('problem_solving', 1, 4), ('leadership', 1, 5), ('culture_fit', 1, 6)) c (category, count, ordinal)
    where session_type = 'full'
    union all
    select config ->> 'category', b.difficulty, (config ->> 'count')::integer, 1
    from base b where session_type = 'custom'
    union all
    select m.category, m.difficulty, 1, m.ordinal
    from base b, (values ('behavioral', 'easy', 1), ('technical', 'medium', 2), ('situational', 'medium', 3),
                         ('problem_solving', 'hard', 4), ('culture_fit', 'medium', 5)) m (category, difficulty, ordinal)
    where session_type = 'mock_interview'
  )
  select jsonb_agg(jsonb_build_object(
      'count', s.count,
      'request', jsonb_build_object('category', s.category, 'difficulty', s.difficulty,
                                    'experience_level', b.level, 'target_role', b.role,
                                    'tags', case when session_type in ('quick', 'custom') then b.tags else '[]' end)
    ) order by s.ordinal)
  from steps s, base b
$$;

-- Starting a session, however it is inserted (the public.start_session RPC, a direct insert through
-- PostgREST, or POST /questions), counts against the plan and serves its first questions. A trigger, so the
-- privileged part runs as its owner without any function an API role could call.
create function private.on_session_started() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  step jsonb;
  asked integer := 0;
  per_question_seconds integer := coalesce((new.config ->> 'question_time_limit_seconds')::integer, 180);
begin
  if new.session_type = 'custom' and ((new.config ->> 'category') is null or (new.config ->> 'difficulty') is null
                                      or coalesce((new.config ->> 'count')::integer, 0) not between 1 and 20) then
    raise sqlstate 'PT422' using
      message = 'a custom session needs config.category, config.difficulty and config.count (1-20)';
  end if;
  if new.session_type = 'mock_interview' and not coalesce(
      (select (e.features ->> 'mock_interviews')::boolean from public.entitlements(new.user_id) e), false) then
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
revoke all on function private.on_session_started() from public, anon, authenticated;

create trigger on_session_started after insert on public.practice_sessions
  for each row execute function private.on_session_started();

-- POST /questions: count the request against the plan, open (or continue) the session, serve from the bank.
-- Returns {"session_id", "questions": [...], "deficit", "ai_generation_included"}.
create function service.request_questions(user_id uuid, request jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  wanted integer := (request ->> 'count')::integer;
  session uuid := (request ->> 'session_id')::uuid;
  session_owner uuid;
  session_status public.session_status;
  served jsonb;
begin
  if wanted is null or wanted not between 1 and 20 then
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

  return jsonb_build_object(
    'session_id', session,
    'questions', served,
    'deficit', wanted - jsonb_array_length(served),
    'ai_generation_included',
      coalesce((select (e.features ->> 'ai_generated_questions')::boolean
                from public.entitlements(request_questions.user_id) e), false)
  );
end
$$;

-- After generation: serve the questions generated for this request first (marked 'generated', which the
-- cache-hit analytics count), then whatever else the bank now has. No further quota: it is the same request.
create function service.serve_more_questions(
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

-- A lease on generating for one bucket; returns the holder token, or null while someone else holds it.
create function service.acquire_generation_lease(bucket_key text, ttl_seconds integer) returns uuid
language sql
set search_path = ''
as $$
  insert into private.generation_leases as l (bucket_key, holder, expires_at)
  values (acquire_generation_lease.bucket_key, gen_random_uuid(), now() + make_interval(secs => ttl_seconds))
  on conflict (bucket_key) do update set holder = excluded.holder, expires_at = excluded.expires_at
    where l.expires_at < now()
  returning l.holder
$$;

create function service.release_generation_lease(bucket_key text, holder uuid) returns boolean
language sql
set search_path = ''
as $$
  with released as (
    delete from private.generation_leases l
    where l.bucket_key = release_generation_lease.bucket_key and l.holder = release_generation_lease.holder
    returning 1
  )
  select exists (select from released)
$$;

create function service.generation_lease_held(bucket_key text) returns boolean
language sql stable
set search_path = ''
as $$
  select exists (
    select from private.generation_leases l
    where l.bucket_key = generation_lease_held.bucket_key and l.expires_at > now()
  )
$$;

-- Store generated questions unless the bank already has them: same normalized text, or a paraphrase
-- (trigram similarity of the normalized text at or above 0.6 within the category).
-- `questions`: [{"content", "category", "difficulty", "experience_level", "target_role"?, "tags",
--                "evaluation_criteria", "key_points"}]; `generation`: model, prompt version, request.
create function service.add_generated_questions(questions jsonb, generation jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  candidate jsonb;
  normalized text;
  new_id uuid;
  inserted uuid[] := '{}';
  duplicates integer := 0;
  paraphrases integer := 0;
begin
  perform set_config('pg_trgm.similarity_threshold', '0.6', true);
  for candidate in select * from jsonb_array_elements(questions) loop
    normalized := private.normalize_question(candidate ->> 'content');
    if exists (select from public.questions q where md5(private.normalize_question(q.content)) = md5(normalized)) then
      duplicates := duplicates + 1;
      continue;
    end if;
    if exists (
      select from public.questions q
      where private.normalize_question(q.content) operator(extensions.%) normalized
        and q.category = (candidate ->> 'category')::public.question_category
    ) then
      paraphrases := paraphrases + 1;
      continue;
    end if;
    insert into public.questions (content, category, difficulty, experience_level, target_role, tags, source,
                                  generation_metadata)
    values (
      btrim(candidate ->> 'content'),
      (candidate ->> 'category')::public.question_category,
      (candidate ->> 'difficulty')::public.difficulty,
      (candidate ->> 'experience_level')::public.experience_level,
      nullif(btrim(candidate ->> 'target_role'), ''),
      coalesce((select array_agg(lower(t)) from jsonb_array_elements_text(candidate -> 'tags') t), '{}'),
      'ai',
      generation
    )
    on conflict (md5(private.normalize_question(content))) do nothing
    returning id into new_id;
    if new_id is null then
      duplicates := duplicates + 1;
    else
      insert into public.question_answer_keys (question_id, evaluation_criteria, key_points)
      values (new_id, coalesce(candidate -> 'evaluation_criteria', '[]'),
              coalesce((select array_agg(k) from jsonb_array_elements_text(candidate -> 'key_points') k), '{}'));
      inserted := inserted || new_id;
    end if;
  end loop;
  return jsonb_build_object('inserted', to_jsonb(inserted), 'duplicates', duplicates, 'paraphrases', paraphrases);
end
$$;

-- Every AI call, for cost and latency reporting and the daily spend cap.
create function service.record_ai_usage(usage jsonb) returns void
language sql
set search_path = ''
as $$
  insert into public.ai_usage (user_id, purpose, model, prompt_tokens, completion_tokens, audio_seconds, cost_usd,
                               latency_ms, succeeded, error)
  values (
    (usage ->> 'user_id')::uuid, usage ->> 'purpose', usage ->> 'model',
    coalesce((usage ->> 'prompt_tokens')::integer, 0), coalesce((usage ->> 'completion_tokens')::integer, 0),
    (usage ->> 'audio_seconds')::numeric, coalesce((usage ->> 'cost_usd')::numeric, 0),
    (usage ->> 'latency_ms')::integer, (usage ->> 'succeeded')::boolean, left(usage ->> 'error', 500)
  )
$$;

create function service.ai_spend_today() returns numeric
language sql stable
set search_path = ''
as $$
  select coalesce(sum(cost_usd), 0) from public.ai_usage
  where created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'
$$;

-- Roll the append-only records up into questions' statistics and rank. Idempotent: every question touched
-- since the last run (with a margin for transactions that committed late) is recounted from scratch.
create function service.rollup_question_stats() returns jsonb
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
  return jsonb_build_object('questions_updated', touched, 'since', since);
end
$$;

revoke all on function private.consume_quota(uuid, text, integer),
  private.question_candidates(uuid, jsonb, integer), private.serve_questions(uuid, uuid, jsonb, integer),
  private.session_question_list(uuid, integer), private.session_plan(uuid, public.session_type, jsonb)
  from public, anon, authenticated;
grant execute on function private.consume_quota(uuid, text, integer),
  private.question_candidates(uuid, jsonb, integer), private.serve_questions(uuid, uuid, jsonb, integer),
  private.session_question_list(uuid, integer), private.session_plan(uuid, public.session_type, jsonb)
  to service_role;

revoke all on function service.request_questions(uuid, jsonb), service.serve_more_questions(uuid, uuid, jsonb, integer, jsonb),
  service.acquire_generation_lease(text, integer), service.release_generation_lease(text, uuid),
  service.generation_lease_held(text), service.add_generated_questions(jsonb, jsonb),
  service.record_ai_usage(jsonb), service.ai_spend_today(), service.rollup_question_stats()
  from public, anon, authenticated;
grant execute on function service.request_questions(uuid, jsonb), service.serve_more_questions(uuid, uuid, jsonb, integer, jsonb),
  service.acquire_generation_lease(text, integer), service.release_generation_lease(text, uuid),
  service.generation_lease_held(text), service.add_generated_questions(jsonb, jsonb),
  service.record_ai_usage(jsonb), service.ai_spend_today(), service.rollup_question_stats()
  to service_role;
