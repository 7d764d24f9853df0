-- Undo 8. Billing functions
drop function service.billing_customer(uuid);
drop function service.link_billing_customer(uuid, text);
drop function service.checkout_context(uuid, text);
drop function service.sync_subscription(jsonb);
drop function service.apply_stripe_event(jsonb, jsonb);
drop function private.apply_customer_deletion(text, text, text, timestamptz);
drop function private.apply_subscription_snapshot(jsonb, text, text, timestamptz);
drop function private.plan_for_price(text, text);
