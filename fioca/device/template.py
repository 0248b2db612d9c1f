"""Offline device certificates from a template: the batch's certificate made once by
`cryptography`'s builder, then filled in per device and signed with its ECDSA.

The X.509 builder costs several times a signature per certificate. Every device of a batch
shares all but a few fields, so `DeviceTemplate` has the builder make one certificate and one
CSR for a stand-in device, checks them whole with the profile checks, and keeps their DER
pieces. Per device it draws a key, fills in serial, validity, subject, public key and
subjectKeyIdentifier, signs the TBS with the local CA key and the CSR with the device key.

`DeviceTemplate.check` then reads every certificate back with a DER reader of its own (it
does not reuse the pieces it was assembled from): its structure, signature algorithm, serial,
issuer, validity, subject (CN = the uuid, OU = the factory, businessCategory when
production), its key (the one in pkey.pem, on P-256), and exactly the profile's extensions
with the SKID computed from that key. The CSR must carry the same subject and key. The first
device and every FULL_CHECK_EVERY-th also get the full checks: both signatures verified
(the certificate's with local-ca.pem's key, the CSR's with its own), and `check_device`, the
profile check of both offline paths (the documented procedure's too) through `cryptography`.
A signature verification costs more than the signature (and a quarter of a device's build):
the key that signs was matched to local-ca.pem when the batch began, and the sample
verifies that it still does.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.errors import CheckError
from fioca.pki import profiles
from fioca.pki.profiles import der

CLIENT_CERT = "client.pem"
PKEY = "pkey.pem"
CSR = "device-cert.csr"

# A stand-in device for the template: a canonical uuid has 36 characters, like every other.
STAND_IN_UUID = "00000000-0000-4000-8000-000000000000"
# RFC 5480: id-ecPublicKey with the namedCurve prime256v1, the AlgorithmIdentifier of a P-256 key.
P256_KEY_ALGORITHM = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
P256_CURVE = bytes.fromhex("06082a8648ce3d030107")
# RFC 5758: ecdsa-with-SHA256, no parameters.
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
OID_CN = bytes.fromhex("0603550403")
OID_OU = bytes.fromhex("060355040b")
OID_BUSINESS_CATEGORY = bytes.fromhex("060355040f")
OID_SKID = bytes.fromhex("0603551d0e")
# The DER before a P-256 key's 65-byte point in its SubjectPublicKeyInfo, and before the
# 20-byte SHA-1 in a subjectKeyIdentifier extension (RFC 5280 4.2.1.2, method 1).
SPKI_PREFIX = bytes.fromhex("3059") + P256_KEY_ALGORITHM + bytes.fromhex("034200")
SKID_PREFIX = bytes.fromhex("301d") + OID_SKID + bytes.fromhex("04160414")
# RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_SEQUENCE, _SET, _INTEGER, _BIT_STRING, _OCTET_STRING, _UTF8 = 0x30, 0x31, 0x02, 0x03, 0x04, 0x0C
_SIGN = ec.ECDSA(hashes.SHA256())
# In a batch, the whole `cryptography` check also runs on every 64th device.
FULL_CHECK_EVERY = 64


@dataclass(frozen=True)
class IssuedDevice:
    """One device's key, CSR and certificate, as DER (what its PEM files hold)."""

    uuid: str
    key_der: bytes  # SEC1 ECPrivateKey, its public key included
    csr_der: bytes
    cert_der: bytes

    def pem_files(self) -> dict[str, bytes]:
        return {
            PKEY: pem("EC PRIVATE KEY", self.key_der),
            CSR: pem("CERTIFICATE REQUEST", self.csr_der),
            CLIENT_CERT: pem("CERTIFICATE", self.cert_der),
        }


def pem(label: str, data: bytes) -> bytes:
    """PEM as OpenSSL and `cryptography` write it: 64 base64 characters a line."""
    lines = [binascii.b2a_base64(data[i : i + 48], newline=True) for i in range(0, len(data), 48)]
    return b"".join([f"-----BEGIN {label}-----\n".encode(), *lines, f"-----END {label}-----\n".encode()])


