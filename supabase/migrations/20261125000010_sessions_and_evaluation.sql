-- 10. Practice sessions and evaluation
--
-- The user's loop, through PostgREST with RLS:
--   rpc start_session -> a practice_sessions row; its trigger counts it and serves the questions (9.);
--   insert into responses (answer text, audio path, time taken; never a score);
--   POST /responses/{id}/evaluate -> service.request_evaluation (counts one evaluation, marks it queued)
--     -> SQS -> worker: service.begin_evaluation -> transcribe, grade -> service.complete_evaluation
--        (or service.fail_evaluation, which refunds the count);
--   rpc end_session (completed or abandoned). The session's overall score follows its last evaluation.
-- Audio lives in the private storage bucket `answers`, under the user's own folder.

-- Session lifecycle, callable by the signed-in user (security invoker: RLS decides which sessions exist).
create function public.start_session(session_type public.session_type, config jsonb default '{}')
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  session public.practice_sessions;
begin
  insert into public.practice_sessions (user_id, session_type, config)
  values ((select auth.uid()), start_session.session_type, coalesce(config, '{}'))
  returning * into session;
  select * into session from public.practice_sessions s where s.id = session.id;
  return jsonb_build_object(
    'session_id', session.id,
    'session_type', session.session_type,
    'time_limit_seconds', session.time_limit_seconds,
    'questions', (
      select coalesce(jsonb_agg(jsonb_build_object(
          'session_question_id', sq.id, 'position', sq.position, 'question_id', q.id, 'content', q.content,
          'category', q.category, 'difficulty', q.difficulty, 'experience_level', q.experience_level
        ) order by sq.position), '[]')
      from public.session_questions sq join public.questions q on q.id = sq.question_id
      where sq.session_id = session.id
    )
  );
end
$$;

-- End a session: `completed` (its score follows its evaluations) or `abandoned`. A session ends once.
create function public.end_session(session_id uuid, outcome public.session_status) returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if outcome = 'in_progress' then
    raise sqlstate 'PT422' using message = 'a session ends completed or abandoned';
  end if;
  update public.practice_sessions s set status = outcome where s.id = end_session.session_id;
  if not found then
    raise sqlstate 'PT404' using message = format('no session %s of yours', session_id);
  end if;
  return (select to_jsonb(v) from public.session_summaries v where v.id = end_session.session_id);
end
$$;

revoke all on function public.start_session(public.session_type, jsonb),
  public.end_session(uuid, public.session_status) from public, anon;
grant execute on function public.start_session(public.session_type, jsonb),
  public.end_session(uuid, public.session_status) to authenticated, service_role;

-- Answers: only into an open session, only the user's own audio folder, and final once sent for evaluation.
create function private.guard_response() returns trigger
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

create trigger guard_answer before insert or update of answer_text, audio_path, time_taken_seconds
  on public.responses for each row execute function private.guard_response();

-- The session's overall score: the mean of its evaluated answers, once it is over and none is pending.
create function private.refresh_session_score(session_id uuid) returns numeric
language sql
set search_path = ''
as $$
  update public.practice_sessions s
  set overall_score = (select round(avg(r.ai_score), 2) from public.responses r
                       where r.session_id = s.id and r.evaluation_status = 'completed')
  where s.id = refresh_session_score.session_id
    and s.status = 'completed'
    and not exists (select from public.responses r
                    where r.session_id = s.id and r.evaluation_status in ('queued', 'processing'))
  returning s.overall_score
$$;

create function private.on_session_ended() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.refresh_session_score(new.id);
  return null;
end
$$;
revoke all on function private.on_session_ended() from public, anon, authenticated;

create trigger on_session_ended after update of status on public.practice_sessions
  for each row when (new.status = 'completed' and old.status is distinct from new.status)
  execute function private.on_session_ended();

