"""A minimal RESP2 client: one command per connection, enough for the guestbook's SET and GET."""
from __future__ import annotations

import socket
from typing import BinaryIO, Optional, Union

Reply = Optional[Union[bytes, int]]

_MAX_LINE = 64 * 1024


class RedisError(Exception):
    """Redis answered with an error, or with something this client cannot read."""


def call(host: str, port: int, *args: str, timeout: float = 2.0) -> Reply:
    """Send one command and return its reply: bytes (simple or bulk string), int, or None (nil).

    Raises RedisError for an error reply, OSError for connection trouble (timeouts included).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(encode(args))
        with sock.makefile("rb") as stream:
            return _read_reply(stream)


def encode(args: tuple[str, ...]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


def _read_reply(stream: BinaryIO) -> Reply:
    line = stream.readline(_MAX_LINE)
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed before a full reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body.decode("utf-8", "replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise RedisError("connection closed inside a bulk reply")
        return data[:-2]
    raise RedisError(f"unsupported reply type {kind!r}")
