"""The evaluation harness: a real database, the fake OpenAI, a local storage directory, and SQS from moto.

Users, sessions and answers are inserted as the superuser; evaluations are requested through the real
service.request_evaluation (which counts them), so charges and refunds are observable in usage_counters.
`poll` plays Lambda's SQS event source mapping: it receives a batch with every attribute, hands the handler
real-shaped records, deletes the records it acknowledged and lets the failed ones become visible again.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from functions.evaluation.api import build_app
from functions.evaluation.queue import EvaluationQueue
from functions.evaluation.settings import EvaluationApiSettings, EvaluationWorkerSettings
from functions.evaluation.worker import build_worker
from shared.ai import AiClient, database_budget, database_usage_sink
from shared.config import DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from tests.support.fake_openai import BASE_URL, FakeOpenAI
from tests.support.identities import give_paid_plan, sign_up, user_claims

JWT_SECRET = "local-jwt-secret-with-at-least-32-characters!"
ISSUER = "http://127.0.0.1:54321/auth/v1"
REGION = "us-east-1"

GOOD_ANSWER = (
    "At my last company our checkout service failed every Friday deploy. I was responsible for the release "
    "process, so I set up a canary stage and I wrote a rollback script. As a result failed deploys fell from "
    "6 a month to 1, and I learned to measure before changing anything."
)


class Harness:
    def __init__(self, database_url: str, storage_dir: Path, **worker_overrides: Any) -> None:
        self.database_url = database_url
        self.conn = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)
        self.fake = FakeOpenAI()
        self.storage_dir = storage_dir
        self.database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=12))
        self.worker_settings = EvaluationWorkerSettings(
            database_url=database_url,
            openai_api_key="sk-test",
            openai_base_url=BASE_URL,
            ai_max_retries=1,
            local_storage_dir=storage_dir,
            **worker_overrides,
        )
        self.ai = AiClient(
            self.worker_settings,
            usage_sink=database_usage_sink(self.database),
            http_client=httpx.Client(transport=self.fake),
            budget=database_budget(self.database, self.worker_settings),
        )
        self.worker = build_worker(self.worker_settings, database=self.database, ai=self.ai)

    # --- people and answers -------------------------------------------------------------------------------

    def user(self, *, paying: bool = True) -> str:
        user = sign_up(self.conn)
        if paying:
            give_paid_plan(self.conn, user)
        return str(user)

    def session(self, user: str) -> str:
        """A quick session (its trigger serves a few questions of its own; answers here add theirs)."""
        row = self.conn.execute(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
        ).fetchone()
        return str(row["id"])

    def question(self, *, category: str = "behavioral", level: str = "mid", user: str | None = None) -> str:
        """A seeded question of the bucket, one not yet served to `user`."""
        row = self.conn.execute(
            "select id from public.questions q where category = %s and experience_level = %s and is_active"
            " and not exists (select from public.session_questions sq where sq.question_id = q.id"
            " and sq.user_id = %s) order by content limit 1",
            (category, level, user),
        ).fetchone()
        return str(row["id"])

    def add_question(
        self,
        content: str,
        criteria: Any,
        *,
        category: str = "behavioral",
        difficulty: str = "medium",
        level: str = "mid",
        key_points: list[str] | None = None,
    ) -> str:
        """A curated question and its answer key (an existing text is reactivated, its key replaced)."""
        row = self.conn.execute(
            "insert into public.questions (content, category, difficulty, experience_level, source)"
            " values (%s, %s, %s, %s, 'curated')"
            " on conflict (md5(private.normalize_question(content))) do update set is_active = true returning id",
            (content, category, difficulty, level),
        ).fetchone()
        self.conn.execute(
            "insert into public.question_answer_keys (question_id, evaluation_criteria, key_points)"
            " values (%s, %s, %s) on conflict (question_id) do update"
            " set evaluation_criteria = excluded.evaluation_criteria, key_points = excluded.key_points",
            (row["id"], json.dumps(criteria), key_points or []),
        )
        return str(row["id"])

    def answer(
        self,
        user: str,
        text: str | None = GOOD_ANSWER,
        *,
        audio_path: str | None = None,
        session: str | None = None,
        question: str | None = None,
        category: str = "behavioral",
        level: str = "mid",
        time_taken_seconds: int | None = 90,
    ) -> str:
        """A response to a question served in `session` (a new one by default)."""
        session = session or self.session(user)
        question = question or self.question(category=category, level=level, user=user)
        # The session's own trigger may already have served the question (new questions rank high).
        served = (
            self.conn.execute(
                "select id from public.session_questions where session_id = %s and question_id = %s",
                (session, question),
            ).fetchone()
            or self.conn.execute(
                "insert into public.session_questions (session_id, user_id, question_id, position)"
                " select %s, %s, %s, coalesce(max(position), 0) + 1 from public.session_questions where session_id = %s"
                " returning id",
                (session, user, question, session),
            ).fetchone()
        )
        row = self.conn.execute(
            "insert into public.responses (session_id, session_question_id, user_id, answer_text, audio_path,"
            " time_taken_seconds) values (%s, %s, %s, %s, %s, %s) returning id",
            (session, served["id"], user, text, audio_path, time_taken_seconds),
        ).fetchone()
        return str(row["id"])

    def request(self, user: str, response_id: str) -> dict[str, Any]:
        """Ask for the evaluation as the API does (counted against the plan, marked queued)."""
        return self.database.call("service.request_evaluation", {"user_id": user, "response_id": response_id})

    def store_audio(self, path: str, content: bytes) -> None:
        file = self.storage_dir / "answers" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)

    # --- what happened ------------------------------------------------------------------------------------

    def row(self, response_id: str) -> dict[str, Any]:
        return self.conn.execute("select * from public.responses where id = %s", (response_id,)).fetchone()

    def charged(self, user: str) -> int:
        """Evaluations counted against the user's plan today."""
        row = self.conn.execute(
            "select coalesce(sum(used), 0) as used from public.usage_counters where user_id = %s"
            " and metric = 'evaluations' and period_start = (now() at time zone 'utc')::date",
            (user,),
        ).fetchone()
        return int(row["used"])

    def evaluate_now(self, *response_ids: str) -> dict[str, Any]:
        """Run the worker on one batch holding a message per response (receive count 1)."""
        return self.worker.handle(event(*response_ids))

    # --- the API ------------------------------------------------------------------------------------------

    def api(self, *, queue: EvaluationQueue | None = None, queue_url: str | None = None) -> TestClient:
        settings = EvaluationApiSettings(
            database_url=self.database_url,
            supabase_jwt_secret=JWT_SECRET,
            supabase_jwt_issuer=ISSUER,
            evaluation_queue_url=queue_url,
        )
        return TestClient(build_app(settings, database=self.database, ai=self.ai, queue=queue))

    def auth(self, user: str) -> dict[str, str]:
        claims = {**user_claims(uuid.UUID(user)), "iss": ISSUER, "exp": int(time.time()) + 600}
        return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}

    def close(self) -> None:
        self.database.close()
        self.conn.close()