def _time(moment: datetime) -> bytes:
    if moment.year < 2050:
        return der.tlv(_UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode())
    return der.tlv(_GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode())


def _read_time(data: bytes, tag: int) -> datetime:
    if tag == _UTC_TIME and len(data) == 13 and data.endswith(b"Z") and data[:12].isdigit():
        year = int(data[:2])
        year += 1900 if year >= 50 else 2000
        rest = data[2:12]
    elif tag == _GENERALIZED_TIME and len(data) == 15 and data.endswith(b"Z") and data[:14].isdigit():
        year, rest = int(data[:4]), data[4:14]
    else:
        raise ValueError("not a UTCTime or GeneralizedTime in whole seconds")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """der.children, with each element checked to end inside [start, end]."""
    found = der.children(data, start, end)
    if found and found[-1][3] != end:
        raise ValueError("element runs past its container")
    return found


def _tlv_of(data: bytes, element: tuple[int, int, int, int]) -> bytes:
    return data[element[1] : element[3]]


def _content(data: bytes, element: tuple[int, int, int, int]) -> bytes:
    return data[element[2] : element[3]]


def _subject_der(uuid: str, factory: str, production: bool) -> bytes:
    """The subject as the builder encodes it (UTF8String values; one attribute per RDN)."""
    attributes = [(OID_CN, uuid), (OID_OU, factory)] + ([(OID_BUSINESS_CATEGORY, profiles.PRODUCTION)] if production else [])
    rdns = (der.tlv(_SET, der.tlv(_SEQUENCE, oid + der.tlv(_UTF8, value.encode()))) for oid, value in attributes)
    return der.tlv(_SEQUENCE, b"".join(rdns))


def _key_point(key_der: bytes) -> bytes:
    """The public point in a SEC1 ECPrivateKey, which must be on P-256 (RFC 5915)."""
    _tag, start, end = der.read(key_der, 0)
    fields = _elements(key_der, start, end)
    if [tag for tag, *_ in fields] != [_INTEGER, _OCTET_STRING, 0xA0, 0xA1] or _content(key_der, fields[2]) != P256_CURVE:
        raise CheckError(PKEY, "is not a P-256 EC private key with its public key")
    bits = _content(key_der, fields[3])
    if bits[:3] != b"\x03\x42\x00" or bits[3] != 0x04 or len(bits) != 68:
        raise CheckError(PKEY, "does not hold an uncompressed P-256 public key")
    return bits[3:]


def check_device(
    cert: x509.Certificate,
    *,
    key: Any,
    local_ca: x509.Certificate,
    factory: str,
    uuid: str,
    production: bool,
    days: int,
    csr: x509.CertificateSigningRequest | None = None,
) -> None:
    """The device cert's profile, its key, its CSR, production marking and validity length
    (both paths: the template's batch and the documented procedure)."""
    profiles.check_device_cert(cert, ca=local_ca, factory=factory, uuid=uuid, artifact=CLIENT_CERT)
    profiles.check_key_matches(key, cert, PKEY)
    categories = cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)
    if production != bool(categories):
        want = "a production" if production else "a non-production"
        raise CheckError(CLIENT_CERT, f"must be {want} certificate (businessCategory={profiles.PRODUCTION})")
    length = cert.not_valid_after_utc - cert.not_valid_before_utc
    if abs(length - timedelta(days=days)) > profiles.VALIDITY_SLACK:
        raise CheckError(CLIENT_CERT, f"validity must be {days} days, got {length.total_seconds() / 86400:g}")
    if csr is not None and csr.subject != cert.subject:
        raise CheckError(CSR, "subject differs from the certificate's")


