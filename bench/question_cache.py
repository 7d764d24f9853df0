"""Question cache effectiveness: how much of what users are served comes from the bank, and what AI it costs.

    .venv/bin/python -m bench.question_cache [--users 10000 --requests 100000 --workers 4]

Setup (not timed): a fresh scratch database `prep_bench_cache` (stand-in, migrations, the seed's 360 curated
questions: 4 per bucket), USERS users each with an active monthly subscription. It is kept afterwards for
inspection and dropped by the next run.

Then REQUESTS requests go through the real engine, in process: QuestionEngine.serve over the psycopg gateway
(PsycopgDatabase), WORKERS threads, with the AI client wired to the fake OpenAI transport. The fake writes as
many distinct questions as each prompt asks for, from phrase lists whose lengths are pairwise coprime, so no
two generated questions share more than three of their five phrases; what the near-duplicate check still drops
is counted. service.rollup_question_stats, then service.curate_questions (which admits provisional questions),
runs every ROLLUP_EVERY completed requests, alongside the serving, like the schedule (and like it, never two at
once: one due while the last still runs is skipped). No AI latency is simulated: requests/s is the engine's and
the database's own cost.

Traffic, drawn with a fixed seed:
- bucket (category x difficulty x experience level, 90): Zipf (s=1) over the buckets in a shuffled order;
- target role: Zipf (s=1) over none and 8 roles; tags: none (50%), one (35%) or two (15%), Zipf over 24 tags;
- count: 1 to 5, uniform;
- user: each user's activity is lognormal (sigma 1.2), so a few heavy users make hundreds of requests.
The monthly plan allows 100 question requests and 20 practice sessions (each request without a session_id
starts one) per user per UTC day. This run packs weeks of traffic into minutes of one UTC day, so the scratch
database raises both limits instead of capping the heavy users: their long histories are what exhausts buckets
and drives generation, which is what is measured here.

Targets: >= 95% of served questions from the bank after warm-up (the first WARMUP share of requests), no
question served twice to one user.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, get_args

import httpx
import psycopg
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.database import fresh_scratch_database, write_marker
from bench.questions_common import caption, console, machine, now_iso, revision, write_report
from functions.questions.api import Category, Difficulty, Level, QuestionEngine, QuestionRequest
from functions.questions.settings import QuestionsSettings
from prep.localdb import database_url
from shared.ai import AiClient, database_budget, database_usage_sink
from shared.auth import AuthenticatedUser
from shared.config import DatabaseSettings
from shared.db import DatabaseError
from shared.db.psycopg_transport import PsycopgDatabase
from tests.support.fake_openai import BASE_URL, FakeOpenAI, RecordedRequest, completion

DB_NAME = "prep_bench_cache"
MARKER = {"benchmark": "question_cache"}
TARGET_BANK_SHARE = 0.95
DAY_LIMIT = 1_000_000  # the monthly plan's per-day limits in the scratch database (see above)
SCHEDULE_STATEMENT_TIMEOUT_MS = 300_000  # serverless.yml, analyticsSchedule: DB_STATEMENT_TIMEOUT_MS

ROLES: list[str | None] = [
    None,
    "software engineer",
    "product manager",
    "data scientist",
    "engineering manager",
    "designer",
    "data engineer",
    "site reliability engineer",
    "solutions architect",
]
# The curated bank's most common tags first, then others users type.
TAGS = [
    "communication", "stakeholder-management", "prioritization", "system-design", "collaboration", "strategy",
    "decision-making", "ownership", "metrics", "conflict-resolution", "feedback", "mentoring", "debugging",
    "scalability", "estimation", "hiring", "trade-offs", "incident-response", "culture", "ambiguity",
    "technical-debt", "sql", "leadership", "negotiation",
]  # fmt: skip
TAG_COUNTS = {0: 0.50, 1: 0.35, 2: 0.15}


# The fake model's phrases. Lengths 7, 31, 23, 37 and 29 are pairwise coprime: question k takes phrase k mod
# length from each list, so two questions share four phrases only if their numbers differ by a multiple of
# 7 * 23 * 29 * 31 = 144,739, more than any run writes.
@dataclass(frozen=True)
class Phrases:
    openers: list[str]  # 7
    subjects: list[str]  # 31
    tag: str


# fmt: off
PHRASES: dict[str, Phrases] = {
    "behavioral": Phrases(
        [
            "Tell me about a time you dealt with", "Describe a situation where you had to handle",
            "Give an example of when you faced", "Walk me through a moment when you ran into",
            "Share an experience where you were responsible for", "Recall a time you took ownership of",
            "Talk about a period when you worked through",
        ],
        [
            "a teammate who missed every code freeze", "a customer escalation that reached the CEO",
            "a project whose scope doubled halfway through", "a release that broke the checkout flow",
            "an onboarding plan nobody followed", "a vendor that missed its delivery date",
            "a hiring loop that rejected every candidate", "a migration that ran three months late",
            "a flaky test suite that blocked releases", "a reorganisation that split your team",
            "feedback you strongly disagreed with", "a budget cut announced mid-quarter",
            "a partner team with conflicting goals", "an outage caused by your own change",
            "a presentation to sceptical executives", "a handover from a departing colleague",
            "a mistake in a report sent to clients", "a decision made without enough data",
            "an overloaded support queue", "an unpopular process change", "a prototype that users hated",
            "a compliance audit with a tight deadline", "a conflict between two senior colleagues",
            "a missed quarterly target", "a request to cut corners on quality",
            "a new tool the team resisted adopting", "an accessibility complaint from a user",
            "a pricing error discovered after launch", "a mentee who was struggling",
            "a security incident reported on a weekend", "a roadmap that changed every sprint",
        ],
        "experience",
    ),
    "technical": Phrases(
        [
            "How would you design", "Walk me through how you would build", "How would you scale",
            "What architecture would you propose for", "How would you test and roll out",
            "How would you improve the reliability of", "How would you migrate",
        ],
        [
            "a rate limiter for a public API", "a notification service that fans out to millions of devices",
            "a search autocomplete backed by recent queries", "an audit log that must never lose a write",
            "a feature flag system used by every team", "a payments ledger with double-entry bookkeeping",
            "a URL shortener with click analytics", "a job queue with retries and dead letters",
            "a real-time leaderboard for an online game", "a file upload pipeline with virus scanning",
            "a multi-tenant reporting database", "a recommendation feed for a news app",
            "a chat backend with read receipts", "a metrics pipeline ingesting billions of events",
            "a configuration service with instant rollback", "a geospatial index for nearby drivers",
            "a booking system that prevents double bookings", "an inventory service shared by several warehouses",
            "a webhook delivery system with signatures", "a session store for a global web app",
            "a data export tool for very large accounts", "a caching layer in front of a slow legacy API",
            "an image thumbnail service", "a schema migration process with zero downtime",
            "a single sign-on integration for enterprise customers",
            "a fraud scoring service with a strict latency budget", "a mobile sync engine that works offline",
            "a document collaboration backend", "a billing system for usage-based pricing",
            "an event sourcing store for orders", "a vector search service for support articles",
        ],
        "system-design",
    ),
    "situational": Phrases(
        [
            "What would you do if you inherited", "Imagine you are handed", "Suppose you discover",
            "How would you respond to", "What steps would you take when facing", "How would you handle",
            "Picture your first week dealing with",
        ],
        [
            "a critical bug reported an hour before a launch", "two managers giving you contradictory priorities",
            "a colleague taking credit for your analysis", "a client demanding a feature outside the contract",
            "a production database running out of disk", "a teammate who stopped replying to messages",
            "an estimate that turned out to be three times too low", "a dashboard showing numbers finance disputes",
            "an intern who deleted a shared folder", "a vendor contract renewing at double the price",
            "a key engineer resigning mid-project", "a demo environment that fails the morning of a pitch",
            "a policy that seems to harm customers", "a request to share data you think is confidential",
            "a customer threatening to churn over one bug", "a meeting where nobody agrees on the goal",
            "a rollout that increases support tickets", "a team that ignores the agreed process",
            "a late change request from legal", "a translated release full of errors",
            "an experiment with contradictory results", "a peer reviewer who blocks every change",
            "a manager asking you to work every weekend", "a spreadsheet model with a hidden formula error",
            "an angry message posted in a public channel", "a handoff with missing documentation",
            "an unrealistic deadline set by sales", "a project sponsor who disappears",
            "a tool outage during month-end close", "a whistleblower complaint about your team",
            "a budget request that was denied",
        ],
        "judgement",
    ),
    "leadership": Phrases(
        [
            "How would you lead a team through", "Describe how you would guide your organisation through",
            "How would you build alignment around", "What would your plan be for",
            "How would you coach your managers through", "How would you set direction during",
            "How would you communicate and drive",
        ],
        [
            "a merger of two engineering teams", "a shift from project to product teams",
            "a hiring freeze after rapid growth", "a drop in engagement survey scores",
            "the loss of your biggest customer", "a four-day work week trial", "a platform rewrite that competes "
            "with feature work", "a new remote-first policy", "a layoff affecting a third of the department",
            "a strategy pivot announced by the board", "the first year of a new product line",
            "a culture of blame after repeated incidents", "an expansion into a new country",
            "the promotion of a peer above you", "a critical audit finding", "a decision to sunset a beloved product",
            "the adoption of on-call for every engineer", "a quarter with no clear roadmap",
            "tension between sales and engineering", "a succession plan for yourself",
            "a diversity target the team is missing", "a reduction of cloud spending by a quarter",
            "the integration of an acquired startup", "a backlog of performance reviews",
            "a move from annual to quarterly planning", "a public security breach",
            "burnout across a high-performing team", "the launch of a company-wide mentoring programme",
            "a conflict between two of your direct reports", "the handover of a product you built to another group",
            "a demand to double delivery speed",
        ],
        "leadership",
    ),
    "problem_solving": Phrases(
        [
            "How would you estimate", "How would you diagnose", "Walk me through how you would analyse",
            "How would you find the root cause of", "How would you break down",
            "What framework would you use to evaluate", "How would you prioritise fixes for",
        ],
        [
            "a sudden drop in weekly active users", "the number of parking spaces needed for a stadium",
            "a checkout conversion rate that fell overnight", "rising cloud costs with flat traffic",
            "a spike in password reset requests", "declining response rates to a survey",
            "the market size for electric bike rentals", "warehouse delays that appear only on Mondays",
            "slow page loads reported by a single region", "duplicate charges appearing in invoices",
            "a churn increase among annual subscribers", "a recommendation model that stopped improving",
            "the staffing needed for a new call centre", "the demand for coffee on a university campus",
            "an increase in returned orders for one product", "the cause of intermittent login failures",
            "unexplained variance in delivery times", "a backlog of support tickets that keeps growing",
            "the impact of a price increase on revenue", "a supplier quality problem with no clear pattern",
            "a memory leak that appears after several days", "the number of servers needed for a product launch",
            "inconsistent numbers across two analytics tools", "a fall in app store ratings",
            "queue times at an airport security checkpoint", "energy use that rises while output falls",
            "the trade-off between speed and accuracy in fraud review", "conflicting results from two A/B tests",
            "a spike in abandoned carts on mobile", "the cost of a one-hour outage",
            "the optimal number of delivery hubs in a city",
        ],
        "analytical-thinking",
    ),
    "culture_fit": Phrases(
        [
            "What does it look like for you to contribute to", "How do you personally support",
            "How would you react to joining", "What role do you play in", "How do you adapt to",
            "What would you change about", "How do you stay motivated in",
        ],
        [
            "a team that writes everything down", "a workplace with radical candour",
            "an environment with very little process", "a company that ships every day",
            "a culture of blameless postmortems", "a team spread over eight time zones",
            "a flat organisation without managers", "a mission-driven nonprofit",
            "a startup that changes direction often", "a company that values deep focus over meetings",
            "a customer-obsessed support culture", "an organisation that promotes from within",
            "a team that celebrates failure as learning", "a highly regulated bank",
            "an open-source first engineering culture", "a workplace that expects public demos every week",
            "a team with strong opinions on code style", "a culture of peer feedback every month",
            "an office with hot desks and no fixed seats", "a company that shares all financials openly",
            "a team where juniors lead projects", "an environment with high autonomy and little guidance",
            "a hospital where mistakes are costly", "a fast-paced sales floor",
            "a research lab with long feedback cycles", "a company that rewards experimentation",
            "a team that pairs on all work", "a family-owned business with long traditions",
            "a culture that discourages working late", "a company that donates time to the community",
            "a team with many new graduates",
        ],
        "values",
    ),
}
# fmt: on
CONTEXTS = [
    "at a fast-growing fintech startup",
    "in a hospital IT department",
    "for a global e-commerce marketplace",
    "inside a public sector agency",
    "at a two-hundred-person SaaS company",
    "for a logistics company with old systems",
    "at a media company with seasonal traffic",
    "in a heavily regulated insurer",
    "for a mobile game studio",
    "at a consulting firm serving banks",
    "inside a retail chain with hundreds of stores",
    "for a nonprofit run by volunteers",
    "at a travel booking platform",
    "in a manufacturing plant",
    "for an education technology provider",
    "at a telecom operator",
    "within a research university",
    "for a food delivery service",
    "at an energy utility",
    "for a real estate listings site",
    "inside a cybersecurity vendor",
    "at a car rental company",
    "for a streaming music service",
]  # fmt: skip
CONSTRAINTS = [
    "with only two engineers this quarter", "when the deadline cannot move", "while the main expert is on leave",
    "with a budget that was just cut in half", "after a failed audit last year", "when traffic doubles every month",
    "with customers in twelve countries", "while the legacy system must keep running",
    "with no reliable data to start from", "when leadership expects results in six weeks",
    "while a competitor launches the same thing", "with strict privacy rules on customer data",
    "when the team has never worked together", "after two previous attempts were abandoned",
    "with stakeholders who disagree on success", "while onboarding five new hires",
    "with half the team in another time zone", "when every change needs a security review",
    "while support is already overloaded", "with an outsourced partner doing the build",
    "under a contract with heavy penalties", "when the original requirements are lost",
    "with a product manager who just joined", "while moving to a new cloud provider",
    "with users who rely on it around the clock", "when the board is watching closely",
    "with a hard limit on infrastructure spend", "after a public incident damaged trust",
    "while regulations are still changing", "with only anecdotal feedback from users",
    "when the code has no automated tests", "with a union agreement on working hours",
    "while the company is preparing to raise funding", "with data spread over four systems",
    "when the launch date was announced publicly", "while a key supplier is unreliable",
    "with accessibility requirements from a large client",
]  # fmt: skip
ANGLES = [
    "Walk through the first decision you would make and why.", "What would you measure to know it worked?",
    "Which trade-offs would you accept, and which not?", "What risks would you raise first?",
    "How would you explain your plan to a non-technical executive?", "What would you deliberately not do?",
    "Who would you involve, and when?", "What would a good outcome look like after three months?",
    "How would you know you were wrong?", "What would you do differently the second time?",
    "How would you keep the team informed along the way?", "What assumptions would you test before committing?",
    "How would you split the work into milestones?", "What would you escalate, and to whom?",
    "Which early warning signs would you watch for?", "How would you handle pushback on your approach?",
    "What data would you ask for first?", "How would you balance speed and quality here?",
    "What would you document for the people after you?", "How would you decide when to stop?",
    "What support would you ask for?", "How would you make the result last?", "Which part would worry you most?",
    "How would you prioritise if time ran short?", "What would you learn from the users first?",
    "How would you share credit and responsibility?", "What would you try in the first week?",
    "How would you recover if the first attempt failed?", "Which lessons from past work would you apply?",
]  # fmt: skip

REQUEST_BLOCK = re.compile(r"<<<request\n(.*?)\n>>>request", re.DOTALL)
HOW_MANY = re.compile(r"Write (\d+) new interview questions")


class QuestionWriter:
    """The fake model's answer to a generation prompt: the number of questions asked for, all distinct."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = 0

    def __call__(self, request: RecordedRequest) -> httpx.Response:
        prompt = request.text_of("user")
        block, how_many = REQUEST_BLOCK.search(prompt), HOW_MANY.search(prompt)
        if block is None or how_many is None:
            raise AssertionError(f"not a question generation prompt: {prompt[:200]!r}")
        fields, count = json.loads(block.group(1)), int(how_many.group(1))
        with self._lock:
            first = self.written
            self.written += count
        questions = [self._question(first + k, fields) for k in range(count)]
        return completion(request, content=json.dumps({"questions": questions}))

    @staticmethod
    def _question(k: int, fields: dict[str, Any]) -> dict[str, Any]:
        phrases = PHRASES[fields["category"]]
        text = (
            f"{phrases.openers[k % 7]} {phrases.subjects[k % 31]} {CONTEXTS[k % 23]}, {CONSTRAINTS[k % 37]}? "
            f"{ANGLES[k % 29]}"
        )
        if fields.get("target_role"):
            text = f"For a {fields['target_role']} role: {text}"
        return {
            "content": text,
            "tags": [*(fields.get("tags") or []), phrases.tag][:5],
            "evaluation_criteria": [
                {"name": "structure", "description": "Frames the problem before answering", "weight": 0.3},
                {"name": "judgement", "description": "Weighs the trade-offs the situation forces", "weight": 0.4},
                {"name": "outcome", "description": "Says how success would be measured", "weight": 0.3},
            ],
            "key_points": ["Names the constraint that matters most", "Commits to a first concrete step"],
        }


