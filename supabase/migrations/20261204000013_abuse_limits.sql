-- 13. Abuse limits: what one signed-in account may consume or steer
--
-- Clients write through PostgREST, which hands every column and RPC argument to the database as sent. So:
--   - every client-writable jsonb, array and text value is bounded in bytes first (pg_column_size and
--     octet_length read the value's header: constant time), then in shape, before any other work;
--   - free text that steers generation (target roles, tags) is mapped onto a vocabulary (public.vocabulary);
--   - timestamps and counters are the server's: column grants leave clients only the columns they own;
--   - every plan feature is checked where it is used; each AI call is paid from the user's quota and a
--     per-user daily AI spend ceiling (plans.usage_limits.ai_spend_cents);
--   - clients read a question's public face; its answer key only once they have answered it;
--   - AI-generated questions are provisional (served to the user whose request made them) until the
--     scheduled rollup lets them into the shared bank.
-- docs/security.md lists every limit, its number and where it is enforced.

-- Vocabulary --------------------------------------------------------------------------------------------

-- Roles and tags a request may name. Each known spelling (term) maps to one canonical term; anything else
-- maps to the nearest term by trigram similarity, or is refused.
create type public.vocabulary_kind as enum ('role', 'tag');

create table public.vocabulary (
  kind public.vocabulary_kind not null,
  term text not null check (term ~ '^[a-z0-9][a-z0-9 +#./-]{0,59}$'),
  canonical text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (kind, term),
  foreign key (kind, canonical) references public.vocabulary (kind, term)
);
comment on table public.vocabulary is
  'Target roles and tags requests may name: each spelling and the canonical term it stands for.';
create index idx_vocabulary_canonical on public.vocabulary (kind, canonical);
create trigger set_updated_at before update on public.vocabulary
  for each row execute function private.set_updated_at();
alter table public.vocabulary enable row level security;
revoke all on public.vocabulary from anon, authenticated;
grant select on public.vocabulary to anon, authenticated;
grant all on public.vocabulary to service_role;
create policy "vocabulary: everyone reads" on public.vocabulary for select to anon, authenticated using (true);

insert into public.vocabulary (kind, term, canonical)
select 'role', c, c from unnest(array[
  'software engineer', 'frontend engineer', 'backend engineer', 'full stack engineer', 'mobile engineer',
  'data scientist', 'data analyst', 'data engineer', 'machine learning engineer', 'devops engineer',
  'site reliability engineer', 'security engineer', 'qa engineer', 'solutions architect', 'engineering manager',
  'product manager', 'technical program manager', 'project manager', 'designer', 'business analyst',
  'marketing manager', 'sales representative', 'account manager', 'customer success manager', 'consultant',
  'financial analyst', 'operations manager', 'recruiter', 'people manager', 'executive'
]) c;
insert into public.vocabulary (kind, term, canonical) values
  ('role', 'engineer', 'software engineer'), ('role', 'software developer', 'software engineer'), ('role', 'developer', 'software engineer'),
  ('role', 'programmer', 'software engineer'), ('role', 'swe', 'software engineer'),
  ('role', 'frontend developer', 'frontend engineer'), ('role', 'backend developer', 'backend engineer'),
  ('role', 'full stack developer', 'full stack engineer'), ('role', 'ios engineer', 'mobile engineer'),
  ('role', 'android engineer', 'mobile engineer'), ('role', 'ml engineer', 'machine learning engineer'),
  ('role', 'sre', 'site reliability engineer'), ('role', 'platform engineer', 'devops engineer'),
  ('role', 'test engineer', 'qa engineer'), ('role', 'software architect', 'solutions architect'),
  ('role', 'pm', 'product manager'), ('role', 'product owner', 'product manager'),
  ('role', 'tpm', 'technical program manager'), ('role', 'program manager', 'technical program manager'),
  ('role', 'ux designer', 'designer'), ('role', 'ui designer', 'designer'), ('role', 'product designer', 'designer'),
  ('role', 'em', 'engineering manager'), ('role', 'analyst', 'business analyst'),
  ('role', 'account executive', 'sales representative'), ('role', 'hr manager', 'people manager'),
  ('role', 'cto', 'executive'), ('role', 'ceo', 'executive'), ('role', 'vp engineering', 'executive'),
  ('role', 'director', 'executive');
insert into public.vocabulary (kind, term, canonical)
select 'tag', c, c from unnest(array[
  'adaptability', 'agile', 'algorithms', 'ambiguity', 'analytical-thinking', 'api-design', 'budgeting',
  'career-growth', 'change-management', 'ci-cd', 'cloud', 'coaching', 'code-quality', 'collaboration',
  'communication', 'conflict-resolution', 'crisis-management', 'culture', 'customer-focus', 'data-modeling',
  'data-quality', 'databases', 'debugging', 'decision-making', 'delegation', 'design-systems',
  'distributed-systems', 'estimation', 'ethics', 'experimentation', 'failure', 'feedback', 'hiring',
  'incident-response', 'inclusion', 'influence', 'innovation', 'leadership', 'learning', 'machine-learning',
  'mentoring', 'metrics', 'motivation', 'negotiation', 'org-design', 'ownership', 'performance-management',
  'prioritization', 'process-improvement', 'product-sense', 'project-management', 'reliability',
  'remote-work', 'risk-management', 'root-cause-analysis', 'scalability', 'security', 'self-awareness',
  'sql', 'stakeholder-management', 'statistics', 'strategy', 'system-design', 'teamwork', 'technical-debt',
  'testing', 'time-management', 'trade-offs', 'user-research', 'values'
]) c;
insert into public.vocabulary (kind, term, canonical) values
  ('tag', 'ml', 'machine-learning'), ('tag', 'ab-testing', 'experimentation'), ('tag', 'a-b-testing', 'experimentation'),
  ('tag', 'stakeholders', 'stakeholder-management'), ('tag', 'conflict', 'conflict-resolution'),
  ('tag', 'teamwork-and-collaboration', 'collaboration'), ('tag', 'tradeoffs', 'trade-offs'),
  ('tag', 'tech-debt', 'technical-debt'), ('tag', 'incidents', 'incident-response'), ('tag', 'kpis', 'metrics'),
  ('tag', 'architecture', 'system-design'), ('tag', 'postgres', 'databases'), ('tag', 'mentorship', 'mentoring');

-- The canonical term for what a user typed: its own entry, else the nearest by trigram similarity (at least
-- 0.5), else refused naming the closest known terms. Callers bound `term` in bytes before calling.
create function private.canonical_term(kind public.vocabulary_kind, term text) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  key text := regexp_replace(lower(btrim(term)), '[[:space:]_]+', case kind when 'tag' then '-' else ' ' end, 'g');
  match text;
  score real;
begin
  select v.canonical into match from public.vocabulary v where v.kind = canonical_term.kind and v.term = key;
  if found then
    return match;
  end if;
  select v.canonical, extensions.similarity(v.term, key) into match, score
  from public.vocabulary v where v.kind = canonical_term.kind
  order by 2 desc, v.term limit 1;
  if score >= 0.5 then
    return match;
  end if;
  raise sqlstate 'PT422' using
    message = format('unknown %s %L', kind, left(term, 60)),
    hint = format('Use a known %s (public.vocabulary), e.g. %s.', kind, (
      select string_agg(t.canonical, ', ' order by t.s desc, t.canonical) from (
        select v.canonical, max(extensions.similarity(v.term, key)) as s
        from public.vocabulary v where v.kind = canonical_term.kind
        group by v.canonical order by s desc, v.canonical limit 5
      ) t
    ));
end
$$;

-- Size bounds ---------------------------------------------------------------------------------------------

-- Refuse a value larger than `max_bytes` (its stored size, read from its header: constant time).
create function private.limit_size(what text, value anyelement, max_bytes integer) returns void
language plpgsql immutable
set search_path = ''
as $$
begin
  if pg_column_size(value) > max_bytes then
    raise sqlstate 'PT413' using
      message = format('%s is %s bytes; the limit is %s', what, pg_column_size(value), max_bytes),
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
end
$$;

-- A question request, as a session config (start_session, a direct insert) or POST /questions carries it:
-- bounded, known keys only, each of its type and range; roles and tags canonical. Returns it normalized.
--   {"category", "difficulty", "experience_level", "target_role", "tags": [<= 8], "count": 1-20,
--    "question_time_limit_seconds": 30-1800}
create function private.checked_request(request jsonb) returns jsonb
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

-- Sessions: the config is checked and normalized before the row exists (the after trigger of 9. serves it).
create function private.check_session_config() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  new.config := private.checked_request(coalesce(new.config, '{}'));
  return new;
end
$$;
revoke all on function private.check_session_config() from public, anon, authenticated;
create trigger check_config before insert on public.practice_sessions
  for each row execute function private.check_session_config();

-- Profiles ------------------------------------------------------------------------------------------------

-- The IANA time zone names (pg_timezone_names, read once here: reading the view costs ~60 ms a call).
create table private.time_zones (
  name text primary key,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
insert into private.time_zones (name)
select name from pg_timezone_names where name !~ '^(posix|right)/' and name <> 'localtime';
create trigger set_updated_at before update on private.time_zones
  for each row execute function private.set_updated_at();
alter table private.time_zones enable row level security;
grant select on private.time_zones to service_role;

-- A profile as written by its owner: sizes first, then an IANA time zone and a canonical target role.
create function private.check_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.limit_size('preferences', new.preferences, 4096);
  perform private.limit_size('skills', new.skills, 4096);
  if cardinality(new.skills) > 50 or exists (select from unnest(new.skills) s where octet_length(s) > 60) then
    raise sqlstate 'PT422' using message = 'skills: at most 50, each at most 60 bytes';
  end if;
  if octet_length(new.timezone) > 64 or not exists (select from private.time_zones z where z.name = new.timezone) then
    raise sqlstate 'PT422' using
      message = format('timezone %L is not an IANA time zone name', left(new.timezone, 64)),
      hint = 'Use a name such as Europe/Paris or America/New_York (pg_timezone_names).';
  end if;
  if octet_length(new.target_role) > 120 then
    raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
  end if;
  if new.target_role is not null and (tg_op = 'INSERT' or new.target_role is distinct from old.target_role) then
    new.target_role := private.canonical_term('role', new.target_role);
  end if;
  return new;
end
$$;
revoke all on function private.check_profile() from public, anon, authenticated;

-- Profiles written before these rules: unknown zones become UTC, roles canonical (or none).
update public.user_profiles set timezone = 'UTC'
where timezone not in (select name from private.time_zones);
update public.user_profiles p set target_role = coalesce(
  (select v.canonical from public.vocabulary v
   where v.kind = 'role' and v.term = regexp_replace(lower(btrim(p.target_role)), '[[:space:]_]+', ' ', 'g')),
  (select v.canonical from public.vocabulary v where v.kind = 'role'
   and extensions.similarity(v.term, lower(p.target_role)) >= 0.5
   order by extensions.similarity(v.term, lower(p.target_role)) desc limit 1))
where target_role is not null;

alter table public.user_profiles drop constraint user_profiles_timezone_check;
create trigger check_profile before insert or update on public.user_profiles
  for each row execute function private.check_profile();

-- Clients write what they own; timestamps and the owner are the server's.
revoke insert, update on public.user_profiles from authenticated;
grant insert (user_id, target_role, experience_level, skills, timezone, preferences) on public.user_profiles
  to authenticated;
grant update (target_role, experience_level, skills, timezone, preferences) on public.user_profiles to authenticated;

-- Users: the display fields a user edits are bounded in bytes before anything copies them (the check
-- constraints of 2. count characters, which reads the whole value). Fires before set_updated_at.
create function private.check_display_fields() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if octet_length(new.display_name) > 480 or octet_length(new.avatar_url) > 8192 then
    raise sqlstate 'PT413' using
      message = 'display_name is at most 120 characters and avatar_url at most 2,048',
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
  return new;
end
$$;
create trigger check_display_fields before insert or update of display_name, avatar_url on public.users
  for each row execute function private.check_display_fields();

-- Ratings -------------------------------------------------------------------------------------------------

revoke insert, update on public.question_ratings from authenticated;
grant insert (user_id, question_id, rating) on public.question_ratings to authenticated;
grant update (rating) on public.question_ratings to authenticated;
drop policy "question_ratings: change own" on public.question_ratings;
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

-- Questions: the public face, the answer key, provisional AI questions ---------------------------------

-- The answer key (4.): a user reads it once they have answered the question.
grant select on public.question_answer_keys to authenticated;
create policy "question_answer_keys: read keys of questions I answered" on public.question_answer_keys
  for select to authenticated using (
    exists (
      select from public.session_questions sq
      join public.responses r on r.session_question_id = sq.id
      where sq.question_id = question_answer_keys.question_id and sq.user_id = (select auth.uid())
    )
  );

-- AI questions wait here until the rollup lets them into the shared bank: only the user whose request
-- generated them is served them meanwhile (null: in the shared bank).
alter table public.questions add column provisional_for uuid references public.users (id) on delete set null;
comment on column public.questions.provisional_for is
  'AI questions not yet in the shared bank: served only to this user (null: shared).';
create index idx_questions_provisional_for on public.questions (provisional_for) where provisional_for is not null;

-- Clients read the public face: never what generated a question (another user's request).
revoke select on public.questions from authenticated;
grant select (id, content, category, difficulty, experience_level, target_role, tags, source, is_active,
              usage_count, rating_avg, rating_count, created_at, updated_at) on public.questions to authenticated;
drop policy "questions: signed-in users read active questions" on public.questions;
create policy "questions: signed-in users read the shared bank and their provisional questions" on public.questions
  for select to authenticated
  using (is_active and (provisional_for is null or provisional_for = (select auth.uid())));

-- Selection: as in 9., skipping other users' provisional questions, for a checked request.
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

-- POST /questions, as in 9., with the request checked and normalized first (and returned, so the handler
-- generates for the canonical request).
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

-- Generated questions enter provisional for the user whose request made them. As in 9. otherwise.
drop function service.add_generated_questions(jsonb, jsonb);
create function service.add_generated_questions(questions jsonb, generation jsonb, generated_for uuid)
returns jsonb
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
                                  generation_metadata, provisional_for)
    values (
      btrim(candidate ->> 'content'),
      (candidate ->> 'category')::public.question_category,
      (candidate ->> 'difficulty')::public.difficulty,
      (candidate ->> 'experience_level')::public.experience_level,
      nullif(btrim(candidate ->> 'target_role'), ''),
      coalesce((select array_agg(lower(t)) from jsonb_array_elements_text(candidate -> 'tags') t), '{}'),
      'ai',
      generation,
      generated_for
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
revoke all on function service.add_generated_questions(jsonb, jsonb, uuid) from public, anon, authenticated;
grant execute on function service.add_generated_questions(jsonb, jsonb, uuid) to service_role;

-- The bank's gate for provisional questions, run by the rollup: a question joins the shared bank once the
-- user it was made for has been served it and nobody who was served it rated it below 3. Its inputs were
-- vocabulary terms (checked_request), it passed the duplicate and paraphrase checks, and its text came from
-- our prompt, not from the user. (The curation issue replaces this with reports, ratings and calibration.)
create function private.promote_provisional_questions() returns integer
language sql
set search_path = ''
as $$
  with promoted as (
    update public.questions q set provisional_for = null
    where q.provisional_for is not null
      and exists (select from public.session_questions sq
                  where sq.question_id = q.id and sq.user_id = q.provisional_for)
      and not exists (select from public.question_ratings r where r.question_id = q.id and r.rating < 3)
    returning 1
  )
  select count(*)::integer from promoted
$$;
revoke all on function private.promote_provisional_questions() from public, anon, authenticated;
grant execute on function private.promote_provisional_questions() to service_role;

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
  return jsonb_build_object('questions_updated', touched, 'since', since,
                            'questions_promoted', private.promote_provisional_questions());
end
$$;

-- Answers and evaluation ----------------------------------------------------------------------------------

-- Which AI call was made for which answer: a failed evaluation is refunded only if none of its calls was
-- billed, and a user's spend is summed per day.
alter table public.ai_usage add column response_id uuid references public.responses (id) on delete set null;
create index idx_ai_usage_response on public.ai_usage (response_id) where response_id is not null;
-- A call's worst-case cost is reserved (a row, not settled) before the call and settled with what it cost.
alter table public.ai_usage add column settled boolean not null default true;
comment on column public.ai_usage.settled is
  'false: a reservation of the call''s worst-case cost, made before the call and not yet settled';
drop index public.idx_ai_usage_user;
create index idx_ai_usage_user_created_at on public.ai_usage (user_id, created_at);

-- How often an answer was sent for evaluation (service-written; capped per plan).
alter table public.responses add column evaluation_attempts smallint not null default 0
  check (evaluation_attempts >= 0);
alter table archive.responses add column evaluation_attempts smallint not null default 0
  check (evaluation_attempts >= 0);

-- Per-user AI limits, by plan: the daily AI spend ceiling (cents) and evaluations of one answer.
update public.plans set usage_limits = usage_limits || '{"ai_spend_cents": 5, "evaluations_per_answer": 3}'
where code = 'free';
update public.plans set usage_limits = usage_limits || '{"ai_spend_cents": 100, "evaluations_per_answer": 3}'
where code in ('weekly', 'monthly');

-- Answers: bounded as before, the recording in the owner's folder under a plain name, and spoken answers
-- only on a plan with voice_answers.
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
     and not coalesce((select (e.features ->> 'voice_answers')::boolean from public.entitlements(new.user_id) e),
                      false) then
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

-- POST /responses/{id}/evaluate: as in 10., but someone else's answer is as missing as a missing one, an
-- answer is evaluated at most the plan's evaluations_per_answer times, and a recording needs voice_answers.
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
  select e.plan_code, e.features, coalesce((e.usage_limits ->> 'evaluations_per_answer')::integer, 1) as attempts
  into plan from public.entitlements(response.user_id) e;
  if response.evaluation_attempts >= plan.attempts then
    raise sqlstate 'PT429' using
      message = format('response %s was sent for evaluation %s times, the most the %s plan allows', response_id,
                       response.evaluation_attempts, plan.plan_code),
      hint = 'Answer the question again in a new session.';
  end if;
  if response.audio_path is not null and response.transcript is null
     and not coalesce((plan.features ->> 'voice_answers')::boolean, false) then
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

-- The evaluation cannot happen: the reason is kept for the user, and the quota unit is given back only if
-- no AI call billed for this request (a refusal, an invalid output or a silent recording cost money).
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
    if not exists (select from public.ai_usage u
                   where u.response_id = failed.id and u.cost_usd > 0
                     and u.created_at >= coalesce(failed.evaluation_requested_at, '-infinity')) then
      perform private.refund_quota(failed.user_id, 'evaluations');
    end if;
    perform private.refresh_session_score(failed.session_id);
  end if;
end
$$;

-- Every AI call, with the answer it was made for: it settles the call's reservation (reservation_id), or is
-- a row of its own (a call made without one).
create or replace function service.record_ai_usage(usage jsonb) returns void
language plpgsql
set search_path = ''
as $$
begin
  update public.ai_usage u set
    prompt_tokens = coalesce((usage ->> 'prompt_tokens')::integer, 0),
    completion_tokens = coalesce((usage ->> 'completion_tokens')::integer, 0),
    audio_seconds = (usage ->> 'audio_seconds')::numeric,
    cost_usd = coalesce((usage ->> 'cost_usd')::numeric, 0),
    latency_ms = (usage ->> 'latency_ms')::integer,
    succeeded = (usage ->> 'succeeded')::boolean,
    error = left(usage ->> 'error', 500),
    settled = true
  where u.id = (usage ->> 'reservation_id')::uuid and not u.settled;
  if found then
    return;
  end if;
  insert into public.ai_usage (user_id, response_id, purpose, model, prompt_tokens, completion_tokens, audio_seconds,
                               cost_usd, latency_ms, succeeded, error)
  values (
    (usage ->> 'user_id')::uuid, (usage ->> 'response_id')::uuid, usage ->> 'purpose', usage ->> 'model',
    coalesce((usage ->> 'prompt_tokens')::integer, 0), coalesce((usage ->> 'completion_tokens')::integer, 0),
    (usage ->> 'audio_seconds')::numeric, coalesce((usage ->> 'cost_usd')::numeric, 0),
    (usage ->> 'latency_ms')::integer, (usage ->> 'succeeded')::boolean, left(usage ->> 'error', 500)
  );
end
$$;

-- What AI may still be spent today (UTC): the platform's total, and the user's against their plan's ceiling.
create function service.ai_budget(user_id uuid default null) returns jsonb
language sql stable
set search_path = ''
as $$
  with today as (select date_trunc('day', now() at time zone 'utc') at time zone 'utc' as start)
  select jsonb_build_object(
    'platform_spent_usd', (select coalesce(sum(u.cost_usd), 0) from public.ai_usage u, today
                           where u.created_at >= today.start),
    'user_spent_usd', (select coalesce(sum(u.cost_usd), 0) from public.ai_usage u, today
                       where u.user_id = ai_budget.user_id and u.created_at >= today.start),
    'user_ceiling_usd', (select coalesce((e.usage_limits ->> 'ai_spend_cents')::numeric, 0) / 100
                         from public.entitlements(ai_budget.user_id) e)
  )
$$;
revoke all on function service.ai_budget(uuid) from public, anon, authenticated;
grant execute on function service.ai_budget(uuid) to service_role;

-- Before an AI call: reserve its worst-case cost if it fits today's budgets, the platform's (`platform_cap_usd`,
-- a setting of the functions) and the user's plan ceiling. Reservations are taken one at a time, so concurrent
-- calls (an SQS batch, several invocations) each see the others' and together never pass either budget.
-- `spend`: {"user_id"?, "response_id"?, "purpose", "model", "worst_case_usd", "platform_cap_usd"}.
-- Returns the budget and {"granted": true, "reservation_id"} or {"granted": false, "scope": "platform"|"user"}.
create function service.reserve_ai_spend(spend jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  owner uuid := (spend ->> 'user_id')::uuid;
  worst_case numeric := (spend ->> 'worst_case_usd')::numeric;
  budget jsonb;
  reservation uuid;
begin
  perform pg_advisory_xact_lock(hashtext('service.reserve_ai_spend'));
  budget := service.ai_budget(owner);
  if (budget ->> 'platform_spent_usd')::numeric + worst_case > (spend ->> 'platform_cap_usd')::numeric then
    return budget || '{"granted": false, "scope": "platform"}';
  end if;
  if owner is not null and (budget ->> 'user_spent_usd')::numeric + worst_case > (budget ->> 'user_ceiling_usd')::numeric then
    return budget || '{"granted": false, "scope": "user"}';
  end if;
  insert into public.ai_usage (user_id, response_id, purpose, model, cost_usd, latency_ms, succeeded, settled)
  values (owner, (spend ->> 'response_id')::uuid, spend ->> 'purpose', spend ->> 'model', worst_case, 0, false, false)
  returning id into reservation;
  return budget || jsonb_build_object('granted', true, 'reservation_id', reservation);
end
$$;
revoke all on function service.reserve_ai_spend(jsonb) from public, anon, authenticated;
grant execute on function service.reserve_ai_spend(jsonb) to service_role;
drop function service.ai_spend_today();

revoke all on function private.canonical_term(public.vocabulary_kind, text), private.limit_size(text, anyelement, integer),
  private.checked_request(jsonb) from public, anon, authenticated;
grant execute on function private.canonical_term(public.vocabulary_kind, text), private.limit_size(text, anyelement, integer),
  private.checked_request(jsonb) to service_role;

-- Storage: the answers bucket -----------------------------------------------------------------------------

-- Spoken answers only: at most 10 MB (about ten minutes of compressed speech; transcription takes 25 MB).
update storage.buckets set file_size_limit = 10485760 where id = 'answers';

-- How many recordings the caller keeps in the answers bucket (their own folder). A function, so the upload
-- policy can count them: a policy on storage.objects that queries storage.objects itself is refused as an
-- infinite recursion. Security invoker: RLS limits it to the caller's objects; Storage's name_prefix_search
-- index serves the prefix.
create function public.stored_recordings() returns integer
language plpgsql stable
set search_path = ''
as $$
begin
  return (select count(*) from storage.objects o
          where o.bucket_id = 'answers' and o.name like (select auth.uid())::text || '/%');
end
$$;
comment on function public.stored_recordings() is 'How many recordings the caller keeps (at most 200).';
revoke all on function public.stored_recordings() from public, anon;
grant execute on function public.stored_recordings() to authenticated, service_role;

-- Objects in the user's own folder under plain names (no '.' or '..' segment), owned by the uploader, only
-- on a plan with voice answers, at most 200 a user, custom metadata at most 1 kB. Storage sets owner_id from
-- the token's subject; a client cannot name anyone else there.
drop policy "answers: upload own audio" on storage.objects;
drop policy "answers: replace own audio" on storage.objects;
create policy "answers: upload own audio" on storage.objects
  for insert to authenticated
  with check (
    bucket_id = 'answers'
    and owner_id = (select auth.uid())::text
    and name ~ ('^' || (select auth.uid())::text || '(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){1,3}$')
    and coalesce(pg_column_size(user_metadata), 0) <= 1024
    and coalesce((select (e.features ->> 'voice_answers')::boolean from public.entitlements() e), false)
    and (select public.stored_recordings()) < 200
  );
create policy "answers: replace own audio" on storage.objects
  for update to authenticated
  using (bucket_id = 'answers' and owner_id = (select auth.uid())::text)
  with check (
    bucket_id = 'answers'
    and owner_id = (select auth.uid())::text
    and name ~ ('^' || (select auth.uid())::text || '(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){1,3}$')
    and coalesce(pg_column_size(user_metadata), 0) <= 1024
  );
