-- Undo 13. Abuse limits (provisional questions join the shared bank)
drop policy "answers: replace own audio" on storage.objects;
drop policy "answers: upload own audio" on storage.objects;
create policy "answers: upload own audio" on storage.objects
  for insert to authenticated
  with check (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "answers: replace own audio" on storage.objects
  for update to authenticated
  using (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text)
  with check (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
update storage.buckets set file_size_limit = 26214400 where id = 'answers';
drop function public.stored_recordings();

create function service.ai_spend_today() returns numeric
language sql stable
set search_path = ''
as $$
  select coalesce(sum(cost_usd), 0) from public.ai_usage
  where created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'
$$;
revoke all on function service.ai_spend_today() from public, anon, authenticated;
grant execute on function service.ai_spend_today() to service_role;
drop function service.reserve_ai_spend(jsonb);
drop function service.ai_budget(uuid);
create or replace function service.record_ai_usage(usage jsonb) returns void
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

create or replace function service.fail_evaluation(response_id uuid, reason text) returns void
language plpgsql
set search_path = ''
as $$
declare
  failed public.responses;
begin
  update public.responses r set evaluation_status = 'failed', evaluation_error = left(reason, 500)
  where r.id = fail_evaluation.response_id and r.evaluation_status in ('queued', 'processing')
  returning * into failed;
  if found then
    perform private.refund_quota(failed.user_id, 'evaluations');
    perform private.refresh_session_score(failed.session_id);
  end if;
end
$$;

create or replace function service.request_evaluation(user_id uuid, response_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  response public.responses;
begin
  select * into response from public.responses r where r.id = request_evaluation.response_id for update;
  if not found then
    raise sqlstate 'PT404' using message = format('no response %s', response_id);
  elsif response.user_id <> request_evaluation.user_id then
    raise sqlstate 'PT403' using message = format('response %s is not yours', response_id);
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
  perform private.consume_quota(response.user_id, 'evaluations');
  update public.responses r set evaluation_status = 'queued', evaluation_error = null, evaluation_requested_at = now()
  where r.id = response.id;
  return jsonb_build_object('response_id', response.id, 'evaluation_status', 'queued', 'already_requested', false);
end
$$;

create or replace function private.guard_response() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  session_status public.session_status;
begin
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
  if new.audio_path is not null and (split_part(new.audio_path, '/', 1) <> new.user_id::text
                                     or new.audio_path ~ '(^|/)\.\.?(/|$)') then
    raise sqlstate 'PT422' using
      message = 'audio_path must be an object in your own folder of the answers bucket: <your user id>/<file>';
  end if;
  return new;
end
$$;

update public.plans set usage_limits = usage_limits - 'ai_spend_cents' - 'evaluations_per_answer';
alter table archive.responses drop column evaluation_attempts;
alter table public.responses drop column evaluation_attempts;
drop index public.idx_ai_usage_user_created_at;
create index idx_ai_usage_user on public.ai_usage (user_id);
alter table public.ai_usage drop column settled;
drop index public.idx_ai_usage_response;
alter table public.ai_usage drop column response_id;

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
  return jsonb_build_object('questions_updated', touched, 'since', since);
end
$$;
drop function private.promote_provisional_questions();

drop function service.add_generated_questions(jsonb, jsonb, uuid);
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
revoke all on function service.add_generated_questions(jsonb, jsonb) from public, anon, authenticated;
grant execute on function service.add_generated_questions(jsonb, jsonb) to service_role;

create or replace function service.request_questions(user_id uuid, request jsonb) returns jsonb
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

drop policy "questions: signed-in users read the shared bank and their provisional questions" on public.questions;
create policy "questions: signed-in users read active questions" on public.questions
  for select to authenticated using (is_active);
revoke select on public.questions from authenticated;
grant select on public.questions to authenticated;
drop index public.idx_questions_provisional_for;
alter table public.questions drop column provisional_for;
drop policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys;
revoke select on public.question_answer_keys from authenticated;

drop policy "question_ratings: change own ratings of questions served to me" on public.question_ratings;
create policy "question_ratings: change own" on public.question_ratings
  for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
revoke insert, update on public.question_ratings from authenticated;
grant insert, update on public.question_ratings to authenticated;

drop trigger check_display_fields on public.users;
drop function private.check_display_fields();

revoke insert, update on public.user_profiles from authenticated;
grant insert, update on public.user_profiles to authenticated;
drop trigger check_profile on public.user_profiles;
drop function private.check_profile();
alter table public.user_profiles add constraint user_profiles_timezone_check
  check ((now() at time zone timezone) is not null);
drop table private.time_zones;

drop trigger check_config on public.practice_sessions;
drop function private.check_session_config();
drop function private.checked_request(jsonb);
drop function private.limit_size(text, anyelement, integer);
drop function private.canonical_term(public.vocabulary_kind, text);
drop table public.vocabulary;
drop type public.vocabulary_kind;
