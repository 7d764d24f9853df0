"""Security rules read from the catalog, so they hold for objects added later too."""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.database.test_rls_matrix import exposed_schemas


def test_security_definer_functions_are_hidden_pinned_and_not_callable_by_api_roles(db: psycopg.Connection) -> None:
    rows = db.execute(
        """
        select p.oid::regprocedure::text, n.nspname, coalesce(p.proconfig, '{}'),
               has_function_privilege('anon', p.oid, 'execute'),
               has_function_privilege('authenticated', p.oid, 'execute')
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where p.prosecdef and n.nspname not in ('auth', 'extensions', 'pg_catalog', 'information_schema')
        """
    ).fetchall()
    assert rows, "expected at least the signup trigger function"
    for name, schema, config, anon_can, authenticated_can in rows:
        assert schema not in exposed_schemas(), f"{name} is security definer in exposed schema {schema}"
        assert 'search_path=""' in config, f"{name} does not pin search_path to ''"
        assert not anon_can, f"{name} is executable by anon"
        assert not authenticated_can, f"{name} is executable by authenticated"


def test_our_functions_pin_search_path(db: psycopg.Connection) -> None:
    unpinned = db.execute(
        """
        select p.oid::regprocedure::text
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'private', 'service')
          and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%%')
        """
    ).fetchall()
    assert unpinned == []


def test_views_run_with_the_callers_rights(db: psycopg.Connection) -> None:
    definer_views = db.execute(
        """
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'v' and n.nspname = any(%s)
          and not coalesce('security_invoker=true' = any(c.reloptions), false)
        """,
        (exposed_schemas(),),
    ).fetchall()
    assert definer_views == []


def test_policies_name_their_role_and_wrap_auth_calls(db: psycopg.Connection) -> None:
    policies = db.execute(
        "select tablename, policyname, roles::text[], coalesce(qual, '') || ' ' || coalesce(with_check, '')"
        " from pg_policies where schemaname = any(%s)",
        (exposed_schemas(),),
    ).fetchall()
    assert len(policies) >= 20
    for table, name, roles, expression in policies:
        assert "public" not in roles, f"{table}: policy {name!r} applies to every role"
        bare = re.findall(r"(?<!SELECT )auth\.(uid|jwt|role)\(\)", expression)
        assert not bare, f"{table}: policy {name!r} calls auth.{bare[0]}() per row; wrap it in (select ...)"


def test_one_permissive_policy_per_role_and_action(db: psycopg.Connection) -> None:
    duplicates = db.execute(
        """
        with expanded as (
          select tablename, role, unnest(case cmd when 'ALL' then array['SELECT','INSERT','UPDATE','DELETE']
                                          else array[cmd] end) as action
          from pg_policies, unnest(roles) as role
          where schemaname = any(%s) and permissive = 'PERMISSIVE'
        )
        select tablename, role, action, count(*) from expanded group by 1, 2, 3 having count(*) > 1
        """,
        (exposed_schemas(),),
    ).fetchall()
    assert duplicates == []


def test_live_tables_are_published_for_realtime(db: psycopg.Connection) -> None:
    published = {
        name
        for (name,) in db.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        ).fetchall()
    }
    assert {"responses", "practice_sessions", "achievements", "user_progress"} <= published


def test_every_foreign_key_is_indexed(db: psycopg.Connection) -> None:
    unindexed = db.execute(
        """
        select c.conrelid::regclass::text, c.conname
        from pg_constraint c
        join pg_namespace n on n.oid = c.connamespace
        where c.contype = 'f' and n.nspname in ('public', 'private')
          and not exists (
            select from pg_index i
            where i.indrelid = c.conrelid
              and ((i.indkey::int2[])[0:cardinality(c.conkey) - 1] = c.conkey
                   -- a unique index on some of the key's columns finds at most one row for any key
                   or (i.indisunique and (i.indkey::int2[])[0:i.indnkeyatts - 1] <@ c.conkey))
          )
        """
    ).fetchall()
    assert unindexed == []


def test_every_table_has_timestamps_maintained_by_trigger(db: psycopg.Connection) -> None:
    missing = db.execute(
        """
        select format('%I.%I', n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'r' and n.nspname in ('public', 'private')
          and not (
            exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'created_at')
            and exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'updated_at')
            and exists (select from pg_trigger t where t.tgrelid = c.oid and t.tgname = 'set_updated_at')
          )
        """
    ).fetchall()
    assert missing == []


def test_new_functions_are_closed_in_our_schemas_and_open_elsewhere(db: psycopg.Connection) -> None:
    """Migration 14: an extension installed later by the migrating role (pgTAP, say) keeps PostgreSQL's default
    EXECUTE for PUBLIC, while a function added to one of our schemas is executable by nobody until granted."""
    assert db.execute(
        "select count(*) from pg_default_acl where defaclnamespace = 0 and defaclobjtype = 'f'"
        " and defaclrole = current_user::regrole"
    ).fetchone() == (0,), "a global default still revokes EXECUTE on every new function"
    db.execute("create schema extension_like")
    db.execute("grant usage on schema extension_like to anon, authenticated")
    ours = ["public", "private", "service", "archive"]
    for schema in ["extension_like", *ours]:
        db.execute(f"create function {schema}.probe() returns int language sql set search_path = '' as 'select 1'")  # type: ignore[arg-type]
        db.execute(f"create procedure {schema}.probe_proc() language sql set search_path = '' as 'select 1'")  # type: ignore[arg-type]
    for schema in ["extension_like", *ours]:
        for routine in ("probe()", "probe_proc()"):
            for role in ("anon", "authenticated"):
                allowed = db.execute(
                    "select has_function_privilege(%s, %s::regprocedure, 'execute')", (role, f"{schema}.{routine}")
                ).fetchone()[0]
                assert allowed == (schema == "extension_like"), f"{role} on {schema}.{routine}: {allowed}"
    # Replacing a function keeps it closed; and the open one really runs for a client role.
    db.execute("create or replace function public.probe() returns int language sql set search_path = '' as 'select 2'")
    assert not db.execute("select has_function_privilege('authenticated', 'public.probe()', 'execute')").fetchone()[0]
    db.execute("set local role authenticated")
    assert db.execute("select extension_like.probe()").fetchone() == (1,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("select public.probe()")


def test_authenticated_reaches_nothing_in_private_but_the_invoker_helpers(db: psycopg.Connection) -> None:
    """Migration 28 grants `authenticated` usage on schema private for the two functions recommend_next calls
    (security invoker: they read through RLS as the caller); migration 31 lets it run the size check of a
    trigger's WHEN condition (which runs as the writer). Nothing else there may be executed or touched."""
    executable = db.execute(
        """
        select p.proname, p.prosecdef from pg_proc p
        where p.pronamespace = 'private'::regnamespace and has_function_privilege('authenticated', p.oid, 'execute')
        order by 1
        """
    ).fetchall()
    assert executable == [("recommendations", False), ("refuse_oversized", False), ("unserved_near", False)]
    touchable = db.execute(
        """
        select c.relname from pg_class c
        where c.relnamespace = 'private'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S')
          and (has_table_privilege('authenticated', c.oid, 'select, insert, update, delete')
               or (c.relkind = 'S' and has_sequence_privilege('authenticated', c.oid, 'usage')))
        """
    ).fetchall()
    assert touchable == []
