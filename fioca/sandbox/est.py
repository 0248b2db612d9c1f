"""The sandbox's EST service (RFC 7030): device certificates renewed over the gateway's mTLS.

The real service runs an EST server at `<repoid>.est.foundries.io` once the factory signed its
TLS certificate (`fioctl keys est authorize`: POST `est-tls-csr`, PATCH `est-tls-crt`). The
sandbox serves it on the gateway's port: a device that asks for the EST host by name (SNI)
gets `est-tls-crt` and this service; before `est-tls-crt` is accepted the gateway refuses that
name in the handshake (`gateway.py`). The device authenticates with its current certificate,
and the gateway's rules (`device_rules.py`) admit it first, as on any request: a deleted
device, or a device unknown under a disabled CA, gets no certificate.

Operations under `/.well-known/est/` (no CA label):
  GET  cacerts         the factory root and the device CA EST issues from (RFC 7030 4.1.3:
                       the root and what a client needs to build the chain to it)
  POST simpleenroll    a CSR for the device's own identity (same subject names)       (4.2.1)
  POST simplereenroll  a CSR whose subject and subjectAltName are, byte for byte, the
                       current certificate's (4.2.2): a renewal, with a new key or not
A request body is `application/pkcs10`: a DER CSR in base64 (whitespace allowed, RFC 8951);
an answer is `application/pkcs7-mime; smime-type=certs-only`: a DER certs-only PKCS#7 in
base64, holding only the certificate issued (4.2.3). Errors are 4xx/5xx with a text/plain line.

Which CA issues: the factory's newest online device CA that is in `ca-crt` and not disabled
(`Backend.online_ca`, the one registration signs with): after `keys ca add-device-ca
--online-ca`, the new one. The certificate is what Foundries' estserver issues: the CSR's
subject, keyUsage digitalSignature, extendedKeyUsage clientAuth, a random 128-bit serial,
365 days (no later than the CA's notAfter).

The key pin: the device's record keeps its current key and gets the new one as
`pending_pubkey`. The gateway accepts both until the device first presents the new key; that
completes the rotation, and from then on the old key is refused. So a device interrupted
after enrolling, before it switched to the new files, still connects with the old ones.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from fioca import facts
from fioca.sandbox.backend import Backend, OnlineCa
from fioca.sandbox.certs import key_usage
from fioca.sandbox.store import DeviceRecord

log = logging.getLogger("fioca.sandbox.est")

OPERATIONS = {facts.EST_CACERTS: "GET", facts.EST_SIMPLEENROLL: "POST", facts.EST_SIMPLEREENROLL: "POST"}
TEXT = "text/plain; charset=utf-8"
BASE64_LINE = 64  # what `openssl base64` writes and reads


@dataclass(frozen=True)
class EstAnswer:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


class EstRefused(Exception):
    """A request the EST service answers with `status` and a one-line text message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_est_path(path: str) -> bool:
    return path == facts.EST_RESOURCE or path.startswith(facts.EST_RESOURCE + "/")


def base64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + BASE64_LINE] + b"\n" for i in range(0, len(text), BASE64_LINE))


def certs_only(certs: list[x509.Certificate]) -> bytes:
    """A degenerate (certs-only) PKCS#7 of `certs`, DER in base64: an EST answer body."""
    return base64_lines(pkcs7.serialize_certificates(certs, serialization.Encoding.DER))


