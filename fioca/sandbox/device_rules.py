"""PKI-SPEC section 7's rules for a device certificate, shared by the gateway (a device's
first request registers it) and pre-registration (`PUT /ota/devices/`).

A device certificate is accepted when a trusted device CA signed it, it is valid now, it is
not a CA, it is for TLS clients (extendedKeyUsage clientAuth), its OU is the factory and its
CN is the device UUID in the one canonical spelling. A new device is refused under a
disabled CA; a deleted (deny-listed) device is refused; a known UUID with another key is
refused, except the key EST certified for it (`est.py`): its first use completes the rotation,
and from then on the old key is the one refused. Every refusal is a `DeviceRefused` whose message is the 403 body's `message`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.sandbox.certs import is_ca, is_canonical_uuid, is_production, issued_by
from fioca.sandbox.store import DeviceRecord, DeviceWrites, Store, new_device, utc_now

log = logging.getLogger("fioca.sandbox.gateway")

# last_seen is written when the stored value is older than this, not on every request: a
# device polling every few seconds would otherwise cost a database write each time.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


class DeviceRefused(Exception):
    """The gateway (or pre-registration) refuses an authenticated device certificate."""


@dataclass(frozen=True)
class TrustedCa:
    """A device CA as the gateway trusts it: one of ca-crt, or the shared device CA."""

    cert: x509.Certificate
    serial: str
    common_name: str
    disabled: bool = False  # certificateHold: known devices stay, new ones are refused
    key_id: bytes | None = None  # its subjectKeyIdentifier, to tell same-named CAs apart
    subject_der: bytes = b""  # compared with a device certificate's issuer, byte for byte

    @classmethod
    def of(cls, cert: x509.Certificate, *, disabled: bool = False) -> TrustedCa:
        try:
            key_id = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            key_id = None
        return cls(cert=cert, serial=str(cert.serial_number), common_name=common_name(cert.subject) or "",
                   disabled=disabled, key_id=key_id, subject_der=cert.subject.public_bytes())


@dataclass(frozen=True)
class PresentedCert:
    """What the rules need from a device certificate, parsed once per certificate."""

    uuid: str | None
    units: tuple[str, ...]
    is_prod: bool
    is_ca: bool
    client_auth: bool
    not_before: datetime
    not_after: datetime
    pubkey_pem: str
    ca: TrustedCa | None  # the device CA that signed it, None when no trusted CA did


def common_name(name: x509.Name) -> str | None:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def find_issuer(cert: x509.Certificate, cas: list[TrustedCa], *, verified: bool) -> TrustedCa | None:
    """The trusted CA that signed `cert`. `verified`: the TLS handshake already checked the
    signature against these CAs, so one candidate by name and key id is the answer without
    checking it again; same-named CAs the key id cannot tell apart are told by signature."""
    issuer = cert.issuer.public_bytes()
    # Signers copy the CA's subject bytes as the issuer; a re-encoded name is compared as a name.
    candidates = [ca for ca in cas if ca.subject_der == issuer] or [ca for ca in cas if ca.cert.subject == cert.issuer]
    key_id = _authority_key_id(cert)
    if key_id is not None:
        candidates = [ca for ca in candidates if ca.key_id in (None, key_id)]
    if verified and len(candidates) == 1:
        return candidates[0]
    return next((ca for ca in candidates if issued_by(cert, ca.cert)), None)


def read_presented(cert: x509.Certificate, cas: list[TrustedCa], *, verified: bool) -> PresentedCert:
    """Parse a device certificate and find its device CA among `cas` (see find_issuer)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        client_auth = False
    return PresentedCert(
        uuid=common_name(cert.subject),
        units=tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)),
        is_prod=is_production(cert.subject),
        is_ca=is_ca(cert),
        client_auth=client_auth,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pubkey_pem=cert.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii"),
        ca=find_issuer(cert, cas, verified=verified),
    )