@dataclass(frozen=True)
class Planned:
    user: int
    request: QuestionRequest


@dataclass
class Outcome:
    asked: int
    ids: list[str] = field(default_factory=list)
    bank: int = 0
    generated: int = 0
    status: str = "error"
    ai_calls: int = 0
    widenings: list[str] = field(default_factory=list)
    dropped: tuple[int, int] = (0, 0)  # duplicates, paraphrases
    error: str | None = None


def zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (rank + 1) ** s for rank in range(n)]


def plan_traffic(rng: random.Random, users: int, requests: int) -> tuple[list[Planned], list[tuple[str, ...]]]:
    buckets = [(c, d, lv) for c in get_args(Category) for d in get_args(Difficulty) for lv in get_args(Level)]
    rng.shuffle(buckets)  # popularity order; the Zipf weights follow it
    activity = [rng.lognormvariate(0, 1.2) for _ in range(users)]
    picked_users = rng.choices(range(users), weights=activity, k=requests)
    picked_buckets = rng.choices(buckets, weights=zipf(len(buckets)), k=requests)
    roles = rng.choices(ROLES, weights=zipf(len(ROLES)), k=requests)
    tag_counts = rng.choices(list(TAG_COUNTS), weights=list(TAG_COUNTS.values()), k=requests)
    tag_weights = zipf(len(TAGS))
    plan = []
    for user, (category, difficulty, level), role, tag_count in zip(
        picked_users, picked_buckets, roles, tag_counts, strict=True
    ):
        tags = sorted(set(rng.choices(TAGS, weights=tag_weights, k=tag_count)))
        request = QuestionRequest(
            category=category,
            difficulty=difficulty,
            experience_level=level,
            target_role=role,
            tags=tags,
            count=rng.randint(1, 5),
        )
        plan.append(Planned(user, request))
    return plan, buckets


