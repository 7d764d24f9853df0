-- Undo 22. The calibration, abilities, peers' percentiles and projections go (they are rebuilt from the answers
-- by migrating again and running the schedule); recommended sessions already served keep their questions.
drop function service.refresh_peer_percentiles(timestamptz, boolean);
drop function service.calibrate_answers(timestamptz);
delete from private.rollup_watermarks where name in ('calibration', 'peer_percentiles');

-- start_session and on_session_started as in 19. and 9.
create or replace function public.start_session(session_type public.session_type, config jsonb default '{}')
returns public.started_session
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
  return row(
    session.id,
    session.session_type,
    session.time_limit_seconds,
    array(
      select row(sq.id, sq.position, q.id, q.content, q.category, q.difficulty, q.experience_level)::public.served_question
      from public.session_questions sq join public.questions q on q.id = sq.question_id
      where sq.session_id = session.id
      order by sq.position
    )
  )::public.started_session;
end
$$;
alter type public.served_question drop attribute reason;

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
drop function private.serve_recommended(uuid, integer, public.question_category);

-- request_questions as in 13. (no generation ahead).
create or replace function service.request_questions(user_id uuid, request jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  wanted integer;
  session uuid;
  session_owner uuid;
  session_status public.session_status;
  served jsonb;
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

  return jsonb_build_object(
    'session_id', session,
    'request', request - 'session_id',
    'questions', served,
    'deficit', wanted - jsonb_array_length(served),
    'ai_generation_included',
      coalesce((select (e.features ->> 'ai_generated_questions')::boolean
                from public.entitlements(request_questions.user_id) e), false)
  );
end
$$;
drop table private.widening_demand;


-- checked_request as in 13. (a session config with `mode` is refused again; stored configs keep theirs).
create or replace function private.checked_request(request jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  unknown text;
  checked jsonb;
  tag jsonb;
  tags text[] := '{}';
begin
  perform private.limit_size('the request (session config)', request, 2048);
  if jsonb_typeof(request) is distinct from 'object' then
    raise sqlstate 'PT422' using message = 'the session config must be a JSON object';
  end if;
  select string_agg(k, ', ') into unknown from jsonb_object_keys(request) k
  where k <> all (array['category', 'difficulty', 'experience_level', 'target_role', 'tags', 'count',
                        'question_time_limit_seconds', 'session_id']);
  if unknown is not null then
    raise sqlstate 'PT422' using
      message = format('unknown session config keys: %s', left(unknown, 200)),
      hint = 'Known keys: category, difficulty, experience_level, target_role, tags, count, '
             || 'question_time_limit_seconds.';
  end if;
  checked := request - 'target_role' - 'tags';
  if request ? 'category' and not coalesce(request ->> 'category' = any (enum_range(null::public.question_category)::text[]), false) then
    raise sqlstate 'PT422' using message = 'category must be one of: '
      || array_to_string(enum_range(null::public.question_category), ', ');
  end if;
  if request ? 'difficulty' and not coalesce(request ->> 'difficulty' = any (enum_range(null::public.difficulty)::text[]), false) then
    raise sqlstate 'PT422' using message = 'difficulty must be one of: '
      || array_to_string(enum_range(null::public.difficulty), ', ');
  end if;
  if request ? 'experience_level'
     and not coalesce(request ->> 'experience_level' = any (enum_range(null::public.experience_level)::text[]), false) then
    raise sqlstate 'PT422' using message = 'experience_level must be one of: '
      || array_to_string(enum_range(null::public.experience_level), ', ');
  end if;
  if request ? 'count' and not coalesce(jsonb_typeof(request -> 'count') = 'number'
                                        and request ->> 'count' ~ '^[0-9]{1,2}$'
                                        and (request ->> 'count')::integer between 1 and 20, false) then
    raise sqlstate 'PT422' using message = 'count must be a whole number from 1 to 20';
  end if;
  if request ? 'question_time_limit_seconds'
     and not coalesce(jsonb_typeof(request -> 'question_time_limit_seconds') = 'number'
                      and request ->> 'question_time_limit_seconds' ~ '^[0-9]{1,4}$'
                      and (request ->> 'question_time_limit_seconds')::integer between 30 and 1800, false) then
    raise sqlstate 'PT422' using message = 'question_time_limit_seconds must be a whole number from 30 to 1800';
  end if;
  if request ? 'session_id' and not coalesce(request ->> 'session_id'
       ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false) then
    raise sqlstate 'PT422' using message = 'session_id must be a UUID';
  end if;

  if jsonb_typeof(request -> 'target_role') = 'string' then
    if octet_length(request ->> 'target_role') > 120 then
      raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
    end if;
    checked := checked || jsonb_build_object('target_role',
      private.canonical_term('role', request ->> 'target_role'));
  elsif coalesce(jsonb_typeof(request -> 'target_role'), 'null') <> 'null' then
    raise sqlstate 'PT422' using message = 'target_role must be a string';
  end if;

  if request ? 'tags' then
    if jsonb_typeof(request -> 'tags') <> 'array' or jsonb_array_length(request -> 'tags') > 8 then
      raise sqlstate 'PT422' using message = 'tags must be an array of at most 8 strings';
    end if;
    for tag in select * from jsonb_array_elements(request -> 'tags') loop
      if jsonb_typeof(tag) <> 'string' or octet_length(tag #>> '{}') > 40 then
        raise sqlstate 'PT422' using message = 'each tag must be a string of at most 40 bytes';
      end if;
      tags := tags || private.canonical_term('tag', tag #>> '{}');
    end loop;
    checked := checked || jsonb_build_object('tags',
      (select coalesce(jsonb_agg(distinct t), '[]') from unnest(tags) t));
  end if;
  return checked;
end
$$;

drop function public.recommend_next(integer, public.question_category);
drop type public.recommendation;

alter table archive.session_questions drop column pick_reason;
alter table public.session_questions drop column pick_reason;
drop table public.category_abilities;

drop index public.idx_questions_cell_estimate;
revoke select (provisional_for) on public.questions from authenticated;
alter table public.questions
  drop column selection_cell,
  drop column label_disagrees,
  drop column difficulty_estimate,
  drop column calibration_information,
  drop column calibration_answers,
  drop column difficulty_uncertainty,
  drop column calibrated_difficulty;

-- The export as in 21.: its `abilities` section went with the table.
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
