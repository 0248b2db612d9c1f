"""Bad answers and bad input (issue 6): every case ends in one clear `ERROR:` line on stderr.

Each case checks the same five things: a non-zero exit, no traceback, exactly one `ERROR:`
line that names what was wrong (only ` * ` / `= ` detail lines may follow it), nothing
uploaded (no PATCH reached a server, no request after the failing one), and none of the
user's files changed (PKI dir contents and modes, config file, input files).

Servers: a module-scoped sandbox for the answers it can give (statuses with JSON bodies,
edited POST answers), and a tiny in-test HTTPS server on 127.0.0.1 for what it cannot
(non-JSON, truncated or huge bodies, bodiless statuses, redirects, bad TLS certificates).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import socketserver
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fioca import facts
from fioca.errors import CheckError
from fioca.pki import files, profiles
from fioca.sandbox.server import Sandbox
from fioca.sandbox.tls import issue_server_cert, make_ca
from tests.conftest import FACTORY, config_env, record_certs_calls

TOKEN = "tok-bad-answers-0123456789"
DETAIL_PREFIXES = ("= ", " * ", "  ")  # fioctl's detail lines, then fioca's hints (what to do next)
USER_NOTE = b"my own notes; fioca must never touch this\n"
GATEWAY_NAMES = ["0a1b2c.ota-lite.foundries.io", "0a1b2c.ostree.foundries.io"]


# --- checks shared by every case --------------------------------------------------------------


def error_line(result) -> str:
    """The one `ERROR:` line; only detail lines may follow it. Notes may come before it."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    assert TOKEN not in result.output
    lines = result.stderr.splitlines()
    errors = [index for index, line in enumerate(lines) if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(DETAIL_PREFIXES) for line in lines[errors[0] + 1 :]), result.stderr
    assert "internal error" not in lines[errors[0]], result.stderr
    return lines[errors[0]]


def assert_error(result, *fragments: str) -> str:
    line = error_line(result)
    block = "\n".join(result.stderr.splitlines()[result.stderr.splitlines().index(line) :])
    for fragment in fragments:
        assert fragment in block, result.stderr
    return line


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under `root` (or `root` itself when a file): content and mode."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": (root.read_bytes(), stat.S_IMODE(root.stat().st_mode))}
    entries = {}
    for path in sorted(root.rglob("*")):
        content = path.read_bytes() if path.is_file() else None
        entries[str(path.relative_to(root))] = (content, stat.S_IMODE(path.lstat().st_mode))
    return entries


def assert_kept(before: dict, after: dict) -> None:
    """Whatever the user had is still there, byte for byte and mode for mode."""
    for name, value in before.items():
        assert after.get(name) == value, f"{name} changed"


def no_temp_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.endswith(".tmp")] if root.is_dir() else []


def user_pki_dir(tmp_path: Path) -> Path:
    """A PKI dir the user already made (0700, one file of theirs): create may use it."""
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)
    (pki / "NOTES").write_bytes(USER_NOTE)
    return pki


# --- PEM material -----------------------------------------------------------------------------


def csr_pem(key=None, *, ou: str = FACTORY, dns: list[x509.GeneralName] | None = None, cn: str = "gw") -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)])
    )
    if dns is None:
        dns = [x509.DNSName(name) for name in GATEWAY_NAMES]
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(dns), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr_pem() -> str:
    """A well-formed CSR whose self-signature no longer verifies (last byte of s flipped)."""
    der = x509.load_pem_x509_csr(csr_pem().encode()).public_bytes(serialization.Encoding.DER)
    der = der[:-1] + bytes([der[-1] ^ 0x01])
    return profiles.PemBlock("CERTIFICATE REQUEST", der).pem().decode()


def key_pem() -> str:
    return profiles.private_key_pem(profiles.new_key()).decode()


def self_signed_cert_pem() -> str:
    key = profiles.new_key()
    return profiles.cert_pem(profiles.build_root(key, factory=FACTORY)).decode()


INVALID_UTF8 = b"-----BEGIN CERTIFICATE-----\nMIIB\xff\xfeAAAA\n-----END CERTIFICATE-----\n"
INVALID_UTF8_CSR = INVALID_UTF8.replace(b"CERTIFICATE", b"CERTIFICATE REQUEST")


# --- a fake Factory API on 127.0.0.1 -----------------------------------------------------------


