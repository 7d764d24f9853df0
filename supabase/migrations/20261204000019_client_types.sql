-- 19. The database's types say what clients get
--
-- Clients call PostgREST directly, and their types are generated from this schema (clients/, `prep db types`,
-- postgres-meta's generator: the one `supabase gen types` runs). The generator names what it can see: the
-- columns of tables and views, composite types, enums. So the RPCs return composite types instead of jsonb
-- built on the fly, and the JSON a plan carries is declared as composite types its columns must match.
-- What the generator renders, and why: composite types' fields are always nullable (PostgreSQL cannot
-- declare a field of one not null), a view's columns too; `returns table` columns are never nullable, which
-- was wrong for entitlements (a free user has no subscription status nor period end).
-- The tables keep their columns: plans gains two checks, responses.category a default (both below).

-- What a plan unlocks (plans.features) and its per-UTC-day limits (plans.usage_limits), as the JSON objects
-- they are: a missing key means "not included" / "not allowed". The checks below keep the columns to exactly
-- these keys and types, so a new feature or limit starts with `alter type ... add attribute`.
create type public.plan_features as (
  voice_answers boolean,
  mock_interviews boolean,
  ai_generated_questions boolean
);
comment on type public.plan_features is
  'The JSON object in plans.features and entitlements().features: each flag true when the plan includes it.';

create type public.plan_usage_limits as (
  practice_sessions integer,
  question_requests integer,
  evaluations integer,
  ai_spend_cents integer,
  evaluations_per_answer integer
);
comment on type public.plan_usage_limits is
  'The JSON object in plans.usage_limits and entitlements().usage_limits: uses per UTC day of each metric, '
  'the AI spend ceiling per UTC day in cents, evaluations of one answer. A missing metric is not allowed.';

alter table public.plans
  add constraint plans_features_shape check (
    jsonb_strip_nulls(to_jsonb(jsonb_populate_record(null::public.plan_features, features))) = features),
  add constraint plans_usage_limits_shape check (
    jsonb_strip_nulls(to_jsonb(jsonb_populate_record(null::public.plan_usage_limits, usage_limits))) = usage_limits);
comment on column public.plans.features is 'A public.plan_features object (only its keys, booleans).';
comment on column public.plans.usage_limits is 'A public.plan_usage_limits object (only its keys, integers).';

-- A user's effective plan: one row, whoever asks. Its JSON columns stay jsonb, read by the SQL that checks
-- each feature and limit where it is used; their shapes are the two types above.
create type public.entitlement as (
  plan_code text,
  plan_name text,
  subscription_status public.subscription_status,
  is_paid boolean,
  features jsonb,
  usage_limits jsonb,
  current_period_end timestamptz
);
comment on type public.entitlement is
  'public.entitlements(): plan_code, plan_name, is_paid, features (a plan_features object) and usage_limits '
  '(a plan_usage_limits object) are always set; subscription_status and current_period_end are null on the '
  'free plan.';

-- The storage upload policy reads entitlements(); it is recreated as it was once the function is.
drop policy "answers: upload own audio" on storage.objects;
drop function public.entitlements(uuid, timestamptz);

-- A user's effective plan right now. Trialing and active subscriptions grant their plan; a past_due one keeps
-- it for the plan's grace period after the unpaid period began (Stripe retries the charge meanwhile);
-- anything else falls back to the free plan. Of several granting subscriptions, the highest plan
-- (plans.sort_order) wins, ties by the one Stripe created first. Security invoker: a user can only ever learn
-- their own.
create function public.entitlements(p_user_id uuid default auth.uid(), p_at timestamptz default now())
returns public.entitlement
language sql stable
set search_path = ''
as $$
  with paid as (
    select p.code, p.name, s.status, p.features, p.usage_limits, s.current_period_end
    from public.subscriptions s
    join public.plans p on p.id = s.plan_id
    where s.user_id = p_user_id
      and (
        s.status in ('trialing', 'active')
        or (s.status = 'past_due'
            and p_at < coalesce(s.current_period_start, s.updated_at) + make_interval(days => p.past_due_grace_days))
      )
    order by p.sort_order desc, coalesce(s.stripe_created_at, s.created_at), s.stripe_subscription_id
    limit 1
  )
  select code, name, status, true, features, usage_limits, current_period_end from paid
  union all
  select p.code, p.name, null, false, p.features, p.usage_limits, null
  from public.plans p
  where p.code = 'free' and not exists (select from paid)
$$;
comment on function public.entitlements(uuid, timestamptz) is
  'Effective plan, features and per-day usage limits of a user at a time (default: the caller, now).';
revoke all on function public.entitlements(uuid, timestamptz) from public, anon;
grant execute on function public.entitlements(uuid, timestamptz) to authenticated, service_role;

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

-- One question served in a session, in the order the session asks them.
create type public.served_question as (
  session_question_id uuid,
  position integer,
  question_id uuid,
  content text,
  category public.question_category,
  difficulty public.difficulty,
  experience_level public.experience_level
);
comment on type public.served_question is
  'A question of a started session (start_session().questions): every field is set.';

create type public.started_session as (
  session_id uuid,
  session_type public.session_type,
  time_limit_seconds integer,
  questions public.served_question[]
);
comment on type public.started_session is
  'What start_session() returns: session_id, session_type and questions (in position order, possibly empty) '
  'are always set; time_limit_seconds only for a mock interview.';

drop function public.start_session(public.session_type, jsonb);
drop function public.end_session(uuid, public.session_status);

-- Session lifecycle, callable by the signed-in user (security invoker: RLS decides which sessions exist).
-- The insert's triggers check the config (private.checked_request), count the session and serve its questions.
create function public.start_session(session_type public.session_type, config jsonb default '{}')
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
comment on function public.start_session(public.session_type, jsonb) is
  'Start a practice session (config: docs/security.md "Limits"); returns it with its questions.';

-- End a session: `completed` (its score follows its evaluations) or `abandoned`. A session ends once.
create function public.end_session(session_id uuid, outcome public.session_status)
returns public.session_summaries
language plpgsql
set search_path = ''
as $$
declare
  summary public.session_summaries;
begin
  if outcome = 'in_progress' then
    raise sqlstate 'PT422' using message = 'a session ends completed or abandoned';
  end if;
  update public.practice_sessions s set status = outcome where s.id = end_session.session_id;
  if not found then
    raise sqlstate 'PT404' using message = format('no session %s of yours', session_id);
  end if;
  select * into summary from public.session_summaries v where v.id = end_session.session_id;
  return summary;
end
$$;
comment on function public.end_session(uuid, public.session_status) is
  'End a session of the caller''s, completed or abandoned (once); returns its session_summaries row.';

revoke all on function public.start_session(public.session_type, jsonb),
  public.end_session(uuid, public.session_status) from public, anon;
grant execute on function public.start_session(public.session_type, jsonb),
  public.end_session(uuid, public.session_status) to authenticated, service_role;

-- An answer's category is its served question's: the trigger set_response_category sets it on every insert, and
-- it is not in the user's insert grant. The generated types make a client send every column without a default,
-- so the column gets a null default (written as a nullif: PostgreSQL keeps no default that is a null literal).
alter table public.responses
  alter column category set default nullif('behavioral'::public.question_category, 'behavioral');