def create_users(conn: psycopg.Connection, count: int) -> list[uuid.UUID]:
    """Sign-ups as the auth server writes them (the signup trigger makes public.users), each on the monthly plan."""
    ids = [uuid.uuid4() for _ in range(count)]
    with conn.transaction():
        conn.execute(
            """
            insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
                                    email_confirmed_at, created_at, updated_at)
            select '00000000-0000-0000-0000-000000000000', id, 'authenticated', 'authenticated',
                   'cache-' || id || '@bench.example', '{"provider": "email", "providers": ["email"]}', '{}',
                   now(), now(), now()
            from unnest(%s::uuid[]) id
            """,
            (ids,),
        )
        conn.execute(
            """
            insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id,
                                              current_period_start, current_period_end)
            select u, p.id, 'active', 'cus_' || replace(u::text, '-', ''), 'sub_' || replace(u::text, '-', ''),
                   now(), now() + interval '30 days'
            from unnest(%s::uuid[]) u cross join public.plans p where p.code = 'monthly'
            """,
            (ids,),
        )
        conn.execute(
            "update public.plans set usage_limits.question_requests = %(limit)s,"
            " usage_limits.practice_sessions = %(limit)s where code = 'monthly'",
            {"limit": DAY_LIMIT},
        )
    conn.execute("vacuum analyze")
    return ids


