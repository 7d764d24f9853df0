"""Generating ahead where the bank keeps widening: request_questions counts the widened serves per bucket and
requested tag, and every 40 the handler adds 30 questions for that key to the shared bank, serving none now."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.questions.test_api import Harness, generated
from tests.support.fake_openai import reply

KEY = "category = 'problem_solving' and difficulty = 'hard' and experience_level = 'executive'"


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


@pytest.fixture
def missing_tag(harness: Harness) -> str:
    """A vocabulary tag none of the bucket's questions carries: asking for it widens to any tag."""
    return harness.conn.execute(
        f"""select v.term from public.vocabulary v
            where v.kind = 'tag' and v.canonical = v.term
              and not exists (select from public.questions q where {KEY} and v.term = any(q.tags))
            order by v.term limit 1"""
    ).fetchone()[0]


def demand(harness: Harness, tag: str) -> tuple[int, int] | None:
    return harness.conn.execute(
        f"select widened, generations from private.widening_demand where {KEY} and tag = %s", (tag,)
    ).fetchone()


def test_widened_serves_are_counted_per_bucket_and_tag(harness: Harness, missing_tag: str) -> None:
    user = harness.user(exhausted=False)
    before = demand(harness, missing_tag) or (0, 0)
    body = harness.ask(user, count=2, tags=[missing_tag]).json()
    assert [q["widening"] for q in body["questions"]] == ["any_tags", "any_tags"]
    assert demand(harness, missing_tag) == (before[0] + 2, before[1])
    assert harness.fake.calls == 0


def test_the_40th_widened_serve_generates_30_ahead_into_the_shared_bank(harness: Harness, missing_tag: str) -> None:
    harness.conn.execute(
        "insert into private.widening_demand (category, difficulty, experience_level, tag, widened)"
        " values ('problem_solving', 'hard', 'executive', %s, 39)"
        " on conflict (category, difficulty, experience_level, tag) do update set widened = 39",
        (missing_tag,),
    )
    harness.fake.chat.script(reply(generated(30)))
    user = harness.user(exhausted=False)

    body = harness.ask(user, count=2, tags=[missing_tag]).json()

    assert (body["from_bank"], body["generated"]) == (2, 0)  # served from the bank as before
    assert body["generation"]["ai_calls"] == 1
    assert body["generation"]["generated_ahead"] == 30
    prompt = harness.fake.chat.last.text_of("user")
    assert "Write 30 new interview questions" in prompt
    assert f'"tags": ["{missing_tag}"]' in prompt
    assert '"target_role": null' in prompt
    shared = harness.conn.execute(
        "select count(*) from public.questions where provisional_for is null and target_role is null"
        " and generation_metadata ->> 'ahead' = 'true' and " + KEY
    ).fetchone()[0]
    assert shared == 30
    widened, generations = demand(harness, missing_tag)
    assert widened == 0
    assert generations >= 1
    # The next request for the tag is served on an exact match, from what was generated ahead.
    again = harness.ask(harness.user(exhausted=False), count=2, tags=[missing_tag]).json()
    assert [q["widening"] for q in again["questions"]] == ["exact", "exact"]