@dataclass
class Canned:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(status: int, value: Any) -> Canned:
    return Canned(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


NOT_CONFIGURED = json_answer(206, {"root-crt": None, "ca-crt": None, "tls-crt": None})


@dataclass
class Seen:
    method: str
    route: str
    had_token: bool


def route_of(path: str) -> str:
    if path.endswith("/certs/"):
        return "certs"
    if path.endswith("/users/self/"):
        return "users-self"
    return path


class _CannedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeApi

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        route = route_of(self.path.split("?")[0])
        self.server.seen.append(Seen(self.command, route, "OSF-TOKEN" in self.headers))
        canned = self.server.answers.get((self.command, route), Canned(404, b"no canned answer"))
        self.send_response(canned.status)
        for name, value in canned.headers.items():
            if value != "none":
                self.send_header(name, value)
        if "Content-Length" not in canned.headers:
            self.send_header("Content-Length", str(len(canned.body)))
        # With "Content-Length: none" the header is left out: the body runs until the close.
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(canned.body)
        self.close_connection = True

    do_GET = do_POST = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class FakeApi(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1:<random>, answering from `answers`, recording into `seen`."""

    daemon_threads = True

    def __init__(self, cert_file: Path | None, key_file: Path | None):
        super().__init__(("127.0.0.1", 0), _CannedHandler)
        self.answers: dict[tuple[str, str], Canned] = {}
        self.seen: list[Seen] = []
        self.scheme = "http"
        if cert_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer is part of some cases

    def reset(self, answers: dict[tuple[str, str], Canned]) -> None:
        self.seen.clear()
        self.answers = {("GET", "certs"): NOT_CONFIGURED, **answers}

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Listener(socketserver.ThreadingTCPServer):
    """A plain TCP listener that records every connection and its first bytes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str):
        self.received: list[bytes] = []
        outer = self

        class Record(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(1)
                try:
                    outer.received.append(self.request.recv(65536))
                except OSError:
                    outer.received.append(b"")

        super().__init__((host, 0), Record)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def expired_server_cert(ca_cert, ca_key) -> tuple[x509.Certificate, Any]:
    """A server cert for 127.0.0.1 that expired yesterday, signed by a trusted CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now - timedelta(days=1))  # expired
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@dataclass
class FakeWorld:
    api: FakeApi  # good certificate, trusted through `cacert`
    expired: FakeApi  # certificate expired, same CA
    plain: FakeApi  # plain HTTP (an https:// URL to it is a TLS error)
    redirect_target: Listener  # on 127.0.0.2: must never be contacted
    cacert: Path
    other_ca: Path  # a CA that did not sign anything the servers present
    dir: Path

    def config(self, server: FakeApi, *, cacert: Path | None = None, name: str = "fioctl.yaml") -> Path:
        path = self.dir / name
        path.write_text(
            yaml.safe_dump(
                {"factory": FACTORY, "token": TOKEN, "server": {"url": server.url, "cacert": str(cacert or self.cacert)}}
            )
        )
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[FakeWorld]:
    folder = tmp_path_factory.mktemp("fake-api")
    ca_cert, ca_key = make_ca("bad-answers test CA")
    other_cert, _ = make_ca("some other CA")
    cacert = _write_pem(folder / "ca.pem", profiles.cert_pem(ca_cert))
    other_ca = _write_pem(folder / "other-ca.pem", profiles.cert_pem(other_cert))
    good_cert, good_key = issue_server_cert(ca_cert, ca_key, ["127.0.0.1"])
    old_cert, old_key = expired_server_cert(ca_cert, ca_key)
    good = (_write_pem(folder / "good.pem", profiles.cert_pem(good_cert)), _write_pem(folder / "good.key", _pem_key(good_key)))
    old = (_write_pem(folder / "old.pem", profiles.cert_pem(old_cert)), _write_pem(folder / "old.key", _pem_key(old_key)))
    servers = [FakeApi(*good), FakeApi(*old), FakeApi(None, None)]
    target = Listener("127.0.0.2")
    try:
        yield FakeWorld(*servers, redirect_target=target, cacert=cacert, other_ca=other_ca, dir=folder)
    finally:
        for server in servers:
            server.close()
        target.close()


# --- a module-scoped sandbox -------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox"), factory=FACTORY) as sandbox:
        yield sandbox


@pytest.fixture
def box_env(box) -> dict[str, str]:
    return config_env(box)


@pytest.fixture
def recorded(box, monkeypatch) -> Iterator[list[tuple[str, Any]]]:
    """Every POST and PATCH body the sandbox receives in this test; faults cleared after it."""
    yield record_certs_calls(box, monkeypatch)
    box.store.clear_faults()
    # Every case fails before a PATCH, so the factory stays without a root for the next one.
    assert box.backend.get_certs()[0] == 206


# === 1. Raw HTTP answers the sandbox cannot give (fake server) =================================

HTML = {"Content-Type": "text/html"}
HUGE = b'{"root-crt": null, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'

# id -> (canned answers, the requests the server must have seen, fragments of the error)
RAW_CASES: dict[str, tuple[dict, list[tuple[str, str]], list[str]]] = {
    "get-html-not-json": (
        {("GET", "certs"): Canned(200, b"<html><body>Welcome to nginx!</body></html>", HTML)},
        [("GET", "certs")], ["answer to GET '", "/certs/' is not JSON"],
    ),
    "get-truncated-json": (
        {("GET", "certs"): Canned(200, b'{"root-crt": "-----BEGIN CERTIFI', {"Content-Type": "application/json"})},
        [("GET", "certs")], ["/certs/' is not JSON"],
    ),
    "get-cut-off-mid-body": (
        {("GET", "certs"): Canned(200, b'{"root-crt": nu', {"Content-Length": "4096"})},
        [("GET", "certs")], ["answer to GET '", "was cut off"],
    ),
    "get-json-array": (
        {("GET", "certs"): json_answer(200, ["root-crt", None])},
        [("GET", "certs")], ["/certs/' is not a JSON object"],
    ),
    "get-root-crt-wrong-type": (
        {("GET", "certs"): json_answer(200, {"root-crt": 42, "ca-crt": None})},
        [("GET", "certs")], ["answer to GET '", "root-crt is not a string"],
    ),
    "get-huge-body": (
        {("GET", "certs"): Canned(200, HUGE, {"Content-Type": "application/json"})},
        [("GET", "certs")], ["answer to GET '", f"is {len(HUGE)} bytes, too large to be a certs answer"],
    ),
    "get-huge-body-without-length": (
        {("GET", "certs"): Canned(200, HUGE, {"Content-Length": "none"})},
        [("GET", "certs")], ["answer to GET '", "is over 4194304 bytes, too large to be a certs answer"],
    ),
    "get-401-plain-text": (
        {("GET", "certs"): Canned(401, b"Unauthorized", {"Content-Type": "text/plain"})},
        [("GET", "certs")], ["HTTP error during GET '", "/certs/': 401 Unauthorized"],
    ),
    "get-403-html": (
        {("GET", "certs"): Canned(403, b"<html>Forbidden</html>", HTML)},
        [("GET", "certs")], ["/certs/': 403 Forbidden"],
    ),
    "get-404-empty": (
        {("GET", "certs"): Canned(404)},
        [("GET", "certs")], ["/certs/': 404 Not Found"],
    ),
    "get-500-html": (
        {("GET", "certs"): Canned(500, b"<html><h1>Internal Server Error</h1></html>", HTML)},
        [("GET", "certs")], ["/certs/': 500 Internal Server Error"],
    ),
    "post-409-plain-text": (
        {("POST", "certs"): Canned(409, b"conflict", {"Content-Type": "text/plain"})},
        [("GET", "certs"), ("POST", "certs")], ["HTTP error during POST '", "/certs/': 409 Conflict"],
    ),
    "post-429-empty-not-retried": (
        {("POST", "certs"): Canned(429, b"", {"Retry-After": "1"})},
        [("GET", "certs"), ("POST", "certs")], ["HTTP error during POST '", "429 Too Many Requests"],
    ),
    "post-503-html-not-retried": (
        {("POST", "certs"): Canned(503, b"<html>Service Unavailable</html>", HTML)},
        [("GET", "certs"), ("POST", "certs")], ["HTTP error during POST '", "503 Service Unavailable"],
    ),
    "post-201-not-json": (
        {("POST", "certs"): Canned(201, b"OK, keys made", {"Content-Type": "text/plain"})},
        [("GET", "certs"), ("POST", "certs")], ["answer to POST '", "is not JSON"],
    ),
    "post-201-empty-body": (
        {("POST", "certs"): Canned(201, b"")},
        [("GET", "certs"), ("POST", "certs")], ["POST answer is not JSON; nothing was run"],
    ),
    "post-201-json-string": (
        {("POST", "certs"): json_answer(201, "tls-csr")},
        [("GET", "certs"), ("POST", "certs")], ["answer to POST '", "is not a JSON object"],
    ),
    "users-self-500-html": (
        {("POST", "certs"): json_answer(201, {}), ("GET", "users-self"): Canned(500, b"<html>oops</html>", HTML)},
        [("GET", "certs"), ("POST", "certs"), ("GET", "users-self")],
        ["HTTP error during GET '", "/users/self/': 500 Internal Server Error"],
    ),
    "users-self-no-polis-id": (
        {("POST", "certs"): json_answer(201, {}), ("GET", "users-self"): json_answer(200, {"name": "x"})},
        [("GET", "certs"), ("POST", "certs"), ("GET", "users-self")], ["/users/self/' has no polis-id"],
    ),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_raw_answer(cli, world, tmp_path, case):
    answers, expected_requests, fragments = RAW_CASES[case]
    world.api.reset(answers)
    config = world.config(world.api)
    config_before = config.read_bytes()
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)

    result = cli("keys", "ca", "create", pki, "--yes", env={"FIOCTL_CONFIG": str(config)})

    assert_error(result, *fragments)
    assert [(seen.method, seen.route) for seen in world.api.seen] == expected_requests
    after = snapshot(pki)
    assert_kept(before, after)
    assert facts.ROOT_KEY not in after and no_temp_files(pki) == []
    assert config.read_bytes() == config_before


def test_get_503_is_retried_a_bounded_number_of_times_then_reported(cli, world, tmp_path):
    world.api.reset({("GET", "certs"): Canned(503, b"<html>busy</html>", HTML)})
    result = cli("keys", "ca", "create", user_pki_dir(tmp_path), "--yes", env={"FIOCTL_CONFIG": str(world.config(world.api))})
    assert_error(result, "HTTP error during GET '", "503 Service Unavailable")
    # One try and three retries of the read; then one message, and no POST.
    assert [(seen.method, seen.route) for seen in world.api.seen] == [("GET", "certs")] * 4


@pytest.mark.parametrize("method, status", [("GET", 302), ("POST", 307)])
def test_redirect_to_another_host_is_refused_and_the_token_stays_home(cli, world, tmp_path, method, status):
    target = world.redirect_target
    target.received.clear()
    where = f"http://127.0.0.2:{target.server_address[1]}/ota/factories/{FACTORY}/certs/"
    world.api.reset({(method, "certs"): Canned(status, b"", {"Location": where})})
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)

    result = cli("keys", "ca", "create", pki, "--yes", env={"FIOCTL_CONFIG": str(world.config(world.api))})

    assert_error(result, f"HTTP error during {method} '", f"{status} redirect to {where} refused")
    assert world.api.seen[-1].method == method and "PATCH" not in [s.method for s in world.api.seen]
    assert target.received == []  # no connection at all, so no token
    assert_kept(before, snapshot(pki))


def test_redirect_listener_would_have_seen_a_follower(world):
    """Negative twin: the redirect target does record a client that follows the redirect."""
    import requests

    target = world.redirect_target
    target.received.clear()
    world.api.reset({("GET", "certs"): Canned(302, b"", {"Location": f"http://127.0.0.2:{target.server_address[1]}/x"})})
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"{world.api.url}/ota/factories/{FACTORY}/certs/", headers={"OSF-TOKEN": TOKEN},
                     verify=str(world.cacert), timeout=2)
    assert any(TOKEN.encode() in data for data in target.received)


# === 2. TLS errors and unreachable servers ======================================================


def _tls_case(world: FakeWorld, case: str) -> tuple[Path, list[str]]:
    if case == "wrong-ca":
        return world.config(world.api, cacert=world.other_ca), ["TLS error during GET '", "certificate verify failed: unable to get local issuer certificate"]
    if case == "expired":
        return world.config(world.expired), ["TLS error during GET '", "certificate verify failed: certificate has expired"]
    if case == "https-to-plain-http":
        config = world.config(world.plain)
        config.write_text(config.read_text().replace("http://", "https://"))
        return config, ["TLS error during GET '"]
    if case == "cacert-not-pem":
        garbage = world.dir / "garbage-ca.pem"
        garbage.write_bytes(b"this is not a CA bundle\n")
        return world.config(world.api, cacert=garbage), ["CA bundle", "garbage-ca.pem", "holds no usable PEM certificate"]
    if case == "connection-refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = world.config(world.api)
        config.write_text(config.read_text().replace(world.api.url, f"https://127.0.0.1:{port}"))
        return config, ["cannot reach the server during GET '"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["wrong-ca", "expired", "https-to-plain-http", "cacert-not-pem", "connection-refused"])
def test_tls_and_connection_errors(cli, world, tmp_path, case):
    for server in (world.api, world.expired, world.plain):
        server.reset({})
    config, fragments = _tls_case(world, case)
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)
    result = cli("keys", "ca", "create", pki, "--yes", env={"FIOCTL_CONFIG": str(config)})
    assert_error(result, *fragments)
    assert_kept(before, snapshot(pki))
    # Nothing was answered: a failed handshake never reaches the HTTP layer.
    assert all(not server.seen for server in (world.api, world.expired, world.plain))


def test_the_good_certificate_is_trusted(cli, world, tmp_path):
    """Negative twin of the TLS cases: the same server with the right CA gets to HTTP."""
    world.api.reset({("POST", "certs"): Canned(418)})
    result = cli("keys", "ca", "create", user_pki_dir(tmp_path), "--yes", env={"FIOCTL_CONFIG": str(world.config(world.api))})
    assert_error(result, "418")
    assert [(s.method, s.route, s.had_token) for s in world.api.seen] == [("GET", "certs", True), ("POST", "certs", True)]


# === 3. Error statuses with JSON bodies (sandbox faults) =========================================

# id -> (fault, fragments)
STATUS_CASES: dict[str, tuple[dict, list[str]]] = {
    "get-401-json": (dict(method="GET", route="certs", status=401, message="Token expired"),
                     ["HTTP error during GET '", "401 Unauthorized", "= Token expired", " * injected by the sandbox"]),
    "get-403-json": (dict(method="GET", route="certs", status=403, message="Token lacks scope"),
                     ["403 Forbidden", "= Token lacks scope"]),
    "get-404-json": (dict(method="GET", route="certs", status=404, message="Factory not found"),
                     ["404 Not Found", "= Factory not found"]),
    "post-409-json": (dict(method="POST", route="certs", status=409, message="Root of trust already set"),
                      ["HTTP error during POST '", "409 Conflict", "= Root of trust already set"]),
    "post-429-json": (dict(method="POST", route="certs", status=429, message="Slow down"),
                      ["HTTP error during POST '", "429 Too Many Requests", "= Slow down"]),
    "post-500-json": (dict(method="POST", route="certs", status=500, message="Database on fire"),
                      ["500 Internal Server Error", "= Database on fire"]),
    "get-503-json-after-retries": (dict(method="GET", route="certs", status=503, message="Maintenance", times=4),
                                   ["HTTP error during GET '", "503 Service Unavailable", "= Maintenance"]),
    "users-self-403-json": (dict(method="GET", route="users-self", status=403, message="No user"),
                            ["/users/self/': 403 Forbidden", "= No user"]),
}


@pytest.mark.parametrize("case", list(STATUS_CASES))
def test_error_status_with_json_body(cli, box, box_env, recorded, tmp_path, case):
    fault, fragments = STATUS_CASES[case]
    box.inject_fault(**fault)
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)
    result = cli("keys", "ca", "create", pki, "--yes", env=box_env)
    assert_error(result, *fragments)
    assert "PATCH" not in [method for method, _ in recorded]
    assert len(recorded) <= 1  # at most the one POST; a POST is never retried
    assert_kept(before, snapshot(pki))


def test_wrong_token_and_wrong_factory(cli, box, box_env, recorded, tmp_path):
    wrong_token = cli("-t", "not-the-token", "keys", "ca", "create", tmp_path / "a", "--yes", env=box_env)
    assert_error(wrong_token, "401 Unauthorized", "= Unauthorized")
    assert "not-the-token" not in wrong_token.output
    wrong_factory = cli("-f", "someone-else", "keys", "ca", "create", tmp_path / "b", "--yes", env=box_env)
    assert_error(wrong_factory, "404 Not Found", "= Factory not found: someone-else")
    assert recorded == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# === 4. POST answers with wrong fields, wrong types and bad CSRs (sandbox) ======================


def _p384_csr(answer: dict) -> None:
    answer["tls-csr"] = csr_pem(ec.generate_private_key(ec.SECP384R1()))


def _set(name: str, value: Any) -> Callable[[dict], None]:
    return lambda answer: answer.__setitem__(name, value() if callable(value) else value)


def _drop(name: str) -> Callable[[dict], None]:
    return lambda answer: answer.pop(name)


# id -> (edit of the POST answer, fragments of the error)
ANSWER_CASES: dict[str, tuple[Callable[[dict], None], list[str]]] = {
    "missing-tls-csr": (_drop("tls-csr"), ["the POST answer has no tls-csr; nothing was run"]),
    "missing-ca-csr": (_drop("ca-csr"), ["the POST answer has no ca-csr; nothing was run"]),
    "tls-csr-is-a-number": (_set("tls-csr", 12345), ["tls-csr is not a string"]),
    "script-is-a-list": (_set("create_ca", ["#!/bin/sh"]), ["create_ca is not a string"]),
    "some-scripts-missing": (_drop("sign_ca_csr"), ["some scripts but not all four"]),
    "csr-garbage": (_set("tls-csr", "hello, I am certainly a CSR"), ["tls-csr: is not PEM"]),
    "csr-non-ascii": (_set("tls-csr", "-----BEGIN CERTIFICATE REQUEST-----\nM\u00e9\n-----END CERTIFICATE REQUEST-----\n"),
                      ["tls-csr: is not PEM text: non-ASCII character at offset 37"]),
    "csr-lone-surrogate": (_set("tls-csr", "-----BEGIN CERTIFICATE REQUEST-----\nM\udcff\n-----END CERTIFICATE REQUEST-----\n"),
                           ["answer to POST '", "holds a \\u escape that is not valid Unicode"]),
    "csr-not-p256": (_p384_csr, ["tls-csr: public key must be EC P-256"]),
    "ca-csr-other-factory-ou": (_set("ca-csr", lambda: csr_pem(ou="other-factory", dns=[])),
                              ["ca-csr", "'other-factory'", "not the factory 'acme'"]),
    "csr-badly-self-signed": (_set("tls-csr", tampered_csr_pem), ["tls-csr: CSR self-signature does not verify"]),
    "csr-ip-address-san": (
        _set("tls-csr", lambda: csr_pem(dns=[x509.DNSName(GATEWAY_NAMES[0]), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])),
        ["tls-csr: subjectAltName must hold DNS names only, got IPAddress"],
    ),
    "csr-no-san": (_set("tls-csr", lambda: csr_pem(dns=[])), ["tls-csr: has no DNS names in subjectAltName"]),
    "csr-wildcard-san": (_set("tls-csr", lambda: csr_pem(dns=[x509.DNSName("*.foundries.io")])),
                         ["tls-csr", "'*.foundries.io' is not a host name"]),
    "csr-is-a-private-key": (_set("ca-csr", key_pem), ["ca-csr: must be a PEM CERTIFICATE REQUEST", "PRIVATE KEY block"]),
    "csr-is-a-certificate": (_set("tls-csr", self_signed_cert_pem), ["tls-csr: must be a PEM", "got a CERTIFICATE block"]),
}


@pytest.mark.parametrize("case", list(ANSWER_CASES))
def test_bad_post_answer(cli, box, box_env, recorded, tmp_path, monkeypatch, case):
    edit, fragments = ANSWER_CASES[case]
    backend = box.backend
    real_post = backend.post_certs  # the recorder's, so the POST is still recorded

    def post(body):
        answer = real_post(body)
        edit(answer)
        return answer

    monkeypatch.setattr(backend, "post_certs", post)
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)

    result = cli("keys", "ca", "create", pki, "--yes", env=box_env)

    assert_error(result, *fragments)
    assert [method for method, _ in recorded] == ["POST"]
    after = snapshot(pki)
    assert_kept(before, after)
    # Refused before any script ran: no key, no certificate, no script in the PKI dir.
    assert not {facts.ROOT_KEY, facts.ROOT_CERT, facts.TLS_CERT, "create_ca"} & set(after)
    if case == "csr-is-a-private-key":
        body = "".join(json.loads((pki / facts.FACTORY_CERTS_JSON).read_text())["ca-csr"].splitlines()[1:-1])
        assert body[:40] not in result.output  # key material is never echoed


def test_good_answer_passes_the_csr_checks(box, recorded):
    """Negative twin of the CSR cases: the sandbox's own CSRs pass the same early check."""
    from fioca.pki.create import answer_from, check_csrs
    from fioca.pki.plan import plan_create

    plan = plan_create(online_ca=True, local_ca=True)
    data = box.backend.post_certs({})
    check_csrs(answer_from(data, b"", factory=FACTORY, local_ca_cn="fio-x"), plan)
    bad = {**data, "tls-csr": csr_pem(ec.generate_private_key(ec.SECP384R1()))}
    with pytest.raises(CheckError, match="P-256"):
        check_csrs(answer_from(bad, b"", factory=FACTORY, local_ca_cn="fio-x"), plan)


# === 5. The config file ==========================================================================

CONFIG_CASES: dict[str, tuple[bytes | None, list[str]]] = {
    "not-yaml": (b"factory: acme\nserver: {url: [unclosed\n", ["is not valid YAML (line"]),
    "yaml-list": (b"- factory\n- acme\n", ["must hold a mapping of keys, not list"]),
    "invalid-utf8": (b"factory: acme\ntoken: \xff\xfe\n", ["is not UTF-8 text"]),
    "server-not-a-mapping": (b"factory: acme\nserver: https://api.example\n", ['"server" must be a mapping']),
    "token-a-list": (b"factory: acme\ntoken: [a, b]\n", ['"token" must be a string']),
    "url-not-http": (b"factory: acme\ntoken: t\nserver:\n  url: ftp://api.example\n", ["must start with http:// or https://"]),
    "cacert-missing": (b"factory: acme\ntoken: t\nserver:\n  url: https://127.0.0.1:1\n  cacert: nope.pem\n",
                       ["CA bundle", "nope.pem", "does not exist"]),
    "insecure-skip-verify-a-string": (
        b'factory: acme\ntoken: t\nserver:\n  url: https://127.0.0.1:1\n  insecure_skip_verify: "false"\n',
        ['"server.insecure_skip_verify" must be true or false'],
    ),
    "a-directory": (None, ["cannot read config file", "Is a directory"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_file(cli, tmp_path, case):
    content, fragments = CONFIG_CASES[case]
    config = tmp_path / "fioctl.yaml"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    before = snapshot(config)
    result = cli("-c", config, "keys", "ca", "create", tmp_path / "pki", "--yes")
    line = assert_error(result, *fragments)
    assert line.startswith("ERROR: ") and result.stderr.splitlines()[0] == line
    assert snapshot(config) == before
    assert not (tmp_path / "pki").exists()


def test_insecure_skip_verify_still_takes_a_boolean(tmp_path):
    """Negative twin of the quoted-"false" case: real booleans (and absence) keep working."""
    from fioca.config import load_settings

    config = tmp_path / "fioctl.yaml"
    for text, expected in (("true", True), ("false", False), ("null", False)):
        config.write_text(f"server:\n  url: https://h\n  insecure_skip_verify: {text}\n")
        assert load_settings(config=config, environ={}).insecure_skip_verify is expected


def test_bad_config_in_a_real_process(fioca_subprocess, tmp_path):
    """The installed entry point handles it the same way (no traceback from `python -m fioca`)."""
    config = tmp_path / "fioctl.yaml"
    config.write_bytes(b"factory: [\n")
    proc = fioca_subprocess("keys", "ca", "show", env={"FIOCTL_CONFIG": str(config)})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"ERROR: config file {config} is not valid YAML")


# === 6. The PKI dir ==============================================================================


def test_pki_dir_is_a_file(cli, box_env, recorded, tmp_path):
    target = tmp_path / "pki"
    target.write_bytes(USER_NOTE)
    result = cli("keys", "ca", "create", target, "--yes", env=box_env)
    assert_error(result, f"{target} is not a directory (or is a symlink)")
    assert target.read_bytes() == USER_NOTE and recorded == []


def test_pki_dir_under_a_file(cli, box_env, recorded, tmp_path):
    """Not writable, in a way root cannot bypass: the parent is a regular file."""
    parent = tmp_path / "file"
    parent.write_bytes(USER_NOTE)
    result = cli("keys", "ca", "create", parent / "sub", "--yes", env=box_env)
    assert_error(result, f"cannot create {parent / 'sub'}", "Not a directory")
    assert parent.read_bytes() == USER_NOTE and recorded == []


def test_pki_dir_refusing_writes(cli, box_env, recorded, tmp_path, monkeypatch):
    """Not writable at the first write (tests run as root, so permissions are simulated: the
    temporary file cannot be made, as on a read-only mount or a 0500 dir for a normal user)."""
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).startswith(f".{facts.FACTORY_CERTS_JSON}.") and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse)
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)
    result = cli("keys", "ca", "create", pki, "--yes", env=box_env)
    assert_error(result, f"cannot write {pki / facts.FACTORY_CERTS_JSON}", "Permission denied")
    assert "PATCH" not in [m for m, _ in recorded]
    assert_kept(before, snapshot(pki))
    assert facts.FACTORY_CERTS_JSON not in snapshot(pki)


def test_full_disk_while_storing_the_root_key(cli, box, box_env, recorded, tmp_path, monkeypatch):
    real_write = os.write

    def half_then_full(fd, data):
        """Half the bytes of the root key's temporary file reach the disk, then the disk is full."""
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if f".{facts.ROOT_KEY}." in target:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", half_then_full)
    pki = user_pki_dir(tmp_path)
    before = snapshot(pki)
    result = cli("keys", "ca", "create", pki, "--yes", env=box_env)
    assert_error(result, f"no space left to write {pki / facts.ROOT_KEY}")
    assert "Uploading" not in result.stderr
    assert [m for m, _ in recorded] == ["POST"]
    assert no_temp_files(pki) == []  # the half-written temporary file is gone
    assert not (pki / facts.ROOT_KEY).exists()  # and no partial key took its place
    assert_kept(before, snapshot(pki))


# === 7. `update` and `sign` inputs ================================================================


@pytest.fixture(scope="module")
def signing_pki(tmp_path_factory) -> Path:
    """A PKI dir with a root of trust, made in process (sign needs no server)."""
    pki = tmp_path_factory.mktemp("signing") / "pki"
    pki.mkdir(mode=0o700)
    key = profiles.new_key()
    files.write_file(pki / facts.ROOT_KEY, profiles.private_key_pem(key))
    files.write_file(pki / facts.ROOT_CERT, profiles.cert_pem(profiles.build_root(key, factory=FACTORY)))
    return pki


def _input(tmp_path: Path, case: str, content: Callable[[], bytes] | bytes | None) -> Path:
    path = tmp_path / f"{case}.pem"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content() if callable(content) else content)
    return path


