-- Undo 16. Account lifecycle (deletion and export)
drop function service.export_account(uuid, jsonb, integer);
drop function service.due_account_deletions(integer);
drop function service.complete_account_deletion(uuid);
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