class DeviceTemplate:
    """The batch's certificate and CSR in DER pieces, and the per-device fill, sign and check."""

    def __init__(self, *, local_ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, factory: str,
                 production: bool, days: int):
        self.local_ca = local_ca
        self.ca_key = ca_key
        self.ca_public_key = local_ca.public_key()
        self.factory = factory
        self.production = production
        self.days = days
        self.issuer = local_ca.subject.public_bytes()
        cert, csr = self._stand_in()
        self.version, self.extensions, self.csr_version, self.csr_attributes = _template_pieces(cert, csr)
        self._made = 0
        self._validity_second = -1
        self._validity = b""

    def _stand_in(self) -> tuple[x509.Certificate, x509.CertificateSigningRequest]:
        """The builder's certificate and CSR for the stand-in device, checked whole."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [
            x509.NameAttribute(NameOID.COMMON_NAME, STAND_IN_UUID),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.factory),
        ]
        if self.production:
            attributes.append(x509.NameAttribute(NameOID.BUSINESS_CATEGORY, profiles.PRODUCTION))
        subject = x509.Name(attributes)
        # openssl req with device-cert.conf: subject only, no requested extensions.
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        start = datetime.now(timezone.utc).replace(microsecond=0)
        # What `openssl x509 -req -extfile device-cert.ext` makes (OpenSSL 3 adds SKID and AKID).
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)  # copied from the CSR
            .issuer_name(self.local_ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=self.days))
            # keyUsage = critical, digitalSignature, keyAgreement
            .add_extension(profiles.key_usage(digital_signature=True, key_agreement=True), critical=True)
            # extendedKeyUsage = critical, clientAuth
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
            # subjectKeyIdentifier = hash, authorityKeyIdentifier = keyid (OpenSSL 3's defaults)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(profiles.authority_key_identifier(self.local_ca), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        check_device(cert, key=key, local_ca=self.local_ca, factory=self.factory, uuid=STAND_IN_UUID,
                     production=self.production, days=self.days, csr=csr)
        if not csr.is_signature_valid:
            raise CheckError(CSR, "the template CSR's signature does not verify")
        return cert, csr

    # --- per device --------------------------------------------------------------------------

    def issue(self, uuid: str) -> IssuedDevice:
        """A new key, its CSR and its certificate for device `uuid`; not yet checked."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())  # fmt: skip
        point = _key_point(key_der)
        subject = _subject_der(uuid, self.factory, self.production)
        spki = SPKI_PREFIX + point
        request_info = der.tlv(_SEQUENCE, self.csr_version + subject + spki + self.csr_attributes)
        csr_der = _signed(request_info, key.sign(request_info, _SIGN))
        # A random serial as the builder draws one: 159 bits, positive.
        serial = der.integer(int.from_bytes(os.urandom(20), "big") >> 1 or 1)
        skid = SKID_PREFIX + hashlib.sha1(point).digest()
        extensions = der.tlv(0xA3, der.tlv(_SEQUENCE, self.extensions[0] + self.extensions[1] + skid + self.extensions[3]))
        tbs = der.tlv(_SEQUENCE, self.version + serial + ECDSA_SHA256 + self.issuer + self.validity() + subject + spki + extensions)
        return IssuedDevice(uuid, key_der, csr_der, _signed(tbs, self.ca_key.sign(tbs, _SIGN)))

    def validity(self) -> bytes:
        """notBefore now (whole seconds), notAfter `days` later; encoded once a second."""
        second = int(time.time())
        if second != self._validity_second:
            start = datetime.fromtimestamp(second, timezone.utc)
            self._validity = der.tlv(_SEQUENCE, _time(start) + _time(start + timedelta(days=self.days)))
            self._validity_second = second
        return self._validity

    def check(self, device: IssuedDevice) -> None:
        """What `issue` made, read back (see the module docstring); CheckError names the rule."""
        try:
            subject, spki = self._check_cert(device)
            self._check_csr(device, subject, spki)
        except (ValueError, IndexError, UnicodeDecodeError):
            raise CheckError(CLIENT_CERT, "is not the DER the device profile encodes") from None
        if self._made % FULL_CHECK_EVERY == 0:
            self.check_whole(device)
        self._made += 1

    def _check_cert(self, device: IssuedDevice) -> tuple[bytes, bytes]:
        """The certificate read field by field; (its subject, its key) as DER."""
        cert = device.cert_der
        _tag, start, end = der.read(cert, 0)
        if end != len(cert):
            raise ValueError("trailing bytes")
        tbs, algorithm, signature = _elements(cert, start, end)
        if _tlv_of(cert, algorithm) != ECDSA_SHA256 or signature[0] != _BIT_STRING or cert[signature[2]] != 0:
            raise CheckError(CLIENT_CERT, "must be signed with ECDSA-SHA256")
        fields = _elements(cert, tbs[2], tbs[3])
        if [tag for tag, *_ in fields] != [0xA0, _INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE, 0xA3]:
            raise CheckError(CLIENT_CERT, "is not an X.509 v3 certificate with extensions")
        version, serial, inner_algorithm, issuer, validity, subject, spki, extensions = fields
        serial_bytes = _content(cert, serial)
        if _tlv_of(cert, version) != self.version or _tlv_of(cert, inner_algorithm) != ECDSA_SHA256:
            raise CheckError(CLIENT_CERT, "must be X.509 v3, signed with ECDSA-SHA256")
        if not 1 <= len(serial_bytes) <= 20 or serial_bytes[0] & 0x80 or not any(serial_bytes):
            raise CheckError(CLIENT_CERT, "serial must be a positive number of at most 20 octets")
        if _tlv_of(cert, issuer) != self.issuer:
            raise CheckError(CLIENT_CERT, "issuer must be local-ca.pem's subject")
        self._check_validity(cert, validity)
        self._check_subject(cert, subject, device.uuid)
        point = _key_point(device.key_der)
        if _tlv_of(cert, spki) != SPKI_PREFIX + point:
            raise CheckError(PKEY, "private key does not belong to the certificate")
        self._check_extensions(cert, extensions, point)
        return _tlv_of(cert, subject), _tlv_of(cert, spki)

    def _check_validity(self, cert: bytes, validity: tuple[int, int, int, int]) -> None:
        times = _elements(cert, validity[2], validity[3])
        if len(times) != 2:
            raise ValueError("validity is two times")
        not_before, not_after = (_read_time(_content(cert, item), item[0]) for item in times)
        if not_after - not_before != timedelta(days=self.days):
            raise CheckError(CLIENT_CERT, f"validity must be {self.days} days")
        if abs(datetime.now(timezone.utc) - not_before) > profiles.VALIDITY_SLACK:
            raise CheckError(CLIENT_CERT, "notBefore must be now")

    def _check_subject(self, cert: bytes, subject: tuple[int, int, int, int], uuid: str) -> None:
        """The subject's attributes, read one by one: CN = uuid, OU = factory[, production],
        each a UTF8String in an RDN of its own, as the builder encodes them."""
        wanted = [(OID_CN, uuid), (OID_OU, self.factory)]
        if self.production:
            wanted.append((OID_BUSINESS_CATEGORY, profiles.PRODUCTION))
        found = []
        for rdn in _elements(cert, subject[2], subject[3]):
            [attribute] = _elements(cert, rdn[2], rdn[3])
            oid, value = _elements(cert, attribute[2], attribute[3])
            if rdn[0] != _SET or value[0] != _UTF8:
                raise ValueError("an RDN is a SET holding a UTF8String")
            found.append((_tlv_of(cert, oid), _content(cert, value).decode("utf-8")))
        if found != wanted:
            production = f", businessCategory={profiles.PRODUCTION}" if self.production else ""
            raise CheckError(CLIENT_CERT, f"subject must be CN={uuid}, OU={self.factory}{production}")

    def _check_extensions(self, cert: bytes, extensions: tuple[int, int, int, int], point: bytes) -> None:
        """keyUsage, extendedKeyUsage, SKID (the key's SHA-1), AKID (local-ca.pem's): no other."""
        [sequence] = _elements(cert, extensions[2], extensions[3])
        found = [_tlv_of(cert, item) for item in _elements(cert, sequence[2], sequence[3])]
        skid = SKID_PREFIX + hashlib.sha1(point).digest()
        if found != [self.extensions[0], self.extensions[1], skid, self.extensions[3]]:
            raise CheckError(CLIENT_CERT, "extensions differ from the device profile")

    def _check_csr(self, device: IssuedDevice, subject: bytes, spki: bytes) -> None:
        """The CSR asks for the certificate's subject and key, and nothing else."""
        csr = device.csr_der
        _tag, start, end = der.read(csr, 0)
        if end != len(csr):
            raise ValueError("trailing bytes")
        info, algorithm, _signature = _elements(csr, start, end)
        fields = _elements(csr, info[2], info[3])
        if (len(fields) != 4 or _tlv_of(csr, fields[0]) != self.csr_version or _tlv_of(csr, fields[3]) != self.csr_attributes
                or _tlv_of(csr, algorithm) != ECDSA_SHA256):  # fmt: skip
            raise CheckError(CSR, "is not the device profile's request")
        if _tlv_of(csr, fields[1]) != subject or _tlv_of(csr, fields[2]) != spki:
            raise CheckError(CSR, "subject or key differs from the certificate's")

    def check_whole(self, device: IssuedDevice) -> None:
        """The full checks: both signatures, and the profile through `cryptography` (check_device)."""
        cert = x509.load_der_x509_certificate(device.cert_der)
        try:
            self.ca_public_key.verify(cert.signature, cert.tbs_certificate_bytes, _SIGN)
        except InvalidSignature:
            raise CheckError(CLIENT_CERT, "signature does not verify with local-ca.pem's key") from None
        csr = x509.load_der_x509_csr(device.csr_der)
        key = serialization.load_der_private_key(device.key_der, password=None)
        check_device(cert, key=key, local_ca=self.local_ca, factory=self.factory, uuid=device.uuid,
                     production=self.production, days=self.days, csr=csr)
        if not csr.is_signature_valid:
            raise CheckError(CSR, "self-signature does not verify")