UPDATE_CASES: dict[str, tuple[Any, list[str]]] = {
    "invalid-utf8": (INVALID_UTF8, ["is not PEM text: invalid UTF-8 byte at offset 32"]),
    "garbage": (b"\x00\x01 garbage \x02 not pem", ["is not PEM: no -----BEGIN"]),
    "empty": (b"", ["is not PEM: no -----BEGIN"]),
    "private-key": (lambda: key_pem().encode(), ["must hold only PEM CERTIFICATE blocks", "PRIVATE KEY block"]),
    "csr-not-cert": (lambda: csr_pem().encode(), ["got a CERTIFICATE REQUEST block"]),
    "broken-base64": (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", ["broken base64 body"]),
    "a-directory": (None, ["cannot read", "Is a directory"]),
}


@pytest.mark.parametrize("case", list(UPDATE_CASES))
def test_update_with_a_bad_file(cli, box_env, recorded, tmp_path, case):
    content, fragments = UPDATE_CASES[case]
    bundle = _input(tmp_path, case, content)
    before = snapshot(bundle)
    result = cli("keys", "ca", "update", bundle, "--yes", env=box_env)
    line = assert_error(result, *fragments)
    assert result.stderr.splitlines()[0] == line
    assert recorded == []  # checked before anything was sent
    assert snapshot(bundle) == before
    if case == "private-key":
        body = "".join(bundle.read_text().splitlines()[1:-1])
        assert body[:40] not in result.output


SIGN_CASES: dict[str, tuple[Any, list[str]]] = {
    "invalid-utf8": (INVALID_UTF8_CSR, ["is not PEM text: invalid UTF-8 byte at offset 40"]),
    "garbage": (b"\xde\xad\xbe\xef garbage", ["is not PEM"]),
    "empty": (b"", ["is not PEM: no -----BEGIN"]),
    "private-key": (lambda: key_pem().encode(), ["must be a PEM CERTIFICATE REQUEST", "PRIVATE KEY block"]),
    "certificate-not-csr": (lambda: self_signed_cert_pem().encode(), ["got a CERTIFICATE block"]),
    "not-p256": (lambda: csr_pem(ec.generate_private_key(ec.SECP384R1())).encode(), ["public key must be EC P-256"]),
    "badly-self-signed": (lambda: tampered_csr_pem().encode(), ["CSR self-signature does not verify"]),
    "missing-file": ("missing", ["cannot read", "No such file or directory"]),
}


@pytest.mark.parametrize("case", list(SIGN_CASES))
def test_sign_with_a_bad_csr(cli, signing_pki, tmp_path, case):
    content, fragments = SIGN_CASES[case]
    csr = tmp_path / "missing.csr" if content == "missing" else _input(tmp_path, case, content)
    before, csr_before = snapshot(signing_pki), snapshot(csr)
    result = cli("keys", "ca", "sign", "--pki-dir", signing_pki, csr)
    line = assert_error(result, *fragments)
    assert result.stderr.splitlines()[0] == line
    assert result.stdout == ""  # no certificate printed
    assert snapshot(signing_pki) == before and snapshot(csr) == csr_before
    if case == "private-key":
        assert "".join(csr.read_text().splitlines()[1:-1])[:40] not in result.output


def test_sign_with_a_good_csr(cli, signing_pki, tmp_path):
    """Negative twin: the same PKI dir signs a good CSR and prints one certificate."""
    csr = tmp_path / "good.csr"
    csr.write_text(csr_pem())
    result = cli("keys", "ca", "sign", "--pki-dir", signing_pki, csr)
    assert result.exit_code == 0, result.output
    profiles.load_cert(result.stdout, "stdout")


@pytest.mark.parametrize("case", ["pki-dir-is-a-file", "pki-dir-without-root"])
def test_sign_with_a_bad_pki_dir(cli, tmp_path, case):
    csr = tmp_path / "good.csr"
    csr.write_text(csr_pem())
    pki = tmp_path / "pki"
    if case == "pki-dir-is-a-file":
        pki.write_bytes(USER_NOTE)
        fragment = "is not a directory (or is a symlink)"
    else:
        pki.mkdir()
        fragment = "factory_ca.pem does not exist"
    before = snapshot(pki)
    result = cli("keys", "ca", "sign", "--pki-dir", pki, csr)
    assert_error(result, fragment)
    assert result.stdout == "" and snapshot(pki) == before
