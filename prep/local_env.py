"""The settings the local platform runs with: the environment first, dev-only defaults for whatever it leaves unset.

The two secrets a local run needs (the JWT secret access tokens are signed with, and the Stripe webhook signing
secret) are generated once and kept in the git-ignored `.local/dev-secrets.json`, so tokens and signatures stay
valid across restarts. Setting SUPABASE_JWT_SECRET or STRIPE_WEBHOOK_SECRET overrides them (e.g. with the secret
`stripe listen` prints).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path

from pydantic import BaseModel, SecretStr

from prep.localdb import LOCAL_DIR, database_read_url

SECRETS_FILE = LOCAL_DIR / "dev-secrets.json"
# The issuer of the Supabase CLI's local auth server, which the tests' tokens carry too.
LOCAL_AUTH_ISSUER = "http://127.0.0.1:54321/auth/v1"
# What a local web client would be served from (the redirects after Checkout and the billing portal).
LOCAL_WEB_APP = "http://127.0.0.1:3000"


class DevSecrets(BaseModel):
    supabase_jwt_secret: SecretStr
    stripe_webhook_secret: SecretStr


def dev_secrets(path: Path = SECRETS_FILE) -> DevSecrets:
    """The local run's secrets: read from `path`, or generated and saved there (owner-only) on first use."""
    if path.exists():
        return DevSecrets.model_validate_json(path.read_text())
    generated = {
        "supabase_jwt_secret": secrets.token_urlsafe(48),  # Supabase wants at least 32 characters
        "stripe_webhook_secret": "whsec_" + secrets.token_urlsafe(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".dev-secrets-")  # created 0600
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(generated, file, indent=2)
        # link() refuses an existing name: when two processes race, the first file wins and both read it.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return DevSecrets.model_validate_json(path.read_text())


def local_defaults(database_url: str, *, secrets_file: Path = SECRETS_FILE) -> dict[str, str]:
    """The settings the environment leaves unset (or empty), with their local values."""
    defaults = {
        "DATABASE_URL": database_url,
        # One pool for the whole process: four functions and the evaluation worker's threads share it.
        "DB_POOL_SIZE": "8",
        "CHECKOUT_SUCCESS_URL": f"{LOCAL_WEB_APP}/billing/success",
        "CHECKOUT_CANCEL_URL": f"{LOCAL_WEB_APP}/billing/cancel",
        "PORTAL_RETURN_URL": f"{LOCAL_WEB_APP}/account",
    }
    if read_url := database_read_url():  # the local replica, while `prep db replica up` keeps it running
        defaults["DATABASE_READ_URL"] = read_url
    if unset("SUPABASE_JWT_ISSUER") and unset("SUPABASE_URL"):
        defaults["SUPABASE_JWT_ISSUER"] = LOCAL_AUTH_ISSUER
    if unset("SUPABASE_SERVICE_ROLE_KEY"):  # recorded answers are read from a directory rather than Storage
        defaults["LOCAL_STORAGE_DIR"] = str(LOCAL_DIR / "storage")
    if unset("SUPABASE_JWT_SECRET") or unset("STRIPE_WEBHOOK_SECRET"):
        saved = dev_secrets(secrets_file)
        defaults["SUPABASE_JWT_SECRET"] = saved.supabase_jwt_secret.get_secret_value()
        defaults["STRIPE_WEBHOOK_SECRET"] = saved.stripe_webhook_secret.get_secret_value()
    return {name: value for name, value in defaults.items() if unset(name)}


def unset(name: str) -> bool:
    """Not in the environment, or empty: an empty `NAME=` in an env file means unset, as in shared.config."""
    return not os.environ.get(name)


def apply_local_defaults(database_url: str, *, secrets_file: Path = SECRETS_FILE) -> dict[str, str]:
    """Put the local defaults into this process's environment, where every function's settings read them."""
    defaults = local_defaults(database_url, secrets_file=secrets_file)
    os.environ.update(defaults)
    return defaults
