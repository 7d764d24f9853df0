-- Undo 3. Subscription system
-- The plans policy reads subscriptions; drop it before the table.
drop policy "plans: users read active plans and their own" on public.plans;
drop trigger refuse_deleting_billed_users on public.users;
drop function private.refuse_deleting_billed_users();
drop table public.usage_counters;
drop table private.stripe_events;
drop table public.subscription_changes;
drop table public.subscriptions;
drop table public.billing_customers;
drop table public.plans;
drop type public.subscription_status;
drop type public.billing_interval;
