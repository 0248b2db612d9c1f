"""EST (RFC 7030) as a device speaks it: where the server is, and its three operations.

Where: fioctl's `config rotate-certs` sends a device `https://<host>:<port><resource>`, the
host being `--server-name` or the one DNS name of the factory's `est-tls-crt` (fioctl's
`FactoryEstUrl`, with its messages), port 8443 and resource `/.well-known/est` by default.
The connection may go elsewhere (the sandbox listens on a loopback port): `Transport` maps a
host to an address as curl's `--resolve` does, or sends every host to one gateway URL; the TLS
name stays the host's either way.

How: over mTLS with the device's current key and certificate, trusting only the device's
`root.crt` for the EST host's name (RFC 7030 3.3: the client authenticates with its
certificate, and checks the server against its explicit trust anchor). `cacerts` is a GET;
`simplereenroll` POSTs the CSR as `application/pkcs10` (DER, base64); answers are certs-only
PKCS#7 (DER, base64, whitespace allowed, RFC 8951), 200 as RFC 7030 says (201, which
Foundries' estserver sends, is taken too). Every request goes through `fioca.api`.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from fioca import api, facts
from fioca.errors import CheckError, FiocaError, RefusedError, UsageError
from fioca.pki import profiles

TIMEOUT_SECONDS = 15
MAX_BODY = 256 * 1024  # a few certificates in base64
BASE64_LINE = 64


@dataclass(frozen=True)
class EstServer:
    host: str
    port: int = facts.EST_PORT
    resource: str = facts.EST_RESOURCE

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.resource}"


def named_server(name: str, *, port: int = facts.EST_PORT, resource: str = facts.EST_RESOURCE) -> EstServer:
    """`--server-name`: an EST server not run by Foundries.io (fioctl's flag)."""
    if not name or "/" in name or ":" in name:
        raise UsageError(f"--server-name {name!r} must be a host name, e.g. est.example.com")
    return EstServer(name, port, _resource(resource))


def factory_server(certs: dict[str, Any], *, port: int = facts.EST_PORT, resource: str = facts.EST_RESOURCE) -> EstServer:
    """fioctl's FactoryEstUrl: the one DNS name of the factory's est-tls-crt."""
    text = certs.get("est-tls-crt") or ""
    if not text:
        raise FiocaError("EST server is not configured. Please see `fioca keys est`")
    cert = profiles.load_server_cert(text, "est-tls-crt")
    hosts = profiles.gateway_hosts(cert)
    if len(hosts) != 1:
        raise FiocaError(f"Certificate expected to have 1 DNS name, {len(hosts)} found")
    return EstServer(hosts[0], port, _resource(resource))


def _resource(resource: str) -> str:
    # fioctl: a resource without its leading slash gets one.
    return (resource if resource.startswith("/") else "/" + resource).rstrip("/")


@dataclass(frozen=True)
class Transport:
    """Where a connection for (host, port) goes: a `--resolve HOST:PORT:ADDR` for that host, else
    the `--gateway-url` for every host, else the host itself."""

    resolves: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    gateway: tuple[str, int] | None = None

    def target(self, host: str, port: int) -> tuple[str, int]:
        if host in self.resolves:
            resolved_port, address = self.resolves[host]
            return address, resolved_port or port
        if self.gateway is not None:
            return self.gateway
        return host, port


# --- The encodings ---------------------------------------------------------------------------


def csr_body(csr: x509.CertificateSigningRequest) -> bytes:
    """A CSR as EST sends it: DER in base64, in lines as `openssl base64` writes them."""
    text = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
    return b"".join(text[i : i + BASE64_LINE] + b"\n" for i in range(0, len(text), BASE64_LINE))


def certs_from_answer(body: bytes, what: str) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 in base64 (as RFC 7030 sends it)."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except (binascii.Error, ValueError):
        raise CheckError(what, "is not a base64 certs-only PKCS#7 (application/pkcs7-mime)") from None
    if not certs:
        raise CheckError(what, "holds no certificate")
    return certs


# --- The client ------------------------------------------------------------------------------


class EstClient:
    """One device's EST session: its key and certificate files, its root.crt, the server."""

    def __init__(self, server: EstServer, transport: Transport, *, root: Path, cert: Path, key: Path):
        self.server = server
        self.transport = transport
        self.root = root
        context = ssl.create_default_context(cafile=str(root))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as error:
            raise CheckError(cert.name, f"key and certificate do not load together: {error.reason}") from None
        self._context = context

    def cacerts(self) -> list[x509.Certificate]:
        """GET cacerts: the root and the CAs the server issues from (RFC 7030 4.1)."""
        answer = self._request("GET", facts.EST_CACERTS)
        return certs_from_answer(answer.body, f"the answer to {facts.EST_CACERTS}")

    def simplereenroll(self, csr: x509.CertificateSigningRequest) -> list[x509.Certificate]:
        """POST simplereenroll: the certificate issued for `csr` (RFC 7030 4.2.2)."""
        answer = self._request("POST", facts.EST_SIMPLEREENROLL, csr_body(csr))
        return certs_from_answer(answer.body, f"the answer to {facts.EST_SIMPLEREENROLL}")

    def _request(self, method: str, operation: str, body: bytes | None = None) -> api.DeviceAnswer:
        server = self.server
        address, port = self.transport.target(server.host, server.port)
        path = f"{server.resource}/{operation}"
        headers = {"Accept": facts.EST_CERTS_TYPE.split(";")[0]}
        if body is not None:
            headers["Content-Type"] = facts.EST_CSR_TYPE
        try:
            answer = api.device_request(
                server.host, port, address, context=self._context, method=method, path=path, body=body,
                headers=headers, timeout=TIMEOUT_SECONDS, max_body=MAX_BODY,
            )
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
            raise self._handshake_refusal(error) from None
        except OSError as error:  # TimeoutError included
            raise FiocaError(
                f"cannot reach the EST server {server.host} at {address}:{port}: {error.strerror or error}"
            ) from None
        if answer.status not in (200, 201) or len(answer.body) > MAX_BODY:
            raise self._refusal(method, operation, answer)
        return answer

    def _handshake_refusal(self, error: OSError) -> FiocaError:
        host = self.server.host
        if isinstance(error, ssl.SSLCertVerificationError):
            return RefusedError(
                f"the EST server's certificate does not verify against {self.root.name} for {host}: {error.verify_message}"
            )
        reason = str(getattr(error, "reason", None) or error).lower().replace("_", " ")
        if "unrecognized name" in reason:
            return RefusedError(
                f"the EST server refused the name {host} in the TLS handshake (unrecognized name): "
                "the factory has not authorized an EST server for it",
                details=["  see `fioca keys est show`; `fioca keys est authorize PKI_DIR` authorizes one"],
            )
        return RefusedError(
            f"the EST server {host} refused the device certificate in the TLS handshake ({reason or error.__class__.__name__}): "
            "its CA is not trusted"
        )

    def _refusal(self, method: str, operation: str, answer: api.DeviceAnswer) -> FiocaError:
        text = answer.body[:500].decode("utf-8", errors="replace").strip()
        if answer.content_type.startswith("application/json"):
            try:
                text = str(json.loads(text).get("message") or text)
            except (ValueError, AttributeError):
                pass
        line = f"the EST server answered {method} {operation} with {answer.status} {answer.reason}".rstrip()
        error = RefusedError if 400 <= answer.status < 500 else FiocaError
        return error(f"{line}: {text.splitlines()[0] if text else 'no reason given'}")
