"""Uploads to the `answers` bucket as a signed-in user, as the Storage API writes them to storage.objects.

Objects live in the uploader's own folder under plain names, owned by the uploader, only on a plan with voice
answers, at most 200 a user, with at most 1 kB of custom metadata. A refusal is an RLS violation, except
oversized metadata: a trigger refuses it (PT413) before the row is formed further, whoever writes it, as the
Storage API writes an upload's row with its metadata as its own superuser.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.abuse.attempts import as_user, refusal
from tests.support.identities import give_paid_plan, sign_up

UPLOAD = "insert into storage.objects (bucket_id, name, owner_id, user_metadata) values ('answers', %s, %s, %s)"


@pytest.fixture
def paid_user(db: psycopg.Connection) -> uuid.UUID:
    user = sign_up(db)
    give_paid_plan(db, user)
    return user


def upload(db: psycopg.Connection, user: uuid.UUID, name: str, owner: object = None, metadata: object = None) -> object:
    return as_user(db, user, UPLOAD + " returning name", name, str(owner or user), Jsonb(metadata))


def refused_upload(
    db: psycopg.Connection, user: uuid.UUID, name: str, owner: object = None, metadata: object = None
) -> psycopg.Error:
    error = refusal(db, user, UPLOAD, name, str(owner or user), Jsonb(metadata))
    assert isinstance(error, psycopg.errors.InsufficientPrivilege), error
    assert "new row violates row-level security policy" in str(error)
    return error


def test_uploading_a_recording_to_the_own_folder_is_allowed(db: psycopg.Connection, paid_user: uuid.UUID) -> None:
    assert upload(db, paid_user, f"{paid_user}/answer.webm") == f"{paid_user}/answer.webm"


@pytest.mark.parametrize(
    "name",
    ["{me}/../x.webm", "{me}/./x", "{me}/../{other}/x.webm", "{me}/..", "{me}/.hidden.webm", "{me}//x.webm"],
)
def test_uploading_outside_the_own_folder_by_dot_segments_is_refused(
    db: psycopg.Connection, paid_user: uuid.UUID, name: str
) -> None:
    refused_upload(db, paid_user, name.format(me=paid_user, other=uuid.uuid4()))


def test_uploading_an_object_owned_by_another_user_is_refused(db: psycopg.Connection, paid_user: uuid.UUID) -> None:
    victim = sign_up(db)
    refused_upload(db, paid_user, f"{paid_user}/answer.webm", owner=victim)


def test_uploading_on_the_free_plan_is_refused(db: psycopg.Connection) -> None:
    free_user = sign_up(db)
    refused_upload(db, free_user, f"{free_user}/answer.webm")


def test_uploading_with_over_1_kb_of_metadata_is_refused_by_size(db: psycopg.Connection, paid_user: uuid.UUID) -> None:
    error = refusal(
        db, paid_user, UPLOAD, f"{paid_user}/answer.webm", str(paid_user), Jsonb({"note": uuid.uuid4().hex * 40})
    )
    assert error.sqlstate == "PT413", error
    assert error.diag.message_primary.startswith("user_metadata is ")
    assert "the limit is 1024" in error.diag.message_primary


@pytest.mark.parametrize("role", ["service_role", "postgres"])
def test_storage_writing_megabytes_of_metadata_as_its_own_role_is_refused_by_size(
    db: psycopg.Connection, paid_user: uuid.UUID, role: str
) -> None:
    """The Storage API checks the policy with a row without metadata, then writes the upload's row, metadata
    included, bypassing RLS: the bound holds there too."""
    with db.transaction(force_rollback=True):
        db.execute("select set_config('role', %s, true)", (role,))
        with pytest.raises(psycopg.Error) as caught:
            db.execute(UPLOAD, (f"{paid_user}/answer.webm", str(paid_user), json.dumps({"x": "x" * 5_000_000})))
    assert caught.value.sqlstate == "PT413", caught.value
    assert "the limit is 1024" in caught.value.diag.message_primary


@pytest.mark.parametrize("storage_trigger", ["objects_insert_create_prefix", "update_objects_updated_at"])
def test_the_metadata_bound_fires_before_storages_own_triggers(
    db: psycopg.Connection, paid_user: uuid.UUID, storage_trigger: str
) -> None:
    """Supabase's storage schema has before-row triggers of its own (names from its migrations); those of one
    event fire in name order, and ours must come first, before any of them copies the row."""
    with db.transaction(force_rollback=True):
        db.execute(
            "create function pg_temp.storage_trigger() returns trigger language plpgsql as"
            " $$ begin raise exception 'a storage trigger ran first'; end $$"
        )
        db.execute(
            sql.SQL(
                "create trigger {} before insert or update on storage.objects"
                " for each row execute function pg_temp.storage_trigger()"
            ).format(sql.Identifier(storage_trigger))
        )
        with pytest.raises(psycopg.Error) as caught:
            db.execute(UPLOAD, (f"{paid_user}/answer.webm", str(paid_user), json.dumps({"x": "x" * 2000})))
    assert caught.value.sqlstate == "PT413", caught.value


def test_replacing_an_objects_metadata_with_megabytes_is_refused_by_size(
    db: psycopg.Connection, paid_user: uuid.UUID
) -> None:
    name = upload(db, paid_user, f"{paid_user}/answer.webm")
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute(
            "update storage.objects set user_metadata = %s where bucket_id = 'answers' and name = %s",
            (json.dumps({"x": "x" * 5_000_000}), name),
        )
    assert caught.value.sqlstate == "PT413", caught.value


def test_uploading_more_than_200_recordings_is_refused(db: psycopg.Connection, paid_user: uuid.UUID) -> None:
    db.execute(
        "insert into storage.objects (bucket_id, name, owner_id)"
        " select 'answers', %s || '/kept-' || n || '.webm', %s from generate_series(1, 199) n",
        (str(paid_user), str(paid_user)),
    )
    assert upload(db, paid_user, f"{paid_user}/the-200th.webm") == f"{paid_user}/the-200th.webm"
    refused_upload(db, paid_user, f"{paid_user}/one-too-many.webm")
    # Another user's recordings are theirs to count, not this user's.
    other = sign_up(db)
    give_paid_plan(db, other)
    assert upload(db, other, f"{other}/first.webm") == f"{other}/first.webm"