class DeviceRules:
    """The rules for one factory; registers new devices in its store."""

    def __init__(self, store: Store, factory: str, local_ca_cn: str, owner: str):
        self.store = store
        self.factory = factory
        self.local_ca_cn = local_ca_cn
        self.owner = owner

    def admit(self, presented: PresentedCert, writes: DeviceWrites) -> DeviceRecord | None:
        """A device's request at the gateway: its record (last_seen kept current through
        `writes`), or DeviceRefused, or None for a new device the rules let register: it is in
        `writes` now, and the request is admitted again once they are committed (so is a
        device's first use of the key EST certified: its rotation is in `writes`). Runs on every
        request, so a deletion, a disable or a revocation applies to connections already open."""
        self.check_certificate(presented)
        assert presented.uuid is not None and presented.ca is not None  # checked above
        record = self.store.device(presented.uuid)
        if record is None:
            self._check_may_register(presented.ca)
            # The first claim of the group is the one committed; a second key is refused after it.
            writes.new.setdefault(presented.uuid, self._new_device(presented, name=presented.uuid, group=None, seen=True))
            return None
        record = self._check_known_device(record, presented, writes)
        if record is None:
            return None  # its key rotation waits for the group commit
        # The timestamps are fixed-width ISO-8601 UTC: comparing the strings compares the times.
        stale = (datetime.now(UTC) - LAST_SEEN_RESOLUTION).strftime("%Y-%m-%dT%H:%M:%SZ")
        if record.last_seen is None or record.last_seen <= stale:
            seen = writes.seen[record.uuid] = utc_now()
            record = dataclasses.replace(record, last_seen=seen)
        return record

    def pre_register(self, presented: PresentedCert, *, name: str | None, group: str | None) -> DeviceRecord:
        """`PUT /ota/devices/`: record a device from its certificate before it connects."""
        self.check_certificate(presented)
        assert presented.uuid is not None
        if self.store.device(presented.uuid) is not None:
            raise DeviceExists(presented.uuid)
        return self._register(presented, name=name or presented.uuid, group=group)

    def check_certificate(self, presented: PresentedCert) -> None:
        """The rules on the certificate alone (see the module docstring)."""
        ca = presented.ca
        if ca is None:
            raise DeviceRefused(f"the certificate is not signed by a device CA of factory '{self.factory}'")
        now = datetime.now(UTC)
        if now < presented.not_before:
            raise DeviceRefused(f"the certificate is not valid yet (notBefore {presented.not_before:%Y-%m-%dT%H:%M:%SZ})")
        if now > presented.not_after:
            raise DeviceRefused(f"the certificate has expired (notAfter {presented.not_after:%Y-%m-%dT%H:%M:%SZ})")
        if not ca.cert.not_valid_before_utc <= now <= ca.cert.not_valid_after_utc:
            raise DeviceRefused(f"the device CA serial {ca.serial} is outside its validity period")
        if presented.is_ca:
            raise DeviceRefused("a device certificate must not be a CA (basicConstraints CA:TRUE)")
        if not presented.client_auth:
            raise DeviceRefused("the certificate lacks extendedKeyUsage clientAuth")
        if presented.units != (self.factory,):
            units = ", ".join(presented.units) or "(none)"
            raise DeviceRefused(f"the certificate's OU is {units}, not factory '{self.factory}'")
        if not is_canonical_uuid(presented.uuid):
            raise DeviceRefused(
                f"the certificate's CN must be the device UUID, lower-case and hyphenated, not {presented.uuid or '(none)'}"
            )

    def _check_may_register(self, ca: TrustedCa) -> None:
        if ca.disabled:
            raise DeviceRefused(f"device CA serial {ca.serial} is disabled: it may not register new devices")

    def _new_device(self, presented: PresentedCert, *, name: str, group: str | None, seen: bool) -> DeviceRecord:
        assert presented.uuid is not None and presented.ca is not None
        ca = presented.ca
        return new_device(
            uuid=presented.uuid, name=name, pubkey=presented.pubkey_pem, is_prod=presented.is_prod,
            ca_serial=ca.serial,
            # A local CA is named after its user (fio-<polis-id>); that user owns its devices.
            owner=self.owner if ca.common_name == self.local_ca_cn else None,
            group=group, seen=seen,
        )

    def _register(self, presented: PresentedCert, *, name: str, group: str | None) -> DeviceRecord:
        """Record a pre-registered device, exactly once even when two requests for it race:
        the loser gets DeviceExists."""
        assert presented.uuid is not None and presented.ca is not None
        self._check_may_register(presented.ca)
        record = self._new_device(presented, name=name, group=group, seen=False)
        if not self.store.commit_device_writes(DeviceWrites(new={record.uuid: record})):
            raise DeviceExists(record.uuid)
        log.info("registered device %s (device CA serial %s)", record.uuid, record.ca_serial)
        return record

    def _check_known_device(self, record: DeviceRecord, presented: PresentedCert,
                            writes: DeviceWrites) -> DeviceRecord | None:
        """The record of a known device presenting its key; the first use of a key EST
        certified (`pending_pubkey`) completes the rotation: from then on only it is accepted.
        That write is put in `writes` and None returned: admitted again after their commit."""
        if record.deny_listed:
            raise DeviceRefused(f"device {record.uuid} was deleted (it is on the deny-list)")
        if record.pubkey == presented.pubkey_pem:
            return record
        if record.pending_pubkey == presented.pubkey_pem:
            # A write: with the next group commit, on its thread, never on the loop (which a
            # database locked by another process would stop); admitted again after it.
            writes.rotated[record.uuid] = presented.pubkey_pem
            return None
        raise DeviceRefused(f"device {record.uuid} is registered with another public key")


class DeviceExists(Exception):
    """Pre-registration of a uuid the factory knows already (deleted ones included)."""

    def __init__(self, uuid: str):
        super().__init__(uuid)
        self.uuid = uuid

