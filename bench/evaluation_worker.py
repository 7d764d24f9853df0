"""Evaluation worker throughput: evaluations per minute per worker, batch records graded concurrently vs in turn.

    .venv/bin/python -m bench.evaluation_worker [--batches 3] [--batch-size 10] [--latency 2.0] [--db-pool-size 2]

Setup (not timed): a fresh scratch database `prep_bench_evaluation` (stand-in, migrations, seed), one user per
batch and mode with an active monthly subscription, a quick session, BATCH_SIZE typed answers, each requested
through service.request_evaluation (counted, queued) as the API does.

Then the real worker (functions.evaluation.worker, over psycopg with DB_POOL_SIZE connections) handles BATCHES
SQS-shaped events of BATCH_SIZE records, once with a thread pool the size of the batch (as deployed) and once
with a pool of one (sequential), in the same run. The AI is the fake OpenAI transport answering every chat call
after LATENCY seconds, a stand-in for a real grading call; database calls, usage recording and scoring are real.
Target: concurrent >= 5x sequential, every answer evaluated exactly once.

Figures go to bench/out/evaluation_worker.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from bench.database import fresh_scratch_database
from functions.evaluation.settings import EvaluationWorkerSettings
from functions.evaluation.worker import EvaluationWorker, build_worker
from shared.ai import AiClient, database_usage_sink
from shared.config import DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from tests.support.fake_openai import BASE_URL, FakeOpenAI, RecordedRequest, reply
from tests.support.identities import sign_up

DB_NAME = "prep_bench_evaluation"
OUT = Path(__file__).parent / "out" / "evaluation_worker.json"
TARGET_SPEEDUP = 5.0
ANSWER = (
    "At my last company our checkout service failed every Friday deploy. I was responsible for the release "
    "process, so I set up a canary stage and wrote a rollback script. Failed deploys fell from 6 a month to 1."
)
console = Console()


def queued_answers(conn: psycopg.Connection, database: PsycopgDatabase, count: int) -> list[str]:
    """One paying user's `count` answers in a quick session, each requested (counted and queued)."""
    user = sign_up(conn)
    conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select %s, id, 'active', 'cus_' || %s, 'sub_' || %s from public.plans where code = 'monthly'",
        (user, user.hex, user.hex),
    )
    session = conn.execute(
        "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
    ).fetchone()[0]
    ids = []
    for position in range(1, count + 1):
        # Answers to the session's own questions first, then to questions added to it.
        served = (
            conn.execute(
                "select id from public.session_questions where session_id = %s and position = %s", (session, position)
            ).fetchone()
            or conn.execute(
                "insert into public.session_questions (session_id, user_id, question_id, position)"
                " select %s, %s, q.id, %s from public.questions q where not exists (select from"
                " public.session_questions sq where sq.user_id = %s and sq.question_id = q.id) limit 1 returning id",
                (session, user, position, user),
            ).fetchone()
        )
        response = conn.execute(
            "insert into public.responses (session_id, session_question_id, user_id, answer_text, time_taken_seconds)"
            " values (%s, %s, %s, %s, 120) returning id",
            (session, served[0], user, ANSWER),
        ).fetchone()[0]
        database.call("service.request_evaluation", {"user_id": str(user), "response_id": str(response)})
        ids.append(str(response))
    return ids


def batch_event(response_ids: list[str]) -> dict[str, Any]:
    now_ms = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": json.dumps({"response_id": response_id}),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_ms},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:evaluations",
                "awsRegion": "us-east-1",
            }
            for response_id in response_ids
        ]
    }


def slow_grader(latency: float) -> Any:
    """Every chat call answers after `latency` seconds, a middling verdict on the rubric it was asked about."""

    def answer(request: RecordedRequest) -> httpx.Response:
        time.sleep(latency)
        schema = request.body["response_format"]["json_schema"]["schema"]
        names = schema["$defs"]["CriterionGrade"]["properties"]["name"]["enum"]
        verdict = {
            "criteria": [
                {"name": n, "justification": "Adequate, with one concrete example.", "score": 3} for n in names
            ],
            "strengths": ["Concrete numbers"],
            "improvements": ["Say what you learned"],
            "feedback": "A clear answer; add reflection.",
            "injection_suspected": False,
        }
        return reply(verdict)(request)

    return answer


