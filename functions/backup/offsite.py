"""The scheduled off-site copy: a logical backup of the project (functions/backup/logical.py) uploaded to S3.

The bucket (serverless.yml, BackupBucket) keeps each copy 35 days, moves it to Glacier Instant Retrieval after 7,
and replicates it to a bucket in another region. `prep db restore s3://<bucket>/<key>` downloads one and restores
it onto an empty database.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from functions.backup.logical import BackupError, take_backup
from functions.backup.settings import BackupSettings
from shared.config import load_settings
from shared.logs import configure_logging

log = logging.getLogger("backup.offsite")

_S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>[^\s]{1,1024})$")


def parse_s3_url(url: str) -> tuple[str, str]:
    match = _S3_URL.match(url)
    if not match:
        raise BackupError(f"not an S3 object URL (s3://<bucket>/<key>): {url[:200]}")
    return match["bucket"], match["key"]


def s3_client(region: str | None = None) -> Any:
    import boto3  # in Lambda's runtime; locally a dev dependency

    return boto3.client("s3", region_name=region)


def backup_key(prefix: str, at: datetime) -> str:
    return f"{prefix}{at:%Y/%m/%d}/prep-backup-{at:%Y%m%dT%H%M%SZ}.tar"


def copy_backup(settings: BackupSettings, client: Any) -> dict[str, Any]:
    """Dump the database, upload the archive, remove the local file; return where it went."""
    taken_at = datetime.now(UTC)
    key = backup_key(settings.backup_prefix, taken_at)
    with tempfile.TemporaryDirectory(dir=settings.backup_work_dir) as work:
        path = Path(work) / "backup.tar"
        manifest = take_backup(settings.dump_url(), path)
        size = path.stat().st_size
        client.upload_file(
            str(path),
            settings.backup_bucket,
            key,
            ExtraArgs={
                "ServerSideEncryption": "AES256",
                "Metadata": {"latest-migration": manifest.latest_migration or "none", "source": manifest.source},
            },
        )
    result = {
        "bucket": settings.backup_bucket,
        "key": key,
        "bytes": size,
        "latest_migration": manifest.latest_migration,
    }
    log.info("backup uploaded", extra=result)
    return result


def download_backup(url: str, destination: Path, client: Any) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_url(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.download_file(bucket, key, str(destination))
    except (BotoCoreError, ClientError) as error:
        raise BackupError(f"could not download {url}: {error}") from error
    return destination


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings = load_settings(BackupSettings)
    return copy_backup(settings, s3_client())
