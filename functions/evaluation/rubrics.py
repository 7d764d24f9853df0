"""What an answer is scored against: criteria with weights, a 1-5 scale, and the bar for the candidate's level.

Every question category has a rubric of its own (STAR for behavioral questions), and every experience level
its expectations, so a senior's answer is held to a senior's bar under the same criteria.

A question may carry its own `evaluation_criteria` (every curated question does; generated ones must). When
they are valid they ARE the rubric: they were written for that question, so they name what a good answer to
it contains, where the category rubric can only name what good answers of the kind have in common. Mixing
the two would score overlapping criteria twice ("situation" and "context") and blur what each weight means.
The category still contributes the level expectations and the scale. Criteria that are missing or invalid
(fewer than two, duplicate or empty names, weights that are not positive numbers) fall back to the category
rubric as a whole: a half-usable list is not repaired by guessing.

Scores are integers from SCORE_MIN to SCORE_MAX per criterion; weights are normalised to sum to 1. A rubric's
`version` names everything that shapes a score (rubric set, category, level, and a digest of the question's
own criteria when those are used), so a stored score can be traced to what it was measured against.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

RUBRIC_SET = "rubric-v1"
SCORE_MIN, SCORE_MAX = 1, 5

SCALE = {
    1: "Missing or wrong: the criterion is not addressed, or what is said is incorrect.",
    2: "Weak: touched on, but vague, generic or clearly below the bar for this level.",
    3: "Adequate: addressed with some specifics; meets the bar for this level.",
    4: "Strong: specific and convincing; above the bar for this level.",
    5: "Exceptional: a model answer at this level, specific and insightful, nothing important missing.",
}


class RubricError(ValueError):
    """No rubric fits the question (an unknown category or level)."""


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    weight: float


@dataclass(frozen=True)
class Rubric:
    version: str
    source: Literal["question", "category"]
    category: str
    experience_level: str
    criteria: tuple[Criterion, ...]
    expectations: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.criteria)


def _criteria(*items: tuple[str, float, str]) -> tuple[Criterion, ...]:
    return tuple(Criterion(name, description, weight) for name, weight, description in items)


CATEGORY_CRITERIA: dict[str, tuple[Criterion, ...]] = {
    "behavioral": _criteria(
        ("situation", 0.15, "Sets up one specific, real situation: when, where, who, and what was at stake, briefly."),
        ("task", 0.15, "Makes clear what the candidate personally was responsible for or trying to achieve."),
        ("action", 0.35, "Describes the candidate's own concrete actions and why they chose them ('I', not 'we')."),
        ("result", 0.25, "States the outcome, quantified where possible, and links it to those actions."),
        ("reflection", 0.10, "Says what they learned or would do differently, and how it changed their later work."),
    ),
    "technical": _criteria(
        ("correctness", 0.35, "Technically accurate: no errors of fact, reasoning or code."),
        ("depth", 0.20, "Goes beyond definitions: how and why it works, internals, limits."),
        ("trade_offs", 0.20, "Weighs alternatives and names costs, risks and where the approach breaks down."),
        ("practical_experience", 0.10, "Grounds the answer in real use: examples, tools, failures met in practice."),
        ("communication", 0.15, "Structured and clear, at a level the interviewer can follow."),
    ),
    "situational": _criteria(
        ("understanding", 0.20, "Identifies the real problem, the people involved and what is at stake."),
        ("approach", 0.35, "Proposes concrete steps, in a sensible order, that would plausibly work."),
        ("judgment", 0.25, "Weighs options and risks, sets priorities, knows when to escalate or ask."),
        ("communication", 0.20, "Says whom they would inform, how and when, and how they keep people aligned."),
    ),
    "leadership": _criteria(
        ("direction", 0.20, "Sets a clear goal or direction and explains why it matters."),
        ("people", 0.25, "Develops, motivates and holds people accountable; handles conflict and performance fairly."),
        ("execution", 0.25, "Turns the direction into plans, decisions and delivery; removes obstacles."),
        ("impact", 0.20, "Shows measurable results for the team or the organisation."),
        ("self_awareness", 0.10, "Reflects on their own leadership: mistakes, feedback received, growth."),
    ),
    "problem_solving": _criteria(
        ("understanding", 0.20, "Clarifies the problem, its constraints and assumptions before solving it."),
        ("structure", 0.25, "Breaks the problem into parts and works through them in a logical order."),
        ("reasoning", 0.25, "Uses evidence, estimates or data correctly and checks the result for sense."),
        ("solution", 0.20, "Reaches a concrete, workable answer or recommendation."),
        ("communication", 0.10, "Explains the reasoning so others can follow and challenge it."),
    ),
    "culture_fit": _criteria(
        ("values", 0.25, "Shows what they value at work, with evidence from their own behaviour."),
        ("collaboration", 0.25, "Shows how they work with others: respect, feedback, disagreement, inclusion."),
        ("self_awareness", 0.20, "Knows their working style, strengths and limits; candid rather than rehearsed."),
        ("alignment", 0.15, "Connects their values and motivation to the role and the team they want to join."),
        ("specificity", 0.15, "Backs every claim with a concrete example rather than a generic statement."),
    ),
}

# What each level is expected to show; lead is held to the senior bar plus the leading of people.
LEVEL_SCOPE = {
    "entry": "an entry-level candidate (student, graduate or first job)",
    "mid": "a mid-level professional working independently",
    "senior": "a senior individual contributor",
    "lead": "a team lead responsible for other people's work",
    "executive": "an executive accountable for an organisation",
}
_BAND = {"entry": "entry", "mid": "mid", "senior": "senior", "lead": "senior", "executive": "executive"}

CATEGORY_EXPECTATIONS: dict[str, dict[str, str]] = {
    "behavioral": {
        "entry": "Examples may come from study, projects, part-time work or volunteering. Credit clear ownership "
        "of their own part and honest reflection; do not expect large-scale impact.",
        "mid": "Examples come from professional work. Expect independent ownership of a piece of work and "
        "outcomes stated with some evidence.",
        "senior": "Expect situations of real ambiguity or stakes, influence beyond their own tasks (other "
        "teams, stakeholders) and outcomes with measurable impact.",
        "executive": "Expect organisation-wide stakes, decisions under uncertainty, accountability for results "
        "through others, and reflection on how they changed the organisation, not only themselves.",
    },
    "technical": {
        "entry": "Expect correct fundamentals and honest limits of knowledge; production experience is a bonus.",
        "mid": "Expect correct, practical answers informed by having built and debugged real systems.",
        "senior": "Expect depth (internals, failure modes), explicit trade-offs and design at system scale.",
        "executive": "Expect sound technical judgment framed by cost, risk, team capability and business impact; "
        "fine implementation detail matters less than the decision and its consequences.",
    },
    "situational": {
        "entry": "Expect a sensible, safe course of action and knowing when to ask for help.",
        "mid": "Expect an independent plan, with priorities and the people to involve.",
        "senior": "Expect handling of ambiguity and competing stakeholders, with second-order effects considered.",
        "executive": "Expect an organisation-level response: risk, communication to many audiences, "
        "accountability, and preventing a recurrence.",
    },
    "leadership": {
        "entry": "Leadership without authority counts: leading a project, a club or a peer effort.",
        "mid": "Expect informal leadership: guiding peers, owning a cross-functional outcome.",
        "senior": "Expect leading people or a significant initiative: coaching, difficult conversations, "
        "delegation and delivery through others.",
        "executive": "Expect setting strategy, building leaders and culture, and organisation-wide change with "
        "measurable results.",
    },
    "problem_solving": {
        "entry": "Expect a structured attempt with clear reasoning; a rough estimate is fine if it is reasoned.",
        "mid": "Expect a structured approach, stated assumptions and a checked, workable answer.",
        "senior": "Expect framing before solving, quantified reasoning, alternatives and risks.",
        "executive": "Expect framing in terms of strategy and trade-offs, what data would change the decision, "
        "and a clear recommendation.",
    },
    "culture_fit": {
        "entry": "Expect genuine motivation and self-awareness, with examples from study or early work.",
        "mid": "Expect a clear working style with examples of collaboration and handling disagreement.",
        "senior": "Expect values shown through choices they made, including how they shape their team's norms.",
        "executive": "Expect how they set and model culture for an organisation, with evidence of its effect.",
    },
}

_MAX_QUESTION_CRITERIA = 8


def rubric_for(category: str, experience_level: str, question_criteria: Any = None) -> Rubric:
    """The rubric for a question: its own criteria when valid, else its category's (see the module docstring)."""
    if category not in CATEGORY_CRITERIA:
        raise RubricError(f"no rubric for the question category {category!r}")
    if experience_level not in LEVEL_SCOPE:
        raise RubricError(f"no expectations for the experience level {experience_level!r}")
    band = CATEGORY_EXPECTATIONS[category][_BAND[experience_level]]
    expectations = f"The candidate is {LEVEL_SCOPE[experience_level]}. {band}"
    base = f"{RUBRIC_SET}/{category}/{experience_level}"
    own = _question_criteria(question_criteria)
    if own is not None:
        digest = hashlib.sha256(
            json.dumps([[c.name, c.description, c.weight] for c in own], ensure_ascii=False).encode()
        ).hexdigest()[:12]
        return Rubric(f"{base}/question-{digest}", "question", category, experience_level, own, expectations)
    return Rubric(f"{base}/category", "category", category, experience_level, CATEGORY_CRITERIA[category], expectations)


def _question_criteria(raw: Any) -> tuple[Criterion, ...] | None:
    if not isinstance(raw, list) or not 2 <= len(raw) <= _MAX_QUESTION_CRITERIA:
        return None
    criteria: list[Criterion] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        name, description, weight = item.get("name"), item.get("description"), item.get("weight")
        if not isinstance(name, str) or not 0 < len(name.strip()) <= 40:
            return None
        if not isinstance(description, str) or not 0 < len(description.strip()) <= 300:
            return None
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            return None
        criteria.append(Criterion(name.strip(), description.strip(), float(weight)))
    if len({c.name.casefold() for c in criteria}) != len(criteria):
        return None
    total = sum(c.weight for c in criteria)
    return tuple(Criterion(c.name, c.description, round(c.weight / total, 4)) for c in criteria)
