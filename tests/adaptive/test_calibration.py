"""The scheduled calibration (service.calibrate_answers): questions' difficulty and users' abilities move with the
answers scored since the last run, once each; labels the data contradicts are flagged; SM-2 spacing; projections."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from tests.adaptive.history import calibrate, question, scored_answer
from tests.support.identities import give_paid_plan, sign_up

NOW = datetime.now(UTC)


def calibration(db: psycopg.Connection, question_id: object) -> dict:
    return (
        db.cursor(row_factory=dict_row)
        .execute(
            "select calibrated_difficulty, difficulty_estimate, difficulty_uncertainty, calibration_answers,"
            " label_disagrees from public.questions where id = %s",
            (question_id,),
        )
        .fetchone()
    )


def ability(db: psycopg.Connection, user: object, category: str) -> dict:
    return (
        db.cursor(row_factory=dict_row)
        .execute("select * from public.category_abilities where user_id = %s and category = %s", (user, category))
        .fetchone()
    )


def test_a_label_the_answers_contradict_is_flagged_and_a_fitting_one_is_not(db: psycopg.Connection) -> None:
    mislabelled = question(db, "behavioral", "easy")  # everyone fails it
    fitting = question(db, "behavioral", "medium")  # everyone half-succeeds: the medium prior's prediction
    for run in range(3):
        at = NOW - timedelta(days=3 - run)
        for _ in range(8):
            user = sign_up(db)
            scored_answer(db, user, mislabelled, 8, at)
            scored_answer(db, user, fitting, 50, at)
        result = calibrate(db, at + timedelta(hours=1))
        assert result["answers_calibrated"] == 16
        assert result["questions_calibrated"] == 2

    hard = calibration(db, mislabelled)
    assert hard["calibration_answers"] == 24
    assert hard["calibrated_difficulty"] > 0.5  # harder than the hard prior, from easy's -1
    assert hard["difficulty_estimate"] == hard["calibrated_difficulty"]
    assert hard["difficulty_uncertainty"] < 0.5  # the label's prior alone is 1
    assert hard["label_disagrees"] is True
    medium = calibration(db, fitting)
    assert abs(medium["calibrated_difficulty"]) < 0.5
    assert medium["label_disagrees"] is False


def test_each_answer_is_calibrated_once_and_late_ones_wait_for_the_next_run(db: psycopg.Connection) -> None:
    user = sign_up(db)
    first, second = question(db, "leadership", "medium"), question(db, "leadership", "medium")
    scored_answer(db, user, first, 90, NOW - timedelta(hours=2))
    assert calibrate(db, NOW - timedelta(hours=1))["answers_calibrated"] == 1
    before = calibration(db, first)
    assert calibrate(db, NOW - timedelta(minutes=30))["answers_calibrated"] == 0
    assert calibration(db, first) == before  # nothing counted twice

    # Scored 3 minutes before the run: inside its 5-minute lag, so the next run takes it.
    scored_answer(db, user, second, 90, NOW - timedelta(minutes=3))
    assert calibrate(db, NOW)["answers_calibrated"] == 0
    assert calibrate(db, NOW + timedelta(minutes=10))["answers_calibrated"] == 1
    assert calibration(db, second)["calibrated_difficulty"] < 0  # answered well: easier than its medium prior
    assert ability(db, user, "leadership")["answers"] == 2


def test_ability_follows_the_scores_and_the_review_interval_follows_sm2(db: psycopg.Connection) -> None:
    """SM-2 graded by mastery (5 x the chance of success on a question of average difficulty at the updated
    ability): a category known better than average passes its review and is spaced out; one pulled below
    average starts over, whatever the scores of the questions aimed at it."""
    user = sign_up(db)
    give_paid_plan(db, user)
    days = [NOW - timedelta(days=d) for d in (20, 14, 7, 3)]
    outcomes = []
    for at, scores in zip(days, ([90], [85], [20], [10, 10]), strict=True):
        for score in scores:
            scored_answer(db, user, question(db, "technical", "medium"), score, at)
        calibrate(db, at + timedelta(hours=1))
        row = ability(db, user, "technical")
        outcomes.append((row["repetitions"], row["review_interval_days"], row["ability"]))
        assert row["due_at"] == at + timedelta(days=row["review_interval_days"])
        assert row["last_practised_at"] == at

    (reps1, interval1, ability1), (reps2, interval2, ability2), (reps3, _, ability3), (reps4, interval4, ability4) = (
        outcomes
    )
    assert (reps1, interval1) == (1, 1)  # SM-2: first good review, 1 day
    assert (reps2, interval2) == (2, 6)  # second, 6 days
    assert 0 < ability1 < ability2  # two good answers raise it
    assert 0 < ability3 < ability2  # a poor one lowers it, still above average: a third good review
    assert reps3 == 3
    assert ability4 < 0  # two more pull it below average: a failed review starts over
    assert (reps4, interval4) == (0, 1)


def test_the_four_week_projection_follows_the_trend_with_an_interval(db: psycopg.Connection) -> None:
    user = sign_up(db)
    give_paid_plan(db, user)
    # About +2 points a week over six weeks, with noise.
    weeks, scores = [-6, -5, -4, -3, -2, -1], [50, 53, 54, 57, 58, 61]
    for weeks_ago, score in zip(range(6, 0, -1), scores, strict=True):
        scored_answer(db, user, question(db, "situational", "medium"), score, NOW - timedelta(weeks=weeks_ago))
    result = calibrate(db, NOW)
    assert result["projections_updated"] == 1

    row = ability(db, user, "situational")
    assert row["projected_for"] == (NOW + timedelta(days=28)).date()
    line = statistics.linear_regression(weeks, scores)
    assert float(row["projected_score"]) == round(line.intercept + line.slope * 4, 2)  # the line four weeks on
    assert row["projected_low"] < row["projected_score"] < row["projected_high"]
    assert row["projected_high"] - row["projected_low"] < 15


def test_too_few_answers_make_no_projection(db: psycopg.Connection) -> None:
    user = sign_up(db)
    scored_answer(db, user, question(db, "culture_fit", "easy"), 70, NOW - timedelta(days=2))
    scored_answer(db, user, question(db, "culture_fit", "easy"), 75, NOW - timedelta(days=1))
    assert calibrate(db, NOW)["projections_updated"] == 0
    assert ability(db, user, "culture_fit")["projected_score"] is None
