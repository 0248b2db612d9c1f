"""Attacks on the gateway's event loop and its group commit: what one device (or a pair of
them) can do to the gateway, and the guarantees that must hold all the same."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_gateway_support import Factory, make_device, new_uuid, running_factory


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with running_factory(tmp_path_factory.mktemp("gateway-attacks")) as made:
        yield made


def _tls(factory: Factory, device) -> ssl.SSLSocket:
    return factory.gateway.tls(device, cafile=factory.root_file, timeout=15)


def _status(tls: ssl.SSLSocket) -> bytes:
    received = b""
    while b"\r\n" not in received:
        chunk = tls.recv(65536)
        if not chunk:
            break
        received += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", received)
    return match.group(1) if match else received


@contextmanager
def _db_locked(factory: Factory) -> Iterator[None]:
    """Another process's write lock on the sandbox database (as `fioca devices` might hold)."""
    locker = sqlite3.connect(factory.sandbox.store.path, isolation_level=None, timeout=1)
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        locker.rollback()
        locker.close()


def _in_one_group(factory: Factory, blocker: ssl.SSLSocket, *requests: tuple[ssl.SSLSocket, bytes]) -> None:
    """Send `requests` while the blocker's first request waits for its commit (the database
    locked): they land in the same next group, in this order."""
    host = factory.gateway.host
    with _db_locked(factory):
        blocker.sendall(f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        for tls, request in requests:
            time.sleep(0.3)
            tls.sendall(request)
        time.sleep(0.3)


def test_one_uuid_with_two_keys_in_one_group_answers_only_the_registered_key(factory: Factory, tmp_path: Path) -> None:
    """Two devices claim one uuid with different keys, their first requests in the same
    group commit: only the key recorded may be answered as the device; the other is refused."""
    uuid = new_uuid()
    first = make_device(tmp_path / "first", factory.local_ca(), device_uuid=uuid)
    second = make_device(tmp_path / "second", factory.local_ca(), device_uuid=uuid)
    blocker = make_device(tmp_path / "blocker", factory.local_ca())
    host = factory.gateway.host
    request = f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    tls_blocker, tls_first, tls_second = _tls(factory, blocker), _tls(factory, first), _tls(factory, second)
    _in_one_group(factory, tls_blocker, (tls_first, request), (tls_second, request))
    statuses = sorted([_status(tls_first), _status(tls_second)])
    for tls in (tls_blocker, tls_first, tls_second):
        tls.close()
    assert statuses == [b"200", b"403"]


def test_a_request_trickled_a_byte_at_a_time_is_cut_off(factory: Factory, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowloris: one byte of a request every little while must not keep a connection (and
    one of the 4,096 places) forever; the request has REQUEST_TIMEOUT_SECONDS to arrive whole."""
    from fioca.sandbox import gateway

    monkeypatch.setattr(gateway, "REQUEST_TIMEOUT_SECONDS", 2)
    tls = _tls(factory, make_device(tmp_path / "slow", factory.local_ca()))
    try:
        tls.settimeout(0.4)
        closed = False
        started = time.monotonic()
        for byte in b"GET /device HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            if time.monotonic() - started > 8:
                break
            try:
                tls.sendall(bytes([byte]))
                closed = tls.recv(1024) == b""
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError):
                closed = True
            if closed:
                break
        assert closed, "the gateway still waits for a request trickled for 8 s (its timeout is 2 s)"
    finally:
        tls.close()


def test_a_bad_pipelined_request_after_a_registration_does_not_stall_the_group(factory: Factory,
                                                                                 tmp_path: Path) -> None:
    """A device registering pipelines a request the parser chokes on (a target urlsplit
    refuses): it gets a 400, and the other devices of its group commit are answered all the same."""
    blocker = make_device(tmp_path / "blocker", factory.local_ca())
    rogue = make_device(tmp_path / "rogue", factory.local_ca())
    other = make_device(tmp_path / "other", factory.local_ca())
    host = factory.gateway.host
    request = f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    bad = f"GET /device HTTP/1.1\r\nHost: {host}\r\n\r\nGET http://[::1 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    tls_blocker, tls_rogue, tls_other = _tls(factory, blocker), _tls(factory, rogue), _tls(factory, other)
    _in_one_group(factory, tls_blocker, (tls_rogue, bad), (tls_other, request))
    try:
        tls_other.settimeout(5)
        assert _status(tls_other) == b"200"
        tls_rogue.settimeout(5)
        answers = b""
        while chunk := tls_rogue.recv(65536):
            answers += chunk
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200", b"400"]
    finally:
        for tls in (tls_blocker, tls_rogue, tls_other):
            tls.close()


@pytest.mark.parametrize("header", ["close, TE", "keep-alive, close", "Close"])
def test_nothing_is_answered_after_connection_close_among_other_tokens(factory: Factory, tmp_path: Path,
                                                                      header: str) -> None:
    """`Connection` is a list of tokens (RFC 9110 7.6.1): `close` among others still closes."""
    host = factory.gateway.host
    with _tls(factory, make_device(tmp_path / "device", factory.local_ca())) as tls:
        tls.sendall(f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: {header}\r\n\r\n"
                    f"GET /device HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        tls.settimeout(5)
        answers = b""
        while chunk := tls.recv(65536):
            answers += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200"]
    assert b"Connection: close" in answers


def test_a_key_rotation_does_not_stop_the_loop_while_the_database_is_locked(factory: Factory,
                                                                            tmp_path: Path) -> None:
    """A device's first request with the key EST certified completes its rotation, a write:
    while another process holds the database's write lock, that write must wait on the
    commit thread, not on the loop, which goes on serving the other devices."""
    from cryptography.hazmat.primitives.asymmetric import ec

    rotating = make_device(tmp_path / "old", factory.local_ca())
    known = make_device(tmp_path / "known", factory.local_ca())
    assert factory.get(rotating).status == 200 and factory.get(known).status == 200
    rotated = make_device(tmp_path / "new", factory.local_ca(), device_uuid=rotating.uuid,
                          key=ec.generate_private_key(ec.SECP256R1()))
    store = factory.sandbox.store
    assert store.set_pending_key(rotating.uuid, rotated.public_key_pem(), store.device(rotating.uuid).ca_serial)
    host = factory.gateway.host
    request = f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    tls_rotated, tls_known = _tls(factory, rotated), _tls(factory, known)
    try:
        with _db_locked(factory):
            tls_rotated.sendall(request)
            time.sleep(0.3)
            started = time.monotonic()
            tls_known.sendall(request)
            tls_known.settimeout(4)
            assert _status(tls_known) == b"200"
            assert time.monotonic() - started < 2
        tls_rotated.settimeout(15)
        assert _status(tls_rotated) == b"200"
        assert store.device(rotating.uuid).pubkey == rotated.public_key_pem()
    finally:
        tls_rotated.close()
        tls_known.close()


def test_a_device_that_never_reads_its_answers_delays_nobody(factory: Factory, tmp_path: Path) -> None:
    """Requests pipelined by the thousand, none of their answers read: the gateway stops
    reading that connection (its buffers bounded) and serves the others at once."""
    host = factory.gateway.host
    greedy = _tls(factory, make_device(tmp_path / "greedy", factory.local_ca()))
    try:
        greedy.settimeout(0.05)
        flood = f"GET /repo/1.root.json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() * 200
        with contextlib.suppress(TimeoutError, ssl.SSLWantWriteError):
            for _ in range(200):
                greedy.sendall(flood)
        started = time.monotonic()
        assert factory.get(make_device(tmp_path / "other", factory.local_ca())).status == 200
        assert time.monotonic() - started < 2
    finally:
        greedy.close()


@pytest.mark.parametrize("head", [
    "X-Huge: " + "a" * 20000 + "\r\n",
    "".join(f"X-Line-{n}: {'a' * 8000}\r\n" for n in range(5)),  # each line allowed, not all five
], ids=["one line too long", "a head too large"])  # fmt: skip
def test_a_request_head_past_its_bounds_is_a_431(factory: Factory, tmp_path: Path, head: str) -> None:
    """100 header lines of 8 KiB each were allowed: 900 KiB held per unfinished request."""
    tls = _tls(factory, make_device(tmp_path / "huge", factory.local_ca()))
    try:
        tls.sendall(f"GET /device HTTP/1.1\r\nHost: {factory.gateway.host}\r\n{head}\r\n".encode())
        assert _status(tls) == b"431"
    finally:
        tls.close()


def test_a_commit_that_fails_answers_500_and_registers_nothing(factory: Factory, tmp_path: Path) -> None:
    """The database locked by another process past the busy timeout (10 s): the device is
    told 500, not "registered", nothing is recorded, and the loop serves on meanwhile."""
    known = make_device(tmp_path / "known", factory.local_ca())
    assert factory.get(known).status == 200
    device = make_device(tmp_path / "device", factory.local_ca())
    host = factory.gateway.host
    tls = _tls(factory, device)
    try:
        with _db_locked(factory):
            tls.sendall(f"GET /device HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            time.sleep(1)
            assert factory.get(known).status == 200  # served while the commit waits
            tls.settimeout(15)
            assert _status(tls) == b"500"
        assert factory.stored(device) is None
        assert factory.get(device).status == 200  # a retry registers it
    finally:
        tls.close()


@pytest.mark.parametrize("lengths", [["1_0"], ["+5"], ["0", "5"]])
def test_a_body_length_that_is_not_one_number_is_a_400(factory: Factory, tmp_path: Path, lengths: list[str]) -> None:
    """Content-Length is 1*DIGIT, once (RFC 9112 6.3): `1_0` or two that disagree frame the
    pipelined requests after it two ways; refused, the connection closed."""
    host = factory.gateway.host
    headers = "".join(f"Content-Length: {length}\r\n" for length in lengths)
    with _tls(factory, make_device(tmp_path / "device", factory.local_ca())) as tls:
        tls.sendall(f"POST /device HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode() + b"x" * 10)
        tls.settimeout(5)
        assert _status(tls) == b"400"
