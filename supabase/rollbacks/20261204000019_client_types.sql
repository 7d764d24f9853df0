-- Undo 19. The database's types say what clients get: the RPCs return jsonb / `returns table` again.
alter table public.responses alter column category drop default;
drop function public.start_session(public.session_type, jsonb);
drop function public.end_session(uuid, public.session_status);
drop type public.started_session;
drop type public.served_question;

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

drop policy "answers: upload own audio" on storage.objects;
drop function public.entitlements(uuid, timestamptz);
drop type public.entitlement;

create function public.entitlements(p_user_id uuid default auth.uid(), p_at timestamptz default now())
returns table (
  plan_code text,
  plan_name text,
  subscription_status public.subscription_status,
  is_paid boolean,
  features jsonb,
  usage_limits jsonb,
  current_period_end timestamptz
)
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

comment on column public.plans.features is null;
comment on column public.plans.usage_limits is null;
alter table public.plans drop constraint plans_features_shape, drop constraint plans_usage_limits_shape;
drop type public.plan_usage_limits;
drop type public.plan_features;
