"""HTTP/1.x on the gateway's connections: a request's framing and bounds, and what answers share.

A small parser of its own: http.server's goes through the email package for headers, which
costs more than the rest of a request does here (see the gateway benchmark).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024
MAX_HEADERS = 100
# All of a request's head, as nginx allows by default (4 x 8 KiB): at 100 lines of 8 KiB, an
# unfinished request held 900 KiB, 3.7 GB over 4,096 connections of one device.
MAX_HEAD_BYTES = 32 * 1024
MAX_REQUEST_BYTES = MAX_HEAD_BYTES + MAX_BODY_BYTES  # received and not answered yet
REASONS = {status.value: status.phrase for status in HTTPStatus}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    keep_alive: bool
    body: bytes = b""


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.x request we serve; answer and close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_request(data: bytearray) -> tuple[HttpRequest, int] | None:
    """The first HTTP/1.x request in `data` and how many bytes it took; None while it is not
    all there; BadRequest when it is no request we serve, or past the bounds above."""
    end = data.find(b"\n", 0, MAX_LINE_BYTES)
    if end < 0:
        if len(data) >= MAX_LINE_BYTES:
            raise BadRequest(414, "request line too long")
        return None
    try:
        method, target, version = data[:end].decode("latin-1").split()
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505, f"unsupported protocol {version}")
    headers: dict[str, str] = {}
    start = end + 1
    for _ in range(MAX_HEADERS + 1):
        end = data.find(b"\n", start, min(start + MAX_LINE_BYTES, MAX_HEAD_BYTES))
        if end < 0:
            if len(data) - start >= MAX_LINE_BYTES:
                raise BadRequest(431, "header line too long")
            if len(data) >= MAX_HEAD_BYTES:
                raise BadRequest(431, "request head too large")
            return None
        line, start = data[start:end].decode("latin-1"), end + 1
        if line in ("", "\r"):
            break
        name, colon, value = line.partition(":")
        if not colon:
            raise BadRequest(400, "malformed header line")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and (not (value.isascii() and value.isdigit()) or headers.get(name, value) != value):
            # 1*DIGIT, once: "1_0", "+5" or two that disagree would frame the requests after it two ways.
            raise BadRequest(400, "malformed Content-Length")
        headers[name] = value
    else:
        raise BadRequest(431, "too many headers")
    # The body (an EST CSR; other routes ignore it) is taken whole, so the next request parses.
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "a request body needs a Content-Length")
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    if len(data) < start + length:
        return None
    # A list of tokens (RFC 9110 7.6.1): "close" among others closes all the same.
    tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens and "close" not in tokens
    try:
        path = urlsplit(target).path
    except ValueError:  # "http://[::1": an IPv6 authority left open
        raise BadRequest(400, "malformed request target") from None
    request = HttpRequest(method=method, path=path, headers=headers, keep_alive=keep_alive,
                          body=bytes(data[start : start + length]))
    return request, start + length


@functools.lru_cache(maxsize=1)
def http_date(second: int) -> str:
    """The Date header for a Unix time: made once a second, not once an answer."""
    return formatdate(second, usegmt=True)
