"""The HTTP shape every function shares, and the Lambda entry point in front of it."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from shared.http import create_app, lambda_entrypoint


class Body(BaseModel):
    count: int


@pytest.fixture
def client() -> TestClient:
    app = create_app("test")

    @app.post("/things")
    def make(body: Body) -> dict[str, int]:
        return {"count": body.count}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("database password is hunter2")

    return TestClient(app, raise_server_exceptions=False)


def test_validation_errors_are_422_problems_naming_the_field(client: TestClient) -> None:
    response = client.post("/things", json={"count": "many"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": "body.count", "message": "Input should be a valid integer, unable to parse string as an integer"}
    ]


def test_unexpected_errors_are_500_problems_that_leak_nothing(client: TestClient) -> None:
    response = client.get("/boom", headers={"x-request-id": "req-123"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "req-123"
    assert "hunter2" not in response.text


def test_unknown_routes_are_404_problems(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


def test_the_openapi_document_describes_every_error_as_a_problem(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    responses = document["paths"]["/things"]["post"]["responses"]
    assert set(responses) == {"200", "4XX", "5XX"}  # FastAPI's own 422 schema is never sent
    for status in ("4XX", "5XX"):
        assert list(responses[status]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})


@pytest.mark.usefixtures("in_lambda")
def test_request_ids_are_echoed_and_logged_as_json_in_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    client = TestClient(create_app("test"))  # built in Lambda: JSON lines
    logging.getLogger().handlers[0].stream = sys.stdout  # the handler bound the stdout pytest replaced
    response = client.get("/nowhere", headers={"x-request-id": "req-abc"})
    assert response.headers["x-request-id"] == "req-abc"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    request_line = next(line for line in lines if line["message"] == "request")
    assert request_line["request_id"] == "req-abc"
    assert request_line["status"] == 404
    assert request_line["path"] == "/nowhere"


def test_locally_each_log_record_is_one_readable_line(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger().handlers[0].stream = sys.stdout
    client.post("/things", json={"count": 1}, headers={"x-request-id": "req-abc"})
    logging.getLogger("billing.webhook").warning("stripe event refused", extra={"reason": "Invalid signature: no"})
    lines = capsys.readouterr().out.splitlines()
    request_line = next(line for line in lines if " http: request " in line)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    http: request"
        r" method=POST path=/things status=200 duration_ms=[\d.]+ request_id=req-abc",
        request_line,
    )
    assert not any(line.startswith("{") for line in lines)
    assert lines[-1].endswith('WARNING billing.webhook: stripe event refused reason="Invalid signature: no"')


def test_the_lambda_entry_point_serves_http_api_events() -> None:
    app = create_app("test")

    @app.post("/echo")
    def echo(body: Body) -> dict[str, int]:
        return {"count": body.count * 2}

    handler = lambda_entrypoint(lambda: app)
    event = {
        "version": "2.0",
        "routeKey": "POST /echo",
        "rawPath": "/echo",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-request-id": "lambda-1"},
        "requestContext": {
            "http": {
                "method": "POST",
                "path": "/echo",
                "sourceIp": "1.2.3.4",
                "protocol": "HTTP/1.1",
                "userAgent": "test",
            },
            "stage": "$default",
            "requestId": "r",
            "accountId": "1",
            "apiId": "a",
            "domainName": "x",
            "domainPrefix": "x",
            "routeKey": "POST /echo",
            "time": "25/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": base64.b64encode(b'{"count": 21}').decode(),
        "isBase64Encoded": True,
    }
    response = handler(event, None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"count": 42}
    assert response["headers"]["x-request-id"] == "lambda-1"


def test_billing_functions_import_no_ai_or_supabase_client() -> None:
    probe = (
        "import sys, functions.billing.webhook, functions.billing.api;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'openai', 'supabase', 'postgrest', 'boto3'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