DROPPED = re.compile(r"dropped (\d+) duplicates and (\d+) paraphrases")


class Simulation:
    def __init__(self, url: str, users: list[uuid.UUID], workers: int, rollup_every: int) -> None:
        self.fake = FakeOpenAI()
        self.writer = QuestionWriter()
        self.fake.chat.always(self.writer)
        settings = QuestionsSettings(
            database_url=url,
            supabase_jwt_secret="bench-jwt-secret-with-at-least-32-characters!",
            supabase_jwt_issuer="http://127.0.0.1:54321/auth/v1",
            openai_api_key="sk-bench",
            openai_base_url=BASE_URL,
        )
        self.database = PsycopgDatabase(DatabaseSettings(database_url=url, db_pool_size=workers + 1))
        # The rollup and curation steps run as the analytics schedule runs them (serverless.yml: statements of up
        # to 300 s), not under the request timeout the serving gateway has (10 s), which they outgrow here.
        self.schedule_database = PsycopgDatabase(
            DatabaseSettings(database_url=url, db_pool_size=1, db_statement_timeout_ms=SCHEDULE_STATEMENT_TIMEOUT_MS)
        )
        ai = AiClient(
            settings,
            usage_sink=database_usage_sink(self.database),
            http_client=httpx.Client(transport=self.fake),
            budget=database_budget(self.database, settings),
        )
        self.engine = QuestionEngine(settings, self.database, ai)
        self.users = [AuthenticatedUser(claims={"sub": str(u), "role": "authenticated"}, token="") for u in users]
        self.workers = workers
        self.rollup_every = rollup_every
        self.rollups: list[dict[str, Any]] = []
        self.rollups_skipped = 0
        self._rollup_running = threading.Lock()
        self._lock = threading.Lock()

    def run(self, plan: list[Planned]) -> tuple[list[Outcome], float]:
        outcomes: list[Outcome | None] = [None] * len(plan)
        cursor = iter(range(len(plan)))
        completed = 0
        columns = (TextColumn("requests"), BarColumn(bar_width=30), TextColumn("{task.completed:,.0f}"))
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("serve", total=len(plan))

            def work() -> None:
                nonlocal completed
                while True:
                    with self._lock:
                        index = next(cursor, None)
                    if index is None:
                        return
                    outcomes[index] = self._serve(plan[index])
                    with self._lock:
                        completed += 1
                        rollup_due = completed % self.rollup_every == 0
                    if rollup_due:
                        self._rollup(completed)
                    progress.advance(task)

            started = time.perf_counter()
            threads = [threading.Thread(target=work) for _ in range(self.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        return [o for o in outcomes if o is not None], elapsed

    def _serve(self, planned: Planned) -> Outcome:
        outcome = Outcome(asked=planned.request.count)
        try:
            served = self.engine.serve(self.users[planned.user], planned.request)
        except DatabaseError as error:
            outcome.error = f"{error.status} {error.title}: {error.detail}"
            return outcome
        outcome.ids = [str(q.id) for q in served.questions]
        outcome.bank, outcome.generated = served.from_bank, served.generated
        outcome.status, outcome.ai_calls = served.generation.status, served.generation.ai_calls
        outcome.widenings = [q.widening or "?" for q in served.questions]
        if dropped := DROPPED.search(served.generation.detail):
            outcome.dropped = (int(dropped.group(1)), int(dropped.group(2)))
        return outcome

    def _rollup(self, after: int) -> None:
        # Schedule runs never overlap (reserved concurrency 1): one due while the last still runs is skipped.
        if not self._rollup_running.acquire(blocking=False):
            self.rollups_skipped += 1
            return
        try:
            self._run_rollup(after)
        finally:
            self._rollup_running.release()

    def _run_rollup(self, after: int) -> None:
        started = time.perf_counter()
        try:
            result = self.schedule_database.call("service.rollup_question_stats")
            # As the schedule: the curation step after the rollup admits the provisional questions (migration 23).
            result = {**(result or {}), **self.schedule_database.call("service.curate_questions")}
        except DatabaseError as error:  # counted: a failed rollup is a finding, not a reason to stop serving
            result = {"error": f"{error.status} {error.title}: {error.detail}"}
        self.rollups.append({"after_requests": after, "seconds": time.perf_counter() - started, **(result or {})})


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def window(outcomes: list[Outcome]) -> dict[str, Any]:
    served = sum(len(o.ids) for o in outcomes)
    bank = sum(o.bank for o in outcomes)
    ai_calls = sum(o.ai_calls for o in outcomes)
    # On the requested role, level and tags: the first step of selection, or generated for this very request.
    exact = sum(w in ("exact", "generated") for o in outcomes for w in o.widenings)
    return {
        "requests": len(outcomes),
        "asked": sum(o.asked for o in outcomes),
        "served": served,
        "from_bank": bank,
        "generated": sum(o.generated for o in outcomes),
        "bank_share": share(bank, served),
        "exact_share": share(exact, served),
        "ai_calls": ai_calls,
        "ai_calls_per_1000_served": 1000 * share(ai_calls, served),
        "short": sum(o.asked - len(o.ids) for o in outcomes),
    }


def verify(conn: psycopg.Connection, plan: list[Planned], outcomes: list[Outcome], users: list[uuid.UUID]) -> dict:
    """Repeats from the served lists and from session_questions, and whether the rollup's counts add up."""
    per_user: dict[int, list[str]] = defaultdict(list)
    for planned, outcome in zip(plan, outcomes, strict=True):
        per_user[planned.user] += outcome.ids
    listed = sum(len(ids) for ids in per_user.values())
    repeats_in_lists = sum(len(ids) - len(set(ids)) for ids in per_user.values())
    row = conn.execute(
        "select count(*), count(distinct (user_id, question_id)) from public.session_questions"
    ).fetchone()
    rows, distinct_pairs = row if row else (0, 0)
    # Every listed question is on record for the user who was served it.
    recorded = conn.execute(
        """
        select count(*) from unnest(%s::uuid[], %s::uuid[]) l (user_id, question_id)
        join public.session_questions s using (user_id, question_id)
        """,
        ([users[u] for u, ids in per_user.items() for _ in ids], [i for ids in per_user.values() for i in ids]),
    ).fetchone()
    conn.execute("select service.rollup_question_stats()")
    usage = conn.execute("select sum(usage_count) from public.questions").fetchone()
    return {
        "served_in_lists": listed,
        "repeats_in_lists": repeats_in_lists,
        "session_questions_rows": rows,
        "repeats_in_session_questions": rows - distinct_pairs,
        "listed_and_recorded": recorded[0] if recorded else 0,
        "usage_count_sum_after_final_rollup": int(usage[0] or 0) if usage else 0,
    }


def update_blocks_serving(url: str) -> bool:
    """Whether an UPDATE of a question, as the rollup makes, blocks the FOR KEY SHARE lock that serving takes on
    it (the foreign key check of each session_questions insert): if so, rollup and serving can deadlock."""
    with psycopg.connect(url) as updater, psycopg.connect(url, autocommit=True) as server:
        row = updater.execute("select id from public.questions limit 1").fetchone()
        assert row is not None
        updater.execute("update public.questions set usage_count = usage_count where id = %s", row)
        server.execute("set lock_timeout = '200ms'")
        try:
            server.execute("select from public.questions where id = %s for key share", row)
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            updater.rollback()
        return False


def bank_growth(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "select count(*) filter (where source = 'curated'), count(*) filter (where source = 'ai') from public.questions"
    ).fetchone()
    buckets = conn.execute(
        """
        select category::text || '/' || difficulty::text || '/' || experience_level::text, count(*)
        from public.questions where source = 'ai' group by 1 order by 2 desc limit 5
        """
    ).fetchall()
    spend = conn.execute(
        "select (service.ai_budget() ->> 'platform_spent_usd')::numeric, count(*) from public.ai_usage"
    ).fetchone()
    return {
        "curated": row[0] if row else 0,
        "generated_added": row[1] if row else 0,
        "top_buckets_by_generated": dict(buckets),
        "ai_spend_usd": float(spend[0]) if spend else 0.0,
        "ai_usage_rows": spend[1] if spend else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4, help="threads serving requests (default 4)")
    parser.add_argument("--rollup-every", type=int, default=5_000, help="completed requests between rollups")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of requests counted as warm-up")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    plan, buckets = plan_traffic(rng, args.users, args.requests)
    server = database_url()
    console.print(f"Scratch database {DB_NAME}: migrating, seeding, {args.users:,} users on the monthly plan")
    url = fresh_scratch_database(DB_NAME, MARKER["benchmark"])
    with psycopg.connect(url, autocommit=True) as conn:
        measured = revision(conn)  # before the run: others may edit the checkout meanwhile
        users = create_users(conn, args.users)
        simulation = Simulation(url, users, args.workers, args.rollup_every)
        outcomes, elapsed = simulation.run(plan)
        simulation.database.close()
        simulation.schedule_database.close()
        checks = verify(conn, plan, outcomes, users)
        checks["question_update_blocks_serving_lock"] = update_blocks_serving(url)
        bank = bank_growth(conn)
        machine_info = machine(conn)
        with psycopg.connect(server, autocommit=True) as admin:
            write_marker(admin, DB_NAME, {**MARKER, "state": "complete", "date": now_iso()})

    warm = int(len(outcomes) * args.warmup)
    per_user = Counter(p.user for p in plan)
    heaviest = sorted(per_user.values(), reverse=True)
    statuses = Counter(o.status for o in outcomes)
    tenths = [outcomes[len(outcomes) * d // 10 : len(outcomes) * (d + 1) // 10] for d in range(10)]
    report: dict[str, Any] = {
        "benchmark": "question_cache",
        "date": now_iso(),
        "machine": machine_info,
        "revision": measured,
        "database": DB_NAME,
        "parameters": {**vars(args), "day_limit_raised_to": DAY_LIMIT, "prefetch": 3},
        "traffic": {
            "top_buckets": ["/".join(b) for b in buckets[:5]],
            "requests_per_user": {
                "max": heaviest[0],
                "median_active": statistics.median(heaviest),
                "users_active": len(per_user),
                "users_over_100": sum(n > 100 for n in heaviest),
                "top_1pct_share": share(sum(heaviest[: max(1, args.users // 100)]), len(plan)),
            },
        },
        "seconds": elapsed,
        "requests_per_second": len(outcomes) / elapsed,
        "overall": window(outcomes),
        "after_warmup": window(outcomes[warm:]),
        "by_tenth": [window(t) for t in tenths],
        "ai": {
            "calls_total": simulation.fake.chat.calls,
            "questions_written": simulation.writer.written,
            "dropped_duplicates": sum(o.dropped[0] for o in outcomes),
            "dropped_paraphrases": sum(o.dropped[1] for o in outcomes),
        },
        "bank": bank,
        "generation_status": dict(statuses),
        "widening": dict(Counter(w for o in outcomes for w in o.widenings)),
        "errors": dict(Counter(o.error for o in outcomes if o.error)),
        "rollups": {
            "runs": len(simulation.rollups),
            "median_seconds": statistics.median(r["seconds"] for r in simulation.rollups) if simulation.rollups else 0,
            "max_seconds": max((r["seconds"] for r in simulation.rollups), default=0),
            "failed": sum("error" in r for r in simulation.rollups),
            "skipped_while_one_ran": simulation.rollups_skipped,
            "questions_updated": [r.get("questions_updated", r.get("error")) for r in simulation.rollups],
        },
        "checks": checks,
        "target_bank_share_after_warmup": TARGET_BANK_SHARE,
    }
    print_report(report)
    write_report("question_cache", report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    table = Table(title="Question cache: served from the bank vs generated", caption=caption(report))
    columns = ("window", "requests", "served", "bank %", "exact %", "generated", "AI calls", "AI / 1k served", "short")
    for column in columns:
        table.add_column(column, justify="left" if column == "window" else "right")
    rows = [("all", report["overall"]), ("after warm-up", report["after_warmup"])]
    rows += [(f"tenth {i + 1}", w) for i, w in enumerate(report["by_tenth"])]
    for name, w in rows:
        colour = "green" if w["bank_share"] >= report["target_bank_share_after_warmup"] else "red"
        table.add_row(
            name,
            f"{w['requests']:,}",
            f"{w['served']:,}",
            f"[{colour}]{100 * w['bank_share']:.2f}[/{colour}]",
            f"{100 * w['exact_share']:.2f}",
            f"{w['generated']:,}",
            f"{w['ai_calls']:,}",
            f"{w['ai_calls_per_1000_served']:.2f}",
            f"{w['short']:,}",
        )
    console.print(table)

    ai, bank, checks, rollups = report["ai"], report["bank"], report["checks"], report["rollups"]
    traffic = report["traffic"]["requests_per_user"]
    facts = Table(title="Run", show_header=False)
    facts.add_column("what")
    facts.add_column("value", justify="right")
    kept = ai["questions_written"] - ai["dropped_duplicates"] - ai["dropped_paraphrases"]
    for what, value in [
        (f"requests/s ({report['parameters']['workers']} workers)", f"{report['requests_per_second']:.0f}"),
        ("seconds", f"{report['seconds']:.0f}"),
        ("AI calls (fake transport)", f"{ai['calls_total']:,}"),
        ("questions written by the model", f"{ai['questions_written']:,}"),
        ("dropped: duplicates / paraphrases", f"{ai['dropped_duplicates']:,} / {ai['dropped_paraphrases']:,}"),
        ("kept (written - dropped)", f"{kept:,}"),
        ("bank grew by (source = 'ai')", f"{bank['generated_added']:,} (curated {bank['curated']:,})"),
        ("AI spend today (USD)", f"{bank['ai_spend_usd']:.4f}"),
        ("generation outcomes", ", ".join(f"{k} {v:,}" for k, v in report["generation_status"].items())),
        ("widening of served questions", ", ".join(f"{k} {v:,}" for k, v in report["widening"].items())),
        ("errors", ", ".join(f"{k} x{v}" for k, v in report["errors"].items()) or "none"),
        ("requests per user: max / median", f"{traffic['max']} / {traffic['median_active']:.0f}"),
        ("users over 100 requests", f"{traffic['users_over_100']}"),
        ("top 1% of users' share of requests", f"{100 * traffic['top_1pct_share']:.1f}%"),
        ("repeats per user: served lists", f"{checks['repeats_in_lists']}"),
        ("repeats per user: session_questions", f"{checks['repeats_in_session_questions']}"),
        ("served listed / recorded / rows", f"{checks['served_in_lists']:,} / {checks['listed_and_recorded']:,} / "
         f"{checks['session_questions_rows']:,}"),
        ("sum(usage_count) after final rollup", f"{checks['usage_count_sum_after_final_rollup']:,}"),
        ("an UPDATE of a question blocks serving's FK lock", str(checks["question_update_blocks_serving_lock"])),
        (
            "rollups: runs, failed, skipped while one ran",
            f"{rollups['runs']}, {rollups['failed']}, {rollups['skipped_while_one_ran']}",
        ),
        ("rollup seconds: median, max", f"{rollups['median_seconds']:.2f}, {rollups['max_seconds']:.2f}"),
    ]:  # fmt: skip
        facts.add_row(what, value)
    console.print(facts)


if __name__ == "__main__":
    sys.exit(main())
