"""Supabase Storage's object API for the `answers` bucket, faked at the HTTP boundary (an httpx transport) over the
test database's storage.objects: listing one folder level and bulk deletion answer as Storage does, failures too."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg

SERVICE_KEY = "service-role-key-for-tests"


class FakeStorage:
    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.fail_next = 0  # the next N requests answer 503, as Storage does when its backend is down
        self.requests: list[str] = []

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self._handle), base_url="http://storage.test")

    def put(self, name: str, owner: uuid.UUID | str) -> None:
        self.conn.execute(
            "insert into storage.objects (bucket_id, name, owner_id, metadata) values ('answers', %s, %s, %s)",
            (name, str(owner), json.dumps({"size": 1024, "mimetype": "audio/webm"})),
        )

    def names(self, prefix: str) -> list[str]:
        rows = self.conn.execute(
            "select name from storage.objects where bucket_id = 'answers' and name like %s order by name",
            (prefix + "%",),
        ).fetchall()
        return [row[0] for row in rows]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.headers.get("authorization") != f"Bearer {SERVICE_KEY}":
            return _error(403, "Unauthorized", "invalid signature")
        if self.fail_next:
            self.fail_next -= 1
            return _error(503, "Service Unavailable", "the storage backend did not answer")
        body = json.loads(request.content)
        if request.method == "POST" and request.url.path == "/storage/v1/object/list/answers":
            return httpx.Response(200, json=self._list(body["prefix"], int(body["limit"]), int(body["offset"])))
        if request.method == "DELETE" and request.url.path == "/storage/v1/object/answers":
            prefixes = body.get("prefixes") or []
            if not 1 <= len(prefixes) <= 1000:
                return _error(400, "Bad Request", "body/prefixes must NOT have fewer than 1 items")
            rows = self.conn.execute(
                "delete from storage.objects where bucket_id = 'answers' and name = any(%s)"
                " returning id, name, bucket_id, owner_id, created_at, updated_at, metadata",
                (prefixes,),
            ).fetchall()
            keys = ("id", "name", "bucket_id", "owner_id", "created_at", "updated_at", "metadata")
            return httpx.Response(200, json=[dict(zip(keys, map(_plain, row), strict=True)) for row in rows])
        return _error(404, "Not Found", "route not found")

    def _list(self, prefix: str, limit: int, offset: int) -> list[dict]:
        # One level: a file directly in the folder, or a folder (id null) for anything deeper.
        rows = self.conn.execute(
            """select distinct on (entry) entry, case when rest like '%%/%%' then null else id end, metadata
               from (select o.id, o.metadata, substr(o.name, length(%s) + 1) as rest,
                            split_part(substr(o.name, length(%s) + 1), '/', 1) as entry
                     from storage.objects o where o.bucket_id = 'answers' and o.name like %s) found
               order by entry, 2 nulls first limit %s offset %s""",
            (prefix, prefix, prefix + "%", limit, offset),
        ).fetchall()
        return [{"name": n, "id": _plain(i), "metadata": m} for n, i, m in rows]

    def close(self) -> None:
        self.conn.close()


def _plain(value: object) -> object:
    return value if value is None or isinstance(value, str | dict) else str(value)


def _error(status: int, error: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": str(status), "error": error, "message": message})