def record(body: str, *, receives: int = 1, message_id: str | None = None) -> dict[str, Any]:
    """An SQS record as Lambda delivers it."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receives),
            "SentTimestamp": str(int(time.time() * 1000)),
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:evaluations",
        "awsRegion": REGION,
    }


def event(*response_ids: str, receives: int = 1) -> dict[str, Any]:
    return {"Records": [record(json.dumps({"response_id": r}), receives=receives) for r in response_ids]}


# --- SQS (moto) ---------------------------------------------------------------------------------------------


@dataclass
class Queues:
    sqs: Any
    url: str
    dlq_url: str
    arn: str

    def messages(self, url: str | None = None) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def receive(self, max_messages: int = 10) -> list[dict[str, Any]]:
        received = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=max_messages, AttributeNames=["All"], MessageAttributeNames=["All"]
        )
        return [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.arn,
                "awsRegion": REGION,
            }
            for m in received.get("Messages", [])
        ]

    def poll(self, harness: Harness, max_messages: int = 10) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One round of Lambda's event source mapping with ReportBatchItemFailures."""
        records = self.receive(max_messages)
        if not records:
            return [], {"batchItemFailures": []}
        result = harness.worker.handle({"Records": records})
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for r in records:
            if r["messageId"] in failed:  # the visibility timeout runs out: the message is visible again
                self.sqs.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=r["receiptHandle"], VisibilityTimeout=0
                )
            else:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=r["receiptHandle"])
        return records, result
