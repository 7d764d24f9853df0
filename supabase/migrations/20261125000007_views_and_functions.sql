-- 7. Views and functions
--
-- The read models clients and handlers share. Views run with the caller's rights (security_invoker), so RLS
-- still decides what each user sees through them.

-- A user's effective plan right now. Trialing and active subscriptions grant their plan; a past_due one keeps
-- it for the plan's grace period after the unpaid period began (Stripe retries the charge meanwhile);
-- anything else falls back to the free plan. Security invoker: a user can only ever learn their own.
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
    order by s.current_period_end desc nulls last
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

-- One row per practice session with its progress, for history lists and dashboards.
create view public.session_summaries with (security_invoker = true) as
select
  s.id,
  s.user_id,
  s.session_type,
  s.status,
  s.started_at,
  s.ended_at,
  s.overall_score,
  count(sq.id) as question_count,
  count(r.id) as answered_count,
  count(r.id) filter (where r.evaluation_status = 'completed') as evaluated_count
from public.practice_sessions s
left join public.session_questions sq on sq.session_id = s.id
left join public.responses r on r.session_question_id = sq.id
group by s.id;

revoke all on public.session_summaries from anon, authenticated;
grant select on public.session_summaries to authenticated, service_role;