def run(
    mode: str, threads: int, batches: list[list[str]], url: str, args: argparse.Namespace, storage: str
) -> dict[str, Any]:
    fake = FakeOpenAI()
    fake.chat.always(slow_grader(args.latency))
    database = PsycopgDatabase(DatabaseSettings(database_url=url, db_pool_size=args.db_pool_size))
    settings = EvaluationWorkerSettings(
        database_url=url,
        db_pool_size=args.db_pool_size,
        openai_api_key="sk-bench",
        openai_base_url=BASE_URL,
        ai_max_retries=0,
        local_storage_dir=storage,
        evaluation_concurrency=threads,
    )
    ai = AiClient(settings, usage_sink=database_usage_sink(database), http_client=httpx.Client(transport=fake))
    worker: EvaluationWorker = build_worker(settings, database=database, ai=ai)
    batch_seconds = []
    failures = 0
    started = time.perf_counter()
    for batch in batches:
        batch_started = time.perf_counter()
        failures += len(worker.handle(batch_event(batch))["batchItemFailures"])
        batch_seconds.append(time.perf_counter() - batch_started)
    elapsed = time.perf_counter() - started
    database.close()
    evaluations = sum(len(b) for b in batches)
    return {
        "mode": mode,
        "threads": threads,
        "evaluations": evaluations,
        "seconds": round(elapsed, 2),
        "seconds_per_batch": round(sum(batch_seconds) / len(batch_seconds), 2),
        "evaluations_per_minute": round(evaluations / elapsed * 60, 1),
        "ai_calls": fake.chat.calls,
        "batch_item_failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per chat call")
    parser.add_argument("--db-pool-size", type=int, default=2, help="database connections per worker")
    args = parser.parse_args()

    os.environ["LOG_LEVEL"] = "WARNING"  # a log line per evaluation would measure the terminal
    url = fresh_scratch_database(DB_NAME, "evaluation_worker")
    modes = [("concurrent", args.batch_size), ("sequential", 1)]
    with psycopg.connect(url, autocommit=True) as conn:
        setup = PsycopgDatabase(DatabaseSettings(database_url=url))
        work = {mode: [queued_answers(conn, setup, args.batch_size) for _ in range(args.batches)] for mode, _ in modes}
        setup.close()

    with tempfile.TemporaryDirectory() as storage:
        results = [run(mode, threads, work[mode], url, args, storage) for mode, threads in modes]

    with psycopg.connect(url) as conn:
        all_ids = [r for mode in work.values() for batch in mode for r in batch]
        completed, charged = conn.execute(
            "select count(*) filter (where evaluation_status = 'completed'),"
            " (select coalesce(sum(used), 0) from public.usage_counters where metric = 'evaluations')"
            " from public.responses where id = any(%s::uuid[])",
            (all_ids,),
        ).fetchone()
    concurrent, sequential = results
    speedup = concurrent["evaluations_per_minute"] / sequential["evaluations_per_minute"]
    figures = {
        "batch_size": args.batch_size,
        "batches_per_mode": args.batches,
        "ai_latency_seconds": args.latency,
        "db_pool_size": args.db_pool_size,
        "runs": results,
        "speedup": round(speedup, 2),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "answers": len(all_ids),
        "evaluated": completed,
        "evaluations_charged": int(charged),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }

    table = Table(
        title=f"Evaluation worker: {args.batches} batches of {args.batch_size}, fake AI at {args.latency:g} s a call, "
        f"{args.db_pool_size} DB connections"
    )
    for column in ("mode", "threads", "evals", "seconds", "s/batch", "evals/min", "AI calls"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for r in results:
        table.add_row(
            r["mode"],
            str(r["threads"]),
            str(r["evaluations"]),
            f"{r['seconds']:.2f}",
            f"{r['seconds_per_batch']:.2f}",
            f"{r['evaluations_per_minute']:.1f}",
            str(r["ai_calls"]),
        )
    console.print(table)
    verdict = "meets" if figures["meets_target"] else "MISSES"
    console.print(
        f"speedup {speedup:.2f}x ({verdict} the >= {TARGET_SPEEDUP:g}x target); {completed}/{len(all_ids)} evaluated"
    )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