def _signed(body: bytes, signature: bytes) -> bytes:
    return der.tlv(_SEQUENCE, body + ECDSA_SHA256 + der.tlv(_BIT_STRING, b"\x00" + signature))


def _template_pieces(cert: x509.Certificate, csr: x509.CertificateSigningRequest) -> tuple[bytes, list[bytes], bytes, bytes]:
    """(version, the four extensions, the CSR's version, its attributes) as the builder
    encoded them; refused unless the rest is what `issue` puts in their place."""
    data = cert.tbs_certificate_bytes
    fields = _elements(data, *der.read(data, 0)[1:])
    version, _serial, algorithm, issuer, _validity, subject, spki, extensions = fields
    [sequence] = _elements(data, extensions[2], extensions[3])
    found = [_tlv_of(data, item) for item in _elements(data, sequence[2], sequence[3])]
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    expected_spki = SPKI_PREFIX + point
    if (_tlv_of(data, algorithm) != ECDSA_SHA256 or _tlv_of(data, spki) != expected_spki or len(found) != 4
            or _tlv_of(data, subject) != _subject_der(STAND_IN_UUID, profiles.subject_ou(cert), len(cert.subject) == 3)
            or _tlv_of(data, issuer) != cert.issuer.public_bytes()):  # fmt: skip
        raise CheckError(CLIENT_CERT, "the template certificate is not encoded as the batch fills it in")
    info = csr.tbs_certrequest_bytes
    parts = _elements(info, *der.read(info, 0)[1:])
    if len(parts) != 4 or _tlv_of(info, parts[1]) != _tlv_of(data, subject) or _tlv_of(info, parts[2]) != expected_spki:
        raise CheckError(CSR, "the template CSR is not encoded as the batch fills it in")
    return _tlv_of(data, version), found, _tlv_of(info, parts[0]), _tlv_of(info, parts[3])