-- Give back one use of a per-day limit (today's), e.g. for an evaluation that failed.
create function private.refund_quota(user_id uuid, metric text) returns void
language sql
set search_path = ''
as $$
  update public.usage_counters c set used = c.used - 1
  where c.user_id = refund_quota.user_id and c.metric = refund_quota.metric
    and c.period_start = (now() at time zone 'utc')::date and c.used > 0
$$;

-- POST /responses/{id}/evaluate: the owner asks for an evaluation; counted once, queued once.
create function service.request_evaluation(user_id uuid, response_id uuid) returns jsonb
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

-- The worker claims a response. A redelivered message for one already 'processing' claims it again.
create function service.begin_evaluation(response_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  response public.responses;
begin
  update public.responses r set evaluation_status = 'processing'
  where r.id = begin_evaluation.response_id and r.evaluation_status in ('queued', 'processing')
  returning * into response;
  if not found then
    return jsonb_build_object('skip', coalesce(
      (select r.evaluation_status::text from public.responses r where r.id = begin_evaluation.response_id),
      'missing'));
  end if;
  return (
    select jsonb_build_object(
      'response_id', response.id, 'user_id', response.user_id, 'session_id', response.session_id,
      'answer_text', response.answer_text, 'audio_path', response.audio_path, 'transcript', response.transcript,
      'time_taken_seconds', response.time_taken_seconds,
      'question', jsonb_build_object(
        'content', q.content, 'category', q.category, 'difficulty', q.difficulty,
        'experience_level', q.experience_level, 'evaluation_criteria', k.evaluation_criteria,
        'key_points', to_jsonb(k.key_points)))
    from public.session_questions sq
    join public.questions q on q.id = sq.question_id
    left join public.question_answer_keys k on k.question_id = q.id
    where sq.id = response.session_question_id
  );
end
$$;

create function service.save_transcript(response_id uuid, transcript text) returns void
language sql
set search_path = ''
as $$
  update public.responses r set transcript = save_transcript.transcript where r.id = save_transcript.response_id
$$;

create function service.complete_evaluation(response_id uuid, result jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  session uuid;
begin
  update public.responses r set
    evaluation_status = 'completed',
    ai_score = (result ->> 'ai_score')::numeric,
    feedback = result ->> 'feedback',
    strengths = coalesce((select array_agg(x) from jsonb_array_elements_text(result -> 'strengths') x), '{}'),
    improvements = coalesce((select array_agg(x) from jsonb_array_elements_text(result -> 'improvements') x), '{}'),
    criterion_scores = coalesce(result -> 'criterion_scores', '{}'),
    evaluator = coalesce(result -> 'evaluator', '{}'),
    evaluation_error = null,
    evaluated_at = now()
  where r.id = complete_evaluation.response_id and r.evaluation_status = 'processing'
  returning r.session_id into session;
  if session is null then
    return jsonb_build_object('already', true, 'session_overall_score', null);
  end if;
  return jsonb_build_object('already', false, 'session_overall_score', private.refresh_session_score(session));
end
$$;

-- The evaluation cannot happen (the queue refused it, the model refused, the answer was unusable): the reason
-- is kept for the user and nothing is charged.
create function service.fail_evaluation(response_id uuid, reason text) returns void
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

revoke all on function private.refresh_session_score(uuid), private.refund_quota(uuid, text)
  from public, anon, authenticated;
grant execute on function private.refresh_session_score(uuid), private.refund_quota(uuid, text) to service_role;

revoke all on function service.request_evaluation(uuid, uuid), service.begin_evaluation(uuid),
  service.save_transcript(uuid, text), service.complete_evaluation(uuid, jsonb),
  service.fail_evaluation(uuid, text) from public, anon, authenticated;
grant execute on function service.request_evaluation(uuid, uuid), service.begin_evaluation(uuid),
  service.save_transcript(uuid, text), service.complete_evaluation(uuid, jsonb),
  service.fail_evaluation(uuid, text) to service_role;

-- Audio answers: a private bucket; each user reads and writes only their own folder (<user id>/...).
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('answers', 'answers', false, 26214400,
        array['audio/webm', 'audio/ogg', 'audio/mpeg', 'audio/mp4', 'audio/wav', 'audio/x-m4a'])
on conflict (id) do nothing;

create policy "answers: read own audio" on storage.objects
  for select to authenticated
  using (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "answers: upload own audio" on storage.objects
  for insert to authenticated
  with check (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "answers: replace own audio" on storage.objects
  for update to authenticated
  using (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text)
  with check (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "answers: delete own audio" on storage.objects
  for delete to authenticated
  using (bucket_id = 'answers' and (storage.foldername(name))[1] = (select auth.uid())::text);
