"""Billing: the Stripe webhook, and checkout and portal sessions."""
