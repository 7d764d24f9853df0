"""The curated question bank the seed loads: the platform must work with no AI key."""

from __future__ import annotations

import psycopg


def test_every_bucket_has_curated_questions(db: psycopg.Connection) -> None:
    total, buckets, smallest = db.execute(
        """
        select sum(n), count(*), min(n) from (
          select count(q.id) as n
          from unnest(enum_range(null::public.question_category)) c
          cross join unnest(enum_range(null::public.difficulty)) d
          cross join unnest(enum_range(null::public.experience_level)) l
          left join public.questions q
            on q.category = c and q.difficulty = d and q.experience_level = l and q.source = 'curated'
          group by c, d, l
        ) per_bucket
        """
    ).fetchone()
    assert total >= 300
    assert buckets == 6 * 3 * 5
    assert smallest >= 3


def test_curated_questions_carry_usable_evaluation_criteria(db: psycopg.Connection) -> None:
    bad = db.execute(
        """
        select q.content from public.questions q left join public.question_answer_keys k on k.question_id = q.id
        where q.source = 'curated' and (
          k.question_id is null
          or jsonb_array_length(k.evaluation_criteria) < 3
          or abs((select sum((c ->> 'weight')::numeric) from jsonb_array_elements(k.evaluation_criteria) c) - 1)
             > 0.001
          or exists (select from jsonb_array_elements(k.evaluation_criteria) c
                     where coalesce(c ->> 'name', '') = '' or coalesce(c ->> 'description', '') = '')
          or cardinality(k.key_points) < 2 or cardinality(q.tags) < 1
        )
        """
    ).fetchall()
    assert bad == []
