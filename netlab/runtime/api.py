"""The lab API's wire format: HTTP/1.1 on the agent's Unix socket, JSON bodies, and errors as
Kubernetes `Status` objects (reason + code), so that other clients can speak it later.

Pure: framing and error mapping only; the agent routes requests, agent_client sends them.
One request per connection (`Connection: close`), which keeps the agent's loop simple.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from ..model.errors import InvalidError, LabError, NotFoundError, StateError

MAX_HEADER = 16 << 10
MAX_BODY = 16 << 20           # a request larger than this is refused, not buffered

REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
           410: "Gone", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}


class ApiError(LabError):
    """An error with an HTTP code and a Kubernetes Status reason."""

    def __init__(self, code: int, reason: str, message: str, **where):
        super().__init__(message, **where)
        self.code, self.reason = code, reason


class Conflict(StateError):
    """409: the object exists already, or the lab's state forbids the change now."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)   # lower-case names (Accept, Content-Type)


@dataclass
class Raw:
    """A response body that is not JSON (a pod's log, a protobuf document)."""
    data: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


def parse_request(buf: bytes) -> Optional[Request]:
    """A whole request from the bytes received so far, or None if more are needed.

    Raises ApiError for a request that can never become valid."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEADER:
            raise ApiError(400, "BadRequest", "request header too large")
        return None
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise ApiError(400, "BadRequest", f"malformed request line {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise ApiError(400, "BadRequest", "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise ApiError(413, "RequestEntityTooLarge", f"request body over {MAX_BODY} bytes")
    body_bytes = buf[head_end + 4:]
    if len(body_bytes) < length:
        return None
    body = None
    if length:
        try:
            body = json.loads(body_bytes[:length])
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"body is not JSON: {exc}") from None
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    return Request(method.upper(), url.path.rstrip("/") or "/", query, body, headers)


def encode_request(method: str, path: str, body: Any = None) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: netlab\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


def encode_response(code: int, body: Any) -> bytes:
    if isinstance(body, Raw):
        data, ctype = body.data, body.content_type
        extra = "".join(f"{k}: {v}\r\n" for k, v in body.headers.items())
    else:
        data, ctype, extra = json.dumps(body, separators=(",", ":")).encode(), "application/json", ""
    head = (f"HTTP/1.1 {code} {REASONS.get(code, 'Unknown')}\r\nContent-Type: {ctype}\r\n{extra}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


def parse_response(raw: bytes) -> tuple[int, Any]:
    head, _, data = raw.partition(b"\r\n\r\n")
    try:
        code = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise StateError(f"the agent sent a malformed answer ({raw[:60]!r})") from None
    return code, json.loads(data) if data else None


# ---------------------------------------------------------------------- errors as Status


def status_of(exc: BaseException) -> tuple[int, dict]:
    """The Kubernetes Status object (and HTTP code) for an error raised by a handler."""
    if isinstance(exc, ApiError):
        code, reason = exc.code, exc.reason
    elif isinstance(exc, InvalidError):
        code, reason = 422, "Invalid"
    elif isinstance(exc, NotFoundError):
        code, reason = 404, "NotFound"
    elif isinstance(exc, Conflict):
        code, reason = 409, "AlreadyExists" if "already exists" in str(exc) else "Conflict"
    elif isinstance(exc, StateError):    # the lab's state forbids it: back as a Conflict (exit 4)
        code, reason = 409, "Conflict"
    elif isinstance(exc, LabError):
        code, reason = 400, "BadRequest"
    else:
        code, reason = 500, "InternalError"
    message = str(exc) if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if isinstance(exc, LabError):
        cause = {k: v for k, v in (("file", exc.file), ("object", exc.obj), ("field", exc.field),
                                   ("message", exc.message)) if v}
        status["details"] = {"causes": [cause]}
    return code, status


def error_of(code: int, status: Any) -> LabError:
    """The client's side: a Status back into the LabError the CLI prints as one line."""
    if not isinstance(status, dict):
        return StateError(f"the agent answered {code} without a Status")
    cause = ((status.get("details") or {}).get("causes") or [{}])[0]
    if cause.get("message"):
        where = {"file": cause.get("file"), "obj": cause.get("object"), "field": cause.get("field")}
        message = cause["message"]
    else:
        where, message = {}, status.get("message") or f"error {code}"
    if code == 422:
        return InvalidError(message, **where)
    if code == 404:
        return NotFoundError(message, **where)
    if code == 409:
        return Conflict(message, **where)
    if code >= 500:
        return StateError(f"the agent failed: {message}")
    return LabError(message, **where)


def ok_status(message: str = "", **details) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "message": message, "details": details}
