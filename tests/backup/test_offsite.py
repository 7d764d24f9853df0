"""The scheduled off-site copy (functions/backup/offsite.py) with S3 from moto: the handler dumps the database and
uploads it; the copy downloads and restores onto an empty database (`prep db restore s3://...`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from rich.console import Console

from functions.backup import offsite
from functions.backup.logical import BackupError
from prep import backup as backups
from tests.backup.conftest import content
from tests.support.aws import fake_aws

BUCKET = "interview-prep-test-backups"
REGION = "eu-west-1"  # another region than the functions' (us-east-1)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    with fake_aws(monkeypatch, REGION):
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


def test_the_copy_is_uploaded_and_restores(
    s3: object, source_url: str, empty_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://pooler.example.test:6543/postgres")  # the functions' pooler
    monkeypatch.setenv("BACKUP_DATABASE_URL", source_url)
    monkeypatch.setenv("BACKUP_BUCKET", BUCKET)
    monkeypatch.setenv("BACKUP_WORK_DIR", str(tmp_path))

    uploaded = offsite.handler({}, None)

    assert uploaded["bucket"] == BUCKET
    assert uploaded["key"].startswith("logical/")
    assert uploaded["key"].endswith(".tar")
    head = s3.head_object(Bucket=BUCKET, Key=uploaded["key"])  # type: ignore[attr-defined]
    assert head["ContentLength"] == uploaded["bytes"] > 0
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["latest-migration"] == uploaded["latest_migration"]
    assert list(tmp_path.iterdir()) == []  # the local dump is gone

    monkeypatch.setenv("DATABASE_URL", empty_url)
    backups.restore_logical(f"s3://{BUCKET}/{uploaded['key']}", force=False, console=Console(quiet=True))
    assert content(empty_url) == content(source_url)
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("select count(*) from public.users where email like 'backup-%'").fetchone() == (3,)


def test_a_missing_object_is_a_clear_error(s3: object, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="could not download s3://"):
        offsite.download_backup(f"s3://{BUCKET}/logical/none.tar", tmp_path / "x.tar", s3)
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("url", ["s3://", "s3://UPPER/key", "https://bucket/key", "s3://bucket/" + "k" * 1100])
def test_s3_urls_are_checked(url: str) -> None:
    with pytest.raises(BackupError, match="not an S3 object URL"):
        offsite.parse_s3_url(url)