class EstService:
    """RFC 7030's three operations for the one factory a Backend holds."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._signing: tuple[str, ec.EllipticCurvePrivateKey] | None = None  # (CA serial, its key)

    def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, device: DeviceRecord, client_der: bytes
    ) -> EstAnswer:
        """The answer to one request of an admitted device, `client_der` its certificate."""
        operation = path[len(facts.EST_RESOURCE) :].strip("/")
        try:
            wanted = OPERATIONS.get(operation)
            if wanted is None:
                raise EstRefused(404, f"not found: {path} (this EST server has cacerts, simpleenroll, simplereenroll)")
            if method != wanted and not (wanted == "GET" and method == "HEAD"):
                raise EstRefused(405, f"{operation} takes {wanted}, not {method}")
            if operation == facts.EST_CACERTS:
                return EstAnswer(200, certs_only(self._ca_certs()), facts.EST_CERTS_TYPE, _BASE64_HEADER)
            client = x509.load_der_x509_certificate(client_der)
            cert = self._enroll(headers, body, device, client, renewal=operation == facts.EST_SIMPLEREENROLL)
            return EstAnswer(200, certs_only([cert]), facts.EST_CERTS_TYPE, _BASE64_HEADER)
        except EstRefused as refusal:
            log.info("EST %s %s %s (device %s): %s", method, path, refusal.status, device.uuid, refusal)
            return EstAnswer(refusal.status, f"{refusal}\n".encode(), TEXT)

    # -- cacerts ----------------------------------------------------------------------------

    def _ca_certs(self) -> list[x509.Certificate]:
        root_pem = self.backend.store.certs().root_crt or ""
        certs = [x509.load_pem_x509_certificate(root_pem.encode("ascii"))]
        issuer = self.backend.online_ca()
        if issuer is not None:
            certs.append(x509.load_pem_x509_certificate(issuer.cert_pem.encode("ascii")))
        return certs

    # -- simpleenroll / simplereenroll ------------------------------------------------------

    def _enroll(
        self, headers: Mapping[str, str], body: bytes, device: DeviceRecord, client: x509.Certificate, *, renewal: bool
    ) -> x509.Certificate:
        csr = _read_csr(headers, body)
        if renewal:
            _check_renewal(csr, client)
        elif csr.subject != client.subject:
            raise EstRefused(400, "the CSR must name the client certificate's own identity (its subject)")
        _check_requested(csr)
        issuer = self.backend.online_ca()
        if issuer is None:
            raise EstRefused(503, "the factory has no usable online device CA to issue from (none in ca-crt, or disabled)")
        cert = self._issue(csr, issuer)
        pubkey = csr.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        store = self.backend.store
        if not store.set_pending_key(device.uuid, pubkey, issuer.serial):
            raise EstRefused(403, f"device {device.uuid} was deleted (it is on the deny-list)")
        if pubkey == device.pubkey:
            store.complete_rotation(device.uuid, pubkey)  # a renewal with the same key: nothing to wait for
        log.info("EST issued device %s a certificate (serial %s) from device CA serial %s",
                 device.uuid, cert.serial_number, issuer.serial)
        return cert

    def _issue(self, csr: x509.CertificateSigningRequest, issuer: OnlineCa) -> x509.Certificate:
        ca_cert = x509.load_pem_x509_certificate(issuer.cert_pem.encode("ascii"))
        ca_key = self._ca_key(issuer)
        now = datetime.now(UTC)
        not_after = min(now + timedelta(days=facts.EST_DEVICE_DAYS), ca_cert.not_valid_after_utc)
        try:
            akid = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            )
        except x509.ExtensionNotFound:
            akid = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(csr.subject)  # the device's identity, as it asked (and as it was)
            .issuer_name(ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(secrets.randbelow(2**128 - 1) + 1)  # random, below 2^128, never 0 (as estserver)
            .not_valid_before(now)
            .not_valid_after(not_after)
            # Signs TLS handshakes only.
            .add_extension(key_usage(digital_signature=True), critical=True)
            # A TLS client of the device gateway, nothing else.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
            # Names the CA's key, so the gateway tells it apart from a same-named CA.
            .add_extension(akid, critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    def _ca_key(self, issuer: OnlineCa) -> ec.EllipticCurvePrivateKey:
        """The issuing CA's key, parsed once per CA (a fleet re-enrols in bursts)."""
        if self._signing is None or self._signing[0] != issuer.serial:
            key = serialization.load_pem_private_key(issuer.key_pem.encode("ascii"), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._signing = (issuer.serial, key)
        return self._signing[1]


_BASE64_HEADER = (("Content-Transfer-Encoding", "base64"),)  # RFC 7030 asks for it; RFC 8951 lets clients ignore it


def _read_csr(headers: Mapping[str, str], body: bytes) -> x509.CertificateSigningRequest:
    """The request's CSR: `application/pkcs10`, base64 of DER, self-signed, EC P-256."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != facts.EST_CSR_TYPE:
        raise EstRefused(415, f"the request must be {facts.EST_CSR_TYPE} (a base64 DER CSR), not {media_type or 'untyped'}")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EstRefused(400, "the CSR payload is not base64") from None
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise EstRefused(400, "the payload is not a DER certificate signing request") from None
    if not csr.is_signature_valid:
        raise EstRefused(400, "the CSR's signature does not match its public key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != facts.CURVE_SEC:
        raise EstRefused(400, f"the CSR's key must be EC {facts.CURVE_NIST}, as the device CA's")
    if not isinstance(csr.signature_hash_algorithm, hashes.SHA256):
        raise EstRefused(400, "the CSR must be signed with ECDSA-SHA256, as the device CA signs")
    return csr


def _check_renewal(csr: x509.CertificateSigningRequest, client: x509.Certificate) -> None:
    """RFC 7030 4.2.2: subject and subjectAltName identical to the certificate being renewed."""
    if csr.subject.public_bytes() != client.subject.public_bytes():
        raise EstRefused(400, "the CSR's subject must be the current client certificate's, byte for byte")
    if _alt_names(csr.extensions) != _alt_names(client.extensions):
        raise EstRefused(400, "the CSR's subjectAltName must be the current client certificate's")


def _alt_names(extensions: x509.Extensions) -> x509.SubjectAlternativeName | None:
    try:
        return extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _check_requested(csr: x509.CertificateSigningRequest) -> None:
    """What a device certificate is for, and no more: a request for more is refused, as
    Foundries' estserver refuses it (other extensions are not copied, so they grant nothing)."""
    for extension in csr.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise EstRefused(400, "the CSR asks for CA:TRUE; EST issues device certificates only")
        if isinstance(value, x509.KeyUsage) and value != key_usage(digital_signature=True):
            raise EstRefused(400, "the CSR asks for a keyUsage other than digitalSignature")
        if isinstance(value, x509.ExtendedKeyUsage) and list(value) != [ExtendedKeyUsageOID.CLIENT_AUTH]:
            raise EstRefused(400, "the CSR asks for an extendedKeyUsage other than clientAuth")
