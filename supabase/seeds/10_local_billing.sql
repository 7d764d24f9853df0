-- Local Stripe price ids for the paid plans (test mode objects of the local Stripe stand-in).
-- A real environment sets its own ids: see docs/operations.md.
update public.plans set stripe_price_id = 'price_local_weekly'
  where code = 'weekly' and stripe_price_id is null;
update public.plans set stripe_price_id = 'price_local_monthly'
  where code = 'monthly' and stripe_price_id is null;
