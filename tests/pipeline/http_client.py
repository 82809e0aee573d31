"""A minimal HTTP client for the service tests: status, body and content type, errors included (urllib)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid


def request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("content-type", "")


def get_json(url: str, **kw) -> tuple[int, dict]:
    status, body, ctype = request(url, **kw)
    assert ctype.startswith("application/json"), (url, status, ctype, body[:200])
    return status, json.loads(body)


def upload(url: str, name: str, content: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return get_json(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
