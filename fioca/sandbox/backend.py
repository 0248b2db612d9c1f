"""The emulated backend of the Factory certs API, independent of HTTP.

It generates the keys and CSRs the real backend keeps (gateway TLS, online device CA, EST),
and enforces the server-side rules of PKI-SPEC section 2 on every PATCH. The POST answer
carries the API's scripts of one revision (the script era, 2020-2023: what the documented
flow `jq -r .create_ca` runs) or none (today's API), as the sandbox was asked. Its checks are
written here, apart from the client's profiles in `fioca.pki.profiles`, on purpose: a bug on
one side must not hide the same bug on the other.

Every refusal is a `SandboxApiError` carrying the HTTP status and the JSON body the API sends.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fioca import facts
from fioca.pki import reference
from fioca.sandbox.certs import is_ca, issued_by
from fioca.sandbox.store import (
    KEY_ACTIVE,
    KEY_PENDING,
    KEY_RETIRED,
    KEY_REVOKED,
    CertsRecord,
    FactoryRecord,
    Store,
    utc_now,
)

PATCH_FIELDS = facts.PATCH_FIELDS
POST_FLAGS = facts.POST_FLAGS

# Where the real service puts a factory's EST server: <gateway id>.est.foundries.io.
EST_DOMAIN = facts.EST_DOMAIN
ONLINE_CA_CN = "online-ca"

# What a POST answer carries besides the CSRs: the API's scripts of a revision, or none.
SCRIPT_CHOICES = reference.API_REVISIONS
DEFAULT_SCRIPTS = "api-2026"

# The rules, worded once so every refusal names the rule it enforces.
RULE_ROOT_ONCE = "the root of trust can only be set once"
RULE_OU = "the subject OU must equal the factory name"
RULE_ROOT_SELF_SIGNED = "the root of trust must be a self-signed CA certificate"
RULE_CHAIN = "must be signed by the factory root of trust"
RULE_BACKEND_KEY = "must certify a key the backend generated (a CSR from POST .../certs/)"
RULE_DEVICE_CA = "a device CA must be a CA certificate (basicConstraints CA:TRUE)"
RULE_LOCAL_CA_CN = "a local device CA's CN must be fio-<user polis-id>"
RULE_KEEP_CAS = "ca-crt must keep every device CA already present unless a CRL in ca-revoke-crl revokes it"
RULE_CRL_SIGNER = "the CRL must be signed by the factory root of trust"
RULE_CRL_SERIALS = "every serial in the CRL must belong to a device CA in ca-crt"

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class SandboxApiError(Exception):
    """A refusal of the emulated API: HTTP status plus the JSON body `{"message", "errors"}`."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    @property
    def body(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors}


def bad_request(message: str, *errors: str) -> SandboxApiError:
    return SandboxApiError(400, message, list(errors))


def conflict(message: str, *errors: str) -> SandboxApiError:
    return SandboxApiError(409, message, list(errors))


@dataclass(frozen=True)
class PemCert:
    """One certificate of an uploaded field: its PEM block as sent, and the parsed form."""

    pem: str
    cert: x509.Certificate

    @property
    def serial(self) -> str:
        return str(self.cert.serial_number)

    @property
    def public_key_der(self) -> bytes:
        return _spki_der(self.cert.public_key())

    @property
    def fingerprint(self) -> bytes:
        return self.cert.fingerprint(hashes.SHA256())

    def describe(self) -> str:
        return f"serial {self.serial} ({self.cert.subject.rfc4514_string()})"


@dataclass(frozen=True)
class DeviceCa:
    """A device CA of the current `ca-crt`, as the gateway and registration need it."""

    pem: str
    cert: x509.Certificate
    serial: str
    online: bool  # the backend holds its key
    disabled: bool


@dataclass(frozen=True)
class GatewayIdentity:
    """What the device gateway serves once the factory owns its PKI."""

    cert_pem: str  # tls-crt
    key_pem: str
    root_pem: str

    def __repr__(self) -> str:
        return "GatewayIdentity(<cert>, <key hidden>)"


