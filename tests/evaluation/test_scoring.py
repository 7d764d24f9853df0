"""Scores: rubrics per category and level, bounds enforced, the overall computed from weights, metadata stored."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from functions.evaluation import grading
from functions.evaluation.rubrics import CATEGORY_CRITERIA, RubricError, rubric_for
from tests.evaluation.graders import feature_grader, fixed_scores
from tests.evaluation.harness import Harness

CRITERIA = [
    {"name": "situation", "description": "Sets up the context", "weight": 0.2},
    {"name": "action", "description": "Own concrete actions", "weight": 0.5},
    {"name": "result", "description": "A measurable outcome", "weight": 0.3},
]


def own_question(harness: Harness, criteria: Any, *, category: str = "behavioral", level: str = "mid") -> str:
    return harness.add_question(
        f"Tell me about a time you fixed a broken process (variant {uuid.uuid4().hex[:12]})?",
        criteria,
        category=category,
        level=level,
        key_points=["Names the process", "Quantifies the fix"],
    )


def test_the_overall_score_is_computed_from_criterion_scores_and_weights(harness: Harness) -> None:
    harness.fake.chat.always(fixed_scores({"situation": 5, "action": 3, "result": 4}))
    user = harness.user()
    response_id = harness.answer(user, question=own_question(harness, CRITERIA))
    harness.request(user, response_id)
    harness.evaluate_now(response_id)

    row = harness.row(response_id)
    # (5-1)/4 * 0.2 + (3-1)/4 * 0.5 + (4-1)/4 * 0.3 = 0.2 + 0.25 + 0.225
    assert float(row["ai_score"]) == 67.5
    assert row["criterion_scores"] == {
        "situation": {"score": 5, "max": 5, "weight": 0.2, "justification": "as scripted"},
        "action": {"score": 3, "max": 5, "weight": 0.5, "justification": "as scripted"},
        "result": {"score": 4, "max": 5, "weight": 0.3, "justification": "as scripted"},
    }
    rubric = rubric_for("behavioral", "mid", CRITERIA)
    assert row["evaluator"] == {
        "model": harness.worker_settings.ai_model,
        "rubric_version": rubric.version,
        "prompt_hash": grading.prompt_hash(rubric),
        "injection_suspected": False,
    }
    assert re.fullmatch(r"rubric-v1/behavioral/mid/question-[0-9a-f]{12}", rubric.version)
    assert re.fullmatch(r"[0-9a-f]{64}", row["evaluator"]["prompt_hash"])
    assert row["feedback"]
    assert row["evaluated_at"] is not None


@pytest.mark.parametrize(
    "scores",
    [
        {"situation": 7, "action": 3, "result": 4},
        {"situation": 0, "action": 3, "result": 4},
        {"situation": 3, "action": 3},
        {"situation": 3, "action": 3, "result": 3, "reflection": 5},
        {"situation": 3, "action": 3, "outcome": 3},
        {"situation": 3, "action": 3, "action ": 3},
    ],
    ids=["above-scale", "below-scale", "missing", "extra", "renamed", "duplicate-ish"],
)
def test_a_verdict_outside_the_rubric_fails_the_evaluation(harness: Harness, scores: dict[str, int]) -> None:
    harness.fake.chat.always(fixed_scores(scores))
    user = harness.user()
    response_id = harness.answer(user, question=own_question(harness, CRITERIA))
    harness.request(user, response_id)
    assert harness.evaluate_now(response_id) == {"batchItemFailures": []}  # not retried: not clamped either
    row = harness.row(response_id)
    assert (row["evaluation_status"], row["ai_score"]) == ("failed", None)
    assert row["evaluation_error"] == "the AI model's evaluation was not valid"
    assert harness.charged(user) == 1  # the model's answer was billed, so the evaluation counts


def test_the_session_score_follows_its_last_evaluation(harness: Harness) -> None:
    harness.fake.chat.script(
        fixed_scores({"situation": 5, "action": 5, "result": 5}),
        fixed_scores({"situation": 3, "action": 3, "result": 3}),
    )
    user = harness.user()
    session = harness.session(user)
    first = harness.answer(user, session=session, question=own_question(harness, CRITERIA, level="senior"))
    second = harness.answer(user, session=session, question=own_question(harness, CRITERIA, level="lead"))
    for response_id in (first, second):
        harness.request(user, response_id)
    harness.conn.execute("update public.practice_sessions set status = 'completed' where id = %s", (session,))

    def session_score() -> Any:
        row = harness.conn.execute("select overall_score from public.practice_sessions where id = %s", (session,))
        return row.fetchone()["overall_score"]

    harness.evaluate_now(first)
    assert session_score() is None  # one answer still pending
    harness.evaluate_now(second)
    assert float(session_score()) == 75.0  # the mean of 100 and 50


def test_a_question_without_criteria_is_scored_on_its_category_rubric(harness: Harness) -> None:
    harness.fake.chat.always(feature_grader())
    user = harness.user()
    response_id = harness.answer(user, question=own_question(harness, [], category="technical", level="senior"))
    harness.request(user, response_id)
    harness.evaluate_now(response_id)
    row = harness.row(response_id)
    assert set(row["criterion_scores"]) == {c.name for c in CATEGORY_CRITERIA["technical"]}
    assert row["evaluator"]["rubric_version"] == "rubric-v1/technical/senior/category"
    system = harness.fake.chat.last.text_of("system")
    assert "trade_offs (weight 20%)" in system
    assert "senior individual contributor" in system


# The rubrics themselves


def test_every_category_rubric_is_well_formed() -> None:
    assert set(CATEGORY_CRITERIA) == {
        "behavioral",
        "technical",
        "situational",
        "leadership",
        "problem_solving",
        "culture_fit",
    }
    for category, criteria in CATEGORY_CRITERIA.items():
        assert sum(c.weight for c in criteria) == pytest.approx(1), category
        assert len({c.name for c in criteria}) == len(criteria), category
    assert [c.name for c in CATEGORY_CRITERIA["behavioral"]] == ["situation", "task", "action", "result", "reflection"]


def test_levels_raise_the_bar_under_the_same_criteria() -> None:
    entry, senior, executive = (rubric_for("leadership", level) for level in ("entry", "senior", "executive"))
    assert entry.criteria == senior.criteria == executive.criteria
    assert len({entry.expectations, senior.expectations, executive.expectations}) == 3
    assert "organisation" in executive.expectations
    assert rubric_for("leadership", "lead").expectations.startswith("The candidate is a team lead")
    assert len({r.version for r in (entry, senior, executive)}) == 3


def test_valid_question_criteria_are_the_rubric_with_weights_normalised() -> None:
    rubric = rubric_for("behavioral", "entry", [{**c, "weight": c["weight"] * 10} for c in CRITERIA])
    assert rubric.source == "question"
    assert [(c.name, c.weight) for c in rubric.criteria] == [("situation", 0.2), ("action", 0.5), ("result", 0.3)]
    assert rubric.expectations == rubric_for("behavioral", "entry").expectations


@pytest.mark.parametrize(
    "criteria",
    [
        None,
        [],
        CRITERIA[:1],
        [*CRITERIA, {"name": "Situation", "description": "again", "weight": 0.1}],
        [*CRITERIA[:2], {"name": "result", "description": "outcome", "weight": 0}],
        [*CRITERIA[:2], {"name": "result", "description": "outcome", "weight": "0.3"}],
        [*CRITERIA[:2], {"name": "result", "description": "outcome", "weight": True}],
        [*CRITERIA[:2], {"name": " ", "description": "outcome", "weight": 0.3}],
        [*CRITERIA[:2], {"name": "result", "description": "", "weight": 0.3}],
        [*CRITERIA[:2], "result"],
        {"situation": 0.5},
        [{"name": f"c{i}", "description": "d", "weight": 1} for i in range(9)],
    ],
    ids=[
        "none",
        "empty",
        "one",
        "duplicate",
        "zero-weight",
        "string-weight",
        "bool-weight",
        "blank-name",
        "no-description",
        "not-an-object",
        "not-a-list",
        "too-many",
    ],
)
def test_invalid_question_criteria_fall_back_to_the_category_rubric(criteria: Any) -> None:
    rubric = rubric_for("behavioral", "mid", criteria)
    assert rubric.source == "category"
    assert rubric.criteria == CATEGORY_CRITERIA["behavioral"]


def test_unknown_categories_and_levels_have_no_rubric() -> None:
    with pytest.raises(RubricError, match="astrology"):
        rubric_for("astrology", "mid")
    with pytest.raises(RubricError, match="intern"):
        rubric_for("behavioral", "intern")


def test_the_overall_score_spans_the_scale() -> None:
    rubric = rubric_for("behavioral", "mid", CRITERIA)
    assert grading.overall_score(rubric, dict.fromkeys(rubric.names, 1)) == 0
    assert grading.overall_score(rubric, dict.fromkeys(rubric.names, 5)) == 100
    assert grading.overall_score(rubric, {"situation": 1, "action": 5, "result": 1}) == 50


def test_the_prompt_hash_changes_with_the_rubric_version_only() -> None:
    mid, senior = rubric_for("technical", "mid"), rubric_for("technical", "senior")
    assert grading.prompt_hash(mid) == grading.prompt_hash(rubric_for("technical", "mid"))
    assert grading.prompt_hash(mid) != grading.prompt_hash(senior)
