-- Undo 16. Account lifecycle (deletion and export)
drop function service.export_account(uuid, jsonb, integer);
drop function service.due_account_deletions(integer);
drop function service.complete_account_deletion(uuid);
drop function service.purge_account_answers(uuid, integer);
drop function private.auth_account(uuid);
drop function private.delete_auth_user(uuid);
drop function service.record_account_deletion_step(uuid, text, text);
drop function service.request_account_deletion(uuid, text, text);
drop function service.find_account(text);
drop function private.account_deletion_state(uuid);

create or replace function private.refuse_deleting_billed_users() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  billed text;
begin
  select string_agg(s.stripe_subscription_id, ', ' order by s.stripe_subscription_id) into billed
  from public.subscriptions s
  where s.user_id = old.id and s.status in ('trialing', 'active', 'past_due', 'unpaid') and not s.cancel_at_period_end;
  if billed is not null then
    raise sqlstate 'PT409' using
      message = format('user %s still has subscription(s) %s, which Stripe keeps charging', old.id, billed),
      hint = 'Cancel it first (the billing portal, or the Stripe dashboard), then delete the user once the '
             || 'cancellation event has been received (each one, if several).';
  end if;
  return old;
end
$$;

drop trigger redact_events_of_deleted_users on private.stripe_events;
drop function private.redact_events_of_deleted_users();
drop trigger forget_deleted_user on public.users;
drop function private.forget_deleted_user();

create or replace function public.stored_recordings() returns integer
language plpgsql stable
set search_path = ''
as $$
begin
  return (select count(*) from storage.objects o
          where o.bucket_id = 'answers' and o.name like (select auth.uid())::text || '/%');
end
$$;
alter table public.users drop column deletion_requested_at;

drop trigger refuse_work_while_deleting on public.question_ratings;
drop trigger refuse_work_while_deleting on public.responses;
drop trigger refuse_work_while_deleting on public.practice_sessions;
drop function private.refuse_work_while_deleting();
drop function private.user_hash(uuid);
drop table private.account_deletions;

create or replace function service.checkout_context(user_id uuid, plan_code text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  plan public.plans;
  live text;
begin
  if not exists (select from public.users u where u.id = checkout_context.user_id) then
    raise sqlstate 'PT404' using message = 'no such user';
  end if;
  select * into plan from public.plans p where p.code = plan_code and p.is_active and p.price_cents > 0;
  if not found then
    raise sqlstate 'PT404' using
      message = format('no plan %L can be bought', plan_code),
      hint = (select 'Choose one of: ' || string_agg(p.code, ', ' order by p.sort_order)
              from public.plans p where p.is_active and p.price_cents > 0);
  end if;
  if plan.stripe_price_id is null then
    raise sqlstate 'PT503' using message = format('plan %s has no Stripe price configured', plan.code);
  end if;
  select s.stripe_subscription_id into live from public.subscriptions s
  where s.user_id = checkout_context.user_id and s.status in ('trialing', 'active', 'past_due', 'unpaid', 'paused');
  if live is not null then
    raise sqlstate 'PT409' using
      message = 'you already have a subscription',
      hint = 'Change or cancel it from the billing portal (POST /billing/portal).';
  end if;
  return jsonb_build_object(
    'stripe_customer_id', (select c.stripe_customer_id from public.billing_customers c
                           where c.user_id = checkout_context.user_id and c.deleted_at is null),
    -- A customer deleted in Stripe is replaced; its id keys the idempotent creation of the next one.
    'replaces_customer', (select c.stripe_customer_id from public.billing_customers c
                          where c.user_id = checkout_context.user_id and c.deleted_at is not null),
    'email', (select u.email from public.users u where u.id = checkout_context.user_id),
    'price_id', plan.stripe_price_id,
    'trial_days', case
      when exists (select from public.subscriptions s
                   where s.user_id = checkout_context.user_id and s.trial_start is not null) then 0
      else plan.trial_days end
  );
end
$$;
