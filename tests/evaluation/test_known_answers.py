"""Answers of known quality (known_answers.json), through the whole pipeline: API, SQS, worker, rubric, score.

The grader is the deterministic feature grader (graders.py), so this checks that the rubrics and the
scoring keep the order weak < adequate < strong for every category, on a question's own criteria and on a
category rubric alike. The bands in the file are for a real model's calibration, not for this crude grader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.evaluation.rubrics import CATEGORY_CRITERIA, rubric_for
from tests.evaluation.graders import feature_grader
from tests.evaluation.harness import Harness, Queues

KNOWN = json.loads((Path(__file__).parent / "known_answers.json").read_text())
QUALITIES = ("weak", "adequate", "strong")


def add_question(harness: Harness, question: dict[str, Any]) -> str:
    return harness.add_question(
        question["content"],
        question["evaluation_criteria"],
        category=question["category"],
        difficulty=question["difficulty"],
        level=question["experience_level"],
        key_points=question["key_points"],
    )


def test_the_set_covers_every_category_and_both_kinds_of_rubric() -> None:
    questions = KNOWN["questions"]
    assert {q["category"] for q in questions} == set(CATEGORY_CRITERIA)
    sources = {rubric_for(q["category"], q["experience_level"], q["evaluation_criteria"]).source for q in questions}
    assert sources == {"question", "category"}
    for question in questions:
        assert tuple(question["answers"]) == QUALITIES, question["key"]
        lengths = [len(question["answers"][q].split()) for q in QUALITIES]
        assert lengths == sorted(lengths), question["key"]
    assert set(KNOWN["bands"]) == set(QUALITIES)


@pytest.fixture
def scores(harness: Harness, queues: Queues) -> dict[str, dict[str, float]]:
    harness.fake.chat.always(feature_grader())
    client = harness.api(queue_url=queues.url)
    response_ids: dict[tuple[str, str], str] = {}
    for question in KNOWN["questions"]:
        question_id = add_question(harness, question)
        for quality in QUALITIES:
            user = harness.user()  # a question is served to a user once: one candidate per answer
            response_id = harness.answer(user, question["answers"][quality], question=question_id)
            accepted = client.post(f"/responses/{response_id}/evaluate", headers=harness.auth(user))
            assert accepted.status_code == 202, accepted.text
            response_ids[question["key"], quality] = response_id
    while queues.poll(harness)[0]:
        pass
    result: dict[str, dict[str, float]] = {}
    for (key, quality), response_id in response_ids.items():
        row = harness.row(response_id)
        assert row["evaluation_status"] == "completed", (key, quality, row["evaluation_error"])
        result.setdefault(key, {})[quality] = float(row["ai_score"])
    return result


def test_the_rubrics_order_known_answers_weak_adequate_strong(scores: dict[str, dict[str, float]]) -> None:
    for key, by_quality in scores.items():
        assert by_quality["weak"] < by_quality["adequate"] < by_quality["strong"], (key, by_quality)