@dataclass(frozen=True)
class OnlineCa:
    """The online device CA the backend signs registered devices with."""

    cert_pem: str
    key_pem: str
    serial: str

    def __repr__(self) -> str:
        return f"OnlineCa(serial={self.serial!r}, <key hidden>)"


def _spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _subject_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(oid)]


def parse_pem_certs(field: str, text: str) -> list[PemCert]:
    """Every certificate in a PEM field, in order; 400 when there is none or one is broken."""
    blocks = _PEM_CERT_RE.findall(text)
    if not blocks:
        raise bad_request(f"Invalid {field}: no PEM certificate found")
    certs = []
    for index, block in enumerate(blocks, start=1):
        try:
            cert = x509.load_pem_x509_certificate(block.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as error:
            raise bad_request(f"Invalid {field}: certificate {index} is not a valid PEM certificate", str(error))
        certs.append(PemCert(pem=block + "\n", cert=cert))
    return certs


def _parse_one_cert(field: str, text: str) -> PemCert:
    certs = parse_pem_certs(field, text)
    if len(certs) != 1:
        raise bad_request(f"Invalid {field}: expected exactly one certificate, got {len(certs)}")
    return certs[0]


def _parse_crl(text: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(text.encode("utf-8"))
    except ValueError as error:
        raise bad_request("Invalid ca-revoke-crl: not a PEM X509 CRL", str(error))


def _new_key_and_csr(factory: str, common_name: str, dns_names: list[str], *, ca: bool) -> tuple[str, str, bytes]:
    """A fresh P-256 key and its CSR: (key PEM, CSR PEM, public key DER).

    A server CSR (gateway, EST) names only its host, as fioctl's tests model it; a CA's CSR
    carries OU=<factory>, which the backend requires of every device CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if ca:
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, factory))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if dns_names:
        # Order matters: devices take the gateway host from the first name, OSTree from the second.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False
        )
    if ca:
        # Asks for the CA profile, so a "sign this CSR" tool can tell a CA CSR from a server one.
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    csr = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return key_pem, csr_pem, _spki_der(key.public_key())


class Backend:
    """The certs API's server-side logic for the one factory a Store holds."""

    def __init__(self, store: Store, scripts: str | None = DEFAULT_SCRIPTS):
        if scripts is not None and scripts not in SCRIPT_CHOICES:
            raise ValueError(f"unknown script set {scripts!r}; one of {', '.join(SCRIPT_CHOICES)}, or None")
        self.store = store
        self.scripts = scripts
        # One writer at a time; the store's transaction also guards against other processes.
        self._lock = threading.Lock()

    @property
    def factory(self) -> FactoryRecord:
        record = self.store.factory()
        if record is None:
            raise RuntimeError("the sandbox store has no factory yet")
        return record

    @property
    def local_ca_cn(self) -> str:
        return f"fio-{self.factory.polis_id}"

    # -- users/self --------------------------------------------------------------------------

    def user_self(self) -> dict[str, Any]:
        factory = self.factory
        return {"polis-id": factory.polis_id, "name": factory.user_name, "role": "owner"}

    # -- GET certs ---------------------------------------------------------------------------

    def get_certs(self) -> tuple[int, dict[str, Any]]:
        """(status, body): 206 with nulls while no root is set, else 200 with everything."""
        certs = self.store.certs()
        if not certs.root_crt:
            return 206, {
                "root-crt": None,
                "ca-crt": None,
                "tls-crt": None,
                "est-tls-crt": None,
                "disabled-ca-serials": [],
            }
        return 200, {
            "root-crt": certs.root_crt,
            "ca-crt": certs.ca_crt or None,
            "tls-crt": certs.tls_crt or None,
            "est-tls-crt": certs.est_tls_crt or None,
            "disabled-ca-serials": self.store.disabled_ca_serials(),
            "change-meta": {
                "created-by": certs.created_by,
                "created-at": certs.created_at,
                "updated-by": certs.updated_by,
                "updated-at": certs.updated_at,
            },
        }

    # -- POST certs --------------------------------------------------------------------------

    def post_certs(self, body: Any) -> dict[str, Any]:
        """Make the asked keys and return their CSRs (and the scripts, in the script era)."""
        flags = self._post_flags(body)
        factory = self.factory
        with self._lock, self.store.transaction():
            configured = bool(self.store.certs().root_crt)
            if flags["first-time-init"] and configured:
                raise conflict(
                    "Factory PKI is already configured: the root of trust can only be set once",
                    f"factory '{factory.name}' already has a root of trust; first-time-init is refused",
                )
            if not flags["first-time-init"] and not configured:
                raise conflict(
                    "Factory PKI is not configured: start with first-time-init",
                    "a new CSR for an existing PKI needs a root of trust, and there is none yet",
                )
            if not (flags["tls-csr"] or flags["ca-csr"] or flags["est-tls-csr"]):
                raise bad_request("Nothing to create: ask for at least one of tls-csr, ca-csr, est-tls-csr")
            answer: dict[str, Any] = {}
            if flags["tls-csr"]:
                gateway_host = f"{factory.gateway_id}.{facts.GATEWAY_DOMAIN}"
                answer["tls-csr"] = self._new_backend_key(
                    "tls", gateway_host, [gateway_host, f"{factory.gateway_id}.{facts.OSTREE_DOMAIN}"]
                )
            if flags["ca-csr"]:
                answer["ca-csr"] = self._new_backend_key("ca", ONLINE_CA_CN, [], ca=True)
            if flags["est-tls-csr"]:
                est_host = f"{factory.gateway_id}.{EST_DOMAIN}"
                answer["est-tls-csr"] = self._new_backend_key("est", est_host, [est_host])
        answer.update(self._scripts(factory.name))
        return answer

    def _scripts(self, factory: str) -> dict[str, str]:
        """The script era's answer carried the scripts, rendered for this factory and user."""
        if self.scripts is None:
            return {}
        return reference.api_scripts(self.scripts, factory=factory, local_ca_cn=self.local_ca_cn)

    @staticmethod
    def _post_flags(body: Any) -> dict[str, bool]:
        if body is None:
            body = {}  # the documented `curl -X POST` sends no body at all
        if not isinstance(body, dict):
            raise bad_request("Invalid request: the body must be a JSON object")
        if not body:
            # Script-era `{}`: a first-time init asking for the gateway and online CA CSRs.
            return {"first-time-init": True, "tls-csr": True, "ca-csr": True, "est-tls-csr": False}
        wrong = [f"{name}: must be true or false" for name in POST_FLAGS if name in body and not isinstance(body[name], bool)]
        if wrong:
            raise bad_request("Invalid request", *wrong)
        return {name: bool(body.get(name, False)) for name in POST_FLAGS}

    def _new_backend_key(self, kind: str, common_name: str, dns_names: list[str], *, ca: bool = False) -> str:
        key_pem, csr_pem, public_key = _new_key_and_csr(self.factory.name, common_name, dns_names, ca=ca)
        self.store.add_backend_key(kind=kind, key_pem=key_pem, csr_pem=csr_pem, public_key=public_key)
        return csr_pem

    # -- PATCH certs -------------------------------------------------------------------------

    def patch_certs(self, body: Any) -> dict[str, Any]:
        """Check an upload against every server-side rule, then store it all or nothing."""
        fields = self._patch_fields(body)
        factory = self.factory
        with self._lock, self.store.transaction():
            current = self.store.certs()
            root = self._checked_root(fields.get("root-crt"), current)
            if root is None:
                raise bad_request(
                    f"Invalid certs: {RULE_CHAIN}, and the factory has none",
                    "send root-crt first (or in the same PATCH)",
                )
            tls = self._checked_server_cert("tls-crt", "tls", fields.get("tls-crt"), root)
            est = self._checked_server_cert("est-tls-crt", "est", fields.get("est-tls-crt"), root)
            current_cas = parse_pem_certs("ca-crt", current.ca_crt) if current.ca_crt else []
            new_cas = self._checked_device_cas(fields["ca-crt"], root) if "ca-crt" in fields else None
            crl_actions = self._checked_crl(fields.get("ca-revoke-crl"), root, current_cas, new_cas)
            revoked_now = {serial for serial, action in crl_actions if action == "revoke"}
            if new_cas is not None:
                self._check_keeps_cas(current_cas, new_cas, revoked_now)

            self._store_patch(fields, current, root, tls, est, current_cas, new_cas, crl_actions, factory)
        return self.get_certs()[1]

    @staticmethod
    def _patch_fields(body: Any) -> dict[str, str]:
        """The provided fields; null and "" mean "not provided", other keys are ignored."""
        if not isinstance(body, dict):
            raise bad_request("Invalid request: the body must be a JSON object")
        fields: dict[str, str] = {}
        for name in PATCH_FIELDS:
            value = body.get(name)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise bad_request("Invalid request", f"{name}: must be a PEM string")
            fields[name] = value
        if not fields:
            raise bad_request("Nothing to update: send at least one of " + ", ".join(PATCH_FIELDS))
        return fields

    def _checked_root(self, text: str | None, current: CertsRecord) -> PemCert | None:
        """The root this PATCH works against: the new one (checked) or the stored one."""
        if text is None:
            return parse_pem_certs("root-crt", current.root_crt)[0] if current.root_crt else None
        if current.root_crt:
            raise conflict(
                f"Factory PKI is already configured: {RULE_ROOT_ONCE}",
                f"root-crt: factory '{self.factory.name}' already has a root of trust; it cannot be replaced",
            )
        root = _parse_one_cert("root-crt", text)
        if not (is_ca(root.cert) and root.cert.issuer == root.cert.subject and issued_by(root.cert, root.cert)):
            raise bad_request(f"Invalid root-crt: {RULE_ROOT_SELF_SIGNED}", f"root-crt: {root.describe()}")
        self._check_ou("root-crt", root)
        return root

    def _check_ou(self, field: str, cert: PemCert) -> None:
        factory = self.factory.name
        units = _subject_values(cert.cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
        if units != [factory]:
            raise bad_request(
                f"Invalid {field}: {RULE_OU}",
                f"{field}: {cert.describe()} has OU {', '.join(units) or '(none)'}, expected '{factory}'",
            )

    def _checked_server_cert(self, field: str, kind: str, text: str | None, root: PemCert) -> tuple[PemCert, int] | None:
        """(cert, id of the backend key it certifies) for tls-crt / est-tls-crt, or None."""
        if text is None:
            return None
        cert = _parse_one_cert(field, text)
        if not issued_by(cert.cert, root.cert):
            raise bad_request(f"Invalid {field}: {RULE_CHAIN}", f"{field}: {cert.describe()}")
        for key in self.store.backend_keys(kind, KEY_PENDING, KEY_ACTIVE):
            if key.public_key == cert.public_key_der:
                return cert, key.id
        raise bad_request(
            f"Invalid {field}: {RULE_BACKEND_KEY}",
            f"{field}: {cert.describe()} certifies a key the backend does not hold",
        )

    def _checked_device_cas(self, text: str, root: PemCert) -> list[PemCert]:
        cas = parse_pem_certs("ca-crt", text)
        # A revoked online CA may come back too ("keys ca update"): its key is still here.
        backend_keys = {key.public_key for key in self.store.backend_keys("ca", KEY_PENDING, KEY_ACTIVE, KEY_REVOKED)}
        seen: set[str] = set()
        for ca in cas:
            if ca.serial in seen:
                raise bad_request("Invalid ca-crt: each device CA may appear once", f"ca-crt: {ca.describe()} is repeated")
            seen.add(ca.serial)
            if not is_ca(ca.cert):
                raise bad_request(f"Invalid ca-crt: {RULE_DEVICE_CA}", f"ca-crt: {ca.describe()}")
            self._check_ou("ca-crt", ca)
            if not issued_by(ca.cert, root.cert):
                raise bad_request(f"Invalid ca-crt: {RULE_CHAIN}", f"ca-crt: {ca.describe()}")
            if ca.public_key_der in backend_keys:
                continue  # an online CA: the backend holds its key
            common_names = _subject_values(ca.cert.subject, NameOID.COMMON_NAME)
            if common_names != [self.local_ca_cn]:
                raise bad_request(
                    f"Invalid ca-crt: {RULE_LOCAL_CA_CN}",
                    f"ca-crt: local device CA {ca.describe()} must have CN '{self.local_ca_cn}'",
                )
        return cas

    def _checked_crl(
        self, text: str | None, root: PemCert, current_cas: list[PemCert], new_cas: list[PemCert] | None
    ) -> list[tuple[str, str]]:
        """[(serial, "disable" | "enable" | "revoke")] in CRL order; [] without a CRL."""
        if text is None:
            return []
        crl = _parse_crl(text)
        if crl.issuer != root.cert.subject or not crl.is_signature_valid(root.cert.public_key()):
            raise bad_request(f"Invalid ca-revoke-crl: {RULE_CRL_SIGNER}")
        known = {ca.serial for ca in current_cas} | {ca.serial for ca in new_cas or []}
        actions: list[tuple[str, str]] = []
        for entry in crl:
            serial = str(entry.serial_number)
            if serial not in known:
                raise bad_request(
                    f"Invalid ca-revoke-crl: {RULE_CRL_SERIALS}",
                    f"There is no active device CA with serial {serial}",
                )
            actions.append((serial, _crl_action(entry)))
        if not actions:
            raise bad_request("Invalid ca-revoke-crl: the CRL lists no serial")
        return actions

    @staticmethod
    def _check_keeps_cas(current_cas: list[PemCert], new_cas: list[PemCert], revoked_now: set[str]) -> None:
        kept = {ca.fingerprint for ca in new_cas}
        dropped = [ca for ca in current_cas if ca.fingerprint not in kept and ca.serial not in revoked_now]
        if dropped:
            raise bad_request(
                f"Invalid ca-crt: {RULE_KEEP_CAS}",
                *(f"ca-crt: {ca.describe()} is missing" for ca in dropped),
            )

    def _store_patch(
        self,
        fields: dict[str, str],
        current: CertsRecord,
        root: PemCert,
        tls: tuple[PemCert, int] | None,
        est: tuple[PemCert, int] | None,
        current_cas: list[PemCert],
        new_cas: list[PemCert] | None,
        crl_actions: list[tuple[str, str]],
        factory: FactoryRecord,
    ) -> None:
        for served, kind in ((tls, "tls"), (est, "est")):
            if served is not None:
                cert, key_id = served
                # The accepted key becomes the one served; an older served key is retired.
                for key in self.store.backend_keys(kind, KEY_ACTIVE):
                    if key.id != key_id:
                        self.store.set_backend_key_state(key.id, KEY_RETIRED)
                self.store.set_backend_key_state(key_id, KEY_ACTIVE, cert_pem=cert.pem, cert_serial=cert.serial)

        ca_text = fields.get("ca-crt", current.ca_crt)
        cas = new_cas if new_cas is not None else current_cas
        if new_cas is not None:
            self._activate_cas(new_cas, {serial for serial, action in crl_actions if action == "revoke"})

        revoked: set[str] = set()
        for serial, action in crl_actions:
            if action == "disable":
                self.store.disable_ca_serial(serial)
            elif action == "enable":
                self.store.enable_ca_serial(serial)
            else:
                self.store.revoke_ca_serial(serial)
                revoked.add(serial)
        if revoked:
            for key in self.store.backend_keys("ca"):
                if key.cert_serial in revoked:
                    self.store.set_backend_key_state(key.id, KEY_REVOKED)
            remaining = [ca for ca in cas if ca.serial not in revoked]
            ca_text = "\n".join(ca.pem for ca in remaining) or None

        now, user = utc_now(), factory.user_name
        first = current.created_at is None
        self.store.save_certs(
            CertsRecord(
                root_crt=fields.get("root-crt", current.root_crt),
                ca_crt=ca_text,
                tls_crt=tls[0].pem if tls else current.tls_crt,
                est_tls_crt=est[0].pem if est else current.est_tls_crt,
                created_by=user if first else current.created_by,
                created_at=now if first else current.created_at,
                updated_by=current.updated_by if first else user,
                updated_at=current.updated_at if first else now,
            )
        )

    def _activate_cas(self, cas: list[PemCert], revoked_now: set[str]) -> None:
        """The CAs of a new ca-crt become active: an online CA's key is used again, and a CA
        revoked earlier and sent again (fioctl's help: re-add it with `keys ca update`) is
        trusted again, its devices with it."""
        ca_keys = {key.public_key: key for key in self.store.backend_keys("ca", KEY_PENDING, KEY_ACTIVE, KEY_REVOKED)}
        revoked_before = self.store.revoked_ca_serials()
        for ca in cas:
            if ca.serial in revoked_now:
                continue
            key = ca_keys.get(ca.public_key_der)
            if key is not None:
                self.store.set_backend_key_state(key.id, KEY_ACTIVE, cert_pem=ca.pem, cert_serial=ca.serial)
            if ca.serial in revoked_before:
                self.store.unrevoke_ca_serial(ca.serial)

    # -- what the gateway and device registration use ----------------------------------------

    def device_cas(self) -> list[DeviceCa]:
        """The device CAs of the current ca-crt (revoked ones are gone already)."""
        certs = self.store.certs()
        if not certs.ca_crt:
            return []
        disabled = set(self.store.disabled_ca_serials())
        online = {key.public_key for key in self.store.backend_keys("ca", KEY_ACTIVE)}
        return [
            DeviceCa(pem=ca.pem, cert=ca.cert, serial=ca.serial, online=ca.public_key_der in online,
                     disabled=ca.serial in disabled)
            for ca in parse_pem_certs("ca-crt", certs.ca_crt)
        ]

    def gateway_identity(self) -> GatewayIdentity | None:
        """The accepted tls-crt with its backend key and the root; None before the PKI exists."""
        certs = self.store.certs()
        active = self.store.backend_keys("tls", KEY_ACTIVE)
        if not (certs.root_crt and certs.tls_crt and active):
            return None
        return GatewayIdentity(cert_pem=certs.tls_crt, key_pem=active[-1].key_pem, root_pem=certs.root_crt)

    def est_identity(self) -> GatewayIdentity | None:
        """The accepted est-tls-crt with its backend key (what the EST server serves); None
        until `keys est authorize` uploaded one."""
        certs = self.store.certs()
        active = self.store.backend_keys("est", KEY_ACTIVE)
        if not (certs.root_crt and certs.est_tls_crt and active):
            return None
        return GatewayIdentity(cert_pem=certs.est_tls_crt, key_pem=active[-1].key_pem, root_pem=certs.root_crt)

    def online_ca(self) -> OnlineCa | None:
        """The newest online CA still in ca-crt and not disabled; None when there is none."""
        usable = {ca.serial for ca in self.device_cas() if ca.online and not ca.disabled}
        for key in reversed(self.store.backend_keys("ca", KEY_ACTIVE)):
            if key.cert_serial in usable and key.cert_pem:
                return OnlineCa(cert_pem=key.cert_pem, key_pem=key.key_pem, serial=key.cert_serial)
        return None


def _crl_action(entry: x509.RevokedCertificate) -> str:
    """certificateHold disables, removeFromCRL re-enables, any other reason (or none) revokes."""
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "revoke"
    if reason == x509.ReasonFlags.certificate_hold:
        return "disable"
    if reason == x509.ReasonFlags.remove_from_crl:
        return "enable"
    return "revoke"
