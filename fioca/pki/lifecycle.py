"""The `keys ca` commands after `create`: update, add-device-ca, disable/enable/revoke-device-ca,
rotate-tls and sign; and `keys est authorize`, rotate-tls's twin for the EST server. Plain
Python: raises `fioca.errors`, never prints.

Each command reads as its steps: fetch the factory's PKI (GET certs/), check the PKI dir's
root is the factory's, make what is new (through `fioca.pki.signer`, the one root-signing
seam), check it, build a plan that says what changes, ask `confirm(plan)`, then store files
(0400, never overwriting; an old file is moved to `NAME.bak`, `NAME.bak.1`, ...) and PATCH.
When the server refuses the PATCH (an HTTP error status), the files written are removed and
the moved ones put back, so the PKI dir again matches the factory; when the PATCH's fate is
unknown (no answer), the files are kept and the error says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fioca import facts, shapes
from fioca.api import (
    CERT_FIELDS,
    NOT_CONFIGURED,
    NOT_CONFIGURED_HINT,
    FactoryApi,
    is_configured,
)
from fioca.errors import ApiError, CheckError, FiocaError, RefusedError, UsageError
from fioca.pki import profiles
from fioca.pki.files import PkiDir
from fioca.pki.signer import RootSigner, Via, create_local_ca, sign_crl, sign_csr

Progress = Callable[[str], None]
Confirm = Callable[[Any], bool]



def _quiet(_line: str) -> None:
    pass


# --- The factory's PKI as GET certs/ reports it -------------------------------------------------


@dataclass
class FactoryPki:
    factory: str
    root: x509.Certificate
    device_cas: list[x509.Certificate]
    tls: x509.Certificate | None
    disabled_serials: list[str]
    body: dict[str, Any]

    @property
    def ca_crt(self) -> str:
        return self.body.get("ca-crt") or ""


def fetch_pki(api: FactoryApi) -> FactoryPki:
    """GET certs/; refuse a factory without a PKI, as fioctl does."""
    certs = api.get_certs()
    if not is_configured(certs):
        raise FiocaError(NOT_CONFIGURED, details=[NOT_CONFIGURED_HINT])
    # Text around the PEM blocks is skipped, as fioctl skips it.
    body = {**certs.body, **{name: profiles.pem_only(certs.body[name]) for name in CERT_FIELDS if certs.body.get(name)}}
    root = profiles.load_cert(body["root-crt"], "root-crt")
    cas = profiles.load_cert_bundle(body["ca-crt"], "ca-crt") if body.get("ca-crt") else []
    tls = profiles.load_cert(body["tls-crt"], "tls-crt") if body.get("tls-crt") else None
    disabled = [str(serial) for serial in body.get("disabled-ca-serials") or []]
    return FactoryPki(api.factory, root, cas, tls, disabled, body)


def require_factory_root(signer: RootSigner, pki: FactoryPki) -> None:
    """The PKI dir's root must be the factory's root of trust, or nothing it signs is trusted."""
    if signer.certificate.fingerprint(hashes.SHA256()) != pki.root.fingerprint(hashes.SHA256()):
        raise RefusedError(
            f"{signer.pki.path / facts.ROOT_CERT} is not factory '{pki.factory}'s root of trust "
            f"(SHA-256 {profiles.fingerprint_sha256(signer.certificate)}, the factory's is "
            f"{profiles.fingerprint_sha256(pki.root)}); use the PKI dir `keys ca create` made for this factory"
        )


def ca_summary(cert: x509.Certificate, **extra: Any) -> dict[str, Any]:
    return {
        "serial": profiles.serial_decimal(cert),
        "subject": profiles.name_text(cert.subject),
        "fingerprint": profiles.fingerprint_sha256(cert),
        **extra,
    }


# --- Files: moved aside and written, undone when the server says no ----------------------------


class FileChanges:
    """Backups and new files in the PKI dir, with an undo for a PATCH the server refused."""

    def __init__(self, pki: PkiDir):
        self.pki = pki
        self.moved: list[tuple[Path, Path]] = []
        self.created: list[Path] = []

    def move_aside(self, name: str) -> Path | None:
        """NAME -> NAME.bak (or NAME.bak.1, .2, ... when a .bak exists: a backup is never clobbered)."""
        if not self.pki.has(name):
            return None
        target = self.pki / self.pki.move_aside(name, ".bak")
        self.moved.append((self.pki / name, target))
        return target

    def write(self, name: str, data: bytes) -> Path:
        path = self.pki.write_new(name, data)
        self.created.append(path)
        return path

    def undo(self) -> None:
        for path in reversed(self.created):
            self.pki.remove(path.name)
        for source, target in reversed(self.moved):
            if not self.pki.has(source.name):
                self.pki.move_back(target.name, source.name)


def _patch(api: FactoryApi, body: dict[str, str], changes: FileChanges | None) -> dict[str, Any]:
    try:
        answer = api.patch_certs(body)
    except ApiError as exc:
        if changes is not None and (changes.created or changes.moved):
            if exc.status is not None:
                changes.undo()
                exc.details.append("The server refused the change: the PKI dir was put back as it was.")
            else:
                kept = ", ".join(path.name for path in changes.created)
                exc.details.append(
                    f"The PATCH may or may not have been applied; the new files ({kept}) are kept. "
                    "Check with `fioca keys ca show`."
                )
        raise
    return answer.body if isinstance(answer.body, dict) else {}


def _store_and_patch(
    api: FactoryApi,
    pki_dir: PkiDir,
    plan: AddDeviceCaPlan | RotateTlsPlan | EstAuthorizePlan,
    *,
    moves: list[str],
    writes: dict[str, bytes],
    progress: Progress,
    uploading: str,
) -> ApplyResult:
    """The confirmed end of add-device-ca, rotate-tls and est authorize: move the old files aside (.bak), write
    the new ones in order, then PATCH; a PATCH the server refuses puts the PKI dir back."""
    changes = FileChanges(pki_dir)
    for name in moves:
        target = changes.move_aside(name)
        what = _MOVED_WORDS.get(name, "file")
        progress(f"Moving existing {what} from {name} to {target.name if target else '?'}")
    for name, data in writes.items():
        changes.write(name, data)
    progress(uploading)
    answer_body = _patch(api, plan.patch_body, changes)
    return ApplyResult(plan.summary(), changes.created, changes.moved, answer_body)


# fioctl's words for the files it moves aside (fioca also keeps the old CSRs).
_MOVED_WORDS = {
    facts.TLS_CERT: "TLS cert file", facts.ONLINE_CA_CERT: "online device CA file", facts.EST_TLS_CERT: "EST TLS cert file",
}


def not_confirmed(what: str) -> RefusedError:
    return RefusedError(f"{what} not confirmed; nothing was written or sent")


# --- update -------------------------------------------------------------------------------------


@dataclass
class UpdatePlan:
    factory: str
    added: list[x509.Certificate]
    dropped: list[x509.Certificate]
    kept: list[x509.Certificate]
    patch_body: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "added": [ca_summary(ca) for ca in self.added],
            "dropped": [ca_summary(ca) for ca in self.dropped],
            "kept": [ca_summary(ca) for ca in self.kept],
            "patch_fields": list(self.patch_body),
            "notes": list(self.notes),
        }


def plan_update(api: FactoryApi, bundle_pem: bytes, *, artifact: str = "CA bundle") -> UpdatePlan:
    """Check a new `ca-crt` (device CAs of the profile, chaining to the root) and compare it."""
    text = profiles.pem_only(_pem_text(bundle_pem, artifact))  # text around the blocks is skipped, as fioctl does
    bundle = profiles.load_cert_bundle(text, artifact)
    pki = fetch_pki(api)
    seen: set[bytes] = set()
    for index, cert in enumerate(bundle, start=1):
        label = f"{artifact} certificate {index} (serial {cert.serial_number})"
        digest = cert.fingerprint(hashes.SHA256())
        if digest in seen:
            raise CheckError(label, "appears twice in the bundle")
        seen.add(digest)
        profiles.check_device_ca(cert, root=pki.root, factory=pki.factory, artifact=label)
    current = {ca.fingerprint(hashes.SHA256()) for ca in pki.device_cas}
    added = [cert for cert in bundle if cert.fingerprint(hashes.SHA256()) not in current]
    kept = [cert for cert in bundle if cert.fingerprint(hashes.SHA256()) in current]
    dropped = [ca for ca in pki.device_cas if ca.fingerprint(hashes.SHA256()) not in seen]
    if not added and not dropped:
        raise RefusedError(f"{artifact} holds exactly the factory's device CAs; nothing to update, nothing was sent")
    refuse_dropped(dropped, artifact)
    notes = local_ca_notes(added, shapes.local_ca_cn(shapes.polis_id(api.users_self()["polis-id"], "GET users/self/")), artifact)
    return UpdatePlan(pki.factory, added, dropped, kept, {"ca-crt": text}, notes)


def refuse_dropped(dropped: list[x509.Certificate], artifact: str) -> None:
    """The backend keeps every device CA in ca-crt until a CRL revokes it: update only adds."""
    if dropped:
        serials = ", ".join(profiles.serial_decimal(ca) for ca in dropped)
        raise RefusedError(
            f"{artifact} leaves out device CA(s) the factory trusts (serial {serials}); the server refuses that: "
            "`update` can only add. To remove a device CA, revoke it: fioca keys ca revoke-device-ca PKI_DIR --ca-serial N",
        )


def local_ca_notes(added: list[x509.Certificate], own_cn: str, artifact: str) -> list[str]:
    """A local device CA must carry the caller's CN (fio-<polis-id>): another user's is refused
    by the server; a CA named otherwise passes only as an online CA the backend made (a
    revoked one added back), which fioca cannot see from here."""
    notes = []
    for ca in added:
        cn = profiles.subject_cn(ca) or ""
        if cn.startswith("fio-") and cn != own_cn:
            raise CheckError(
                f"{artifact} CA serial {ca.serial_number}",
                f"a local device CA's CN must be {own_cn} (yours), got {cn}: the server refuses another user's",
            )
        if not cn.startswith("fio-"):
            notes.append(
                f"CA serial {ca.serial_number} ({profiles.name_text(ca.subject)}) is accepted only if it is an online CA "
                "the factory's backend made (for example a revoked one added back)"
            )
    return notes


def _pem_text(data: bytes, artifact: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckError(artifact, f"is not PEM text: invalid UTF-8 byte at offset {error.start}") from None


def apply_update(api: FactoryApi, plan: UpdatePlan) -> dict[str, Any]:
    return _patch(api, plan.patch_body, None)


# --- add-device-ca ------------------------------------------------------------------------------


@dataclass
class AddDeviceCaOptions:
    online_ca: bool = False
    local_ca: bool = False
    local_ca_filename: str = facts.LOCAL_CA_CERT
    via: Via = "script"


def local_ca_key_name(cert_name: str) -> str:
    """The key file beside a local CA file, as fioctl names it: `x.pem` -> `x.key`, else `x.key`."""
    return cert_name.removesuffix(".pem") + ".key"


def check_add_device_ca_options(options: AddDeviceCaOptions) -> None:
    """fioctl's argument checks, with its messages."""
    if not options.online_ca and not options.local_ca:
        raise UsageError("At least one of --online-ca or --local-ca must be true")
    name = options.local_ca_filename
    if not name or os.sep in name or name in (".", ".."):
        raise UsageError(f"The `--local-ca-filename` argument must be filename and not a path: {name}")


@dataclass
class AddDeviceCaPlan:
    factory: str
    new_cas: list[dict[str, Any]]  # ca_summary + kind ("online" | "local") + file
    writes: dict[str, bytes]  # file name -> content, in write order
    moves: list[str]  # files moved aside first
    patch_body: dict[str, str]

    def summary(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "added": self.new_cas,
            "files": list(self.writes),
            "moved_aside": self.moves,
            "patch_fields": list(self.patch_body),
        }

    def __repr__(self) -> str:  # writes holds a private key
        return f"AddDeviceCaPlan(factory={self.factory!r}, files={list(self.writes)})"


@dataclass
class ApplyResult:
    summary: dict[str, Any]
    stored: list[Path] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)


def add_device_ca(
    api: FactoryApi,
    pki_dir: PkiDir,
    signer: RootSigner,
    options: AddDeviceCaOptions,
    *,
    confirm: Confirm,
    progress: Progress = _quiet,
    on_script_stderr: Progress = _quiet,
) -> ApplyResult:
    """A new local and/or online device CA, appended to the factory's `ca-crt`."""
    check_add_device_ca_options(options)
    cert_name = options.local_ca_filename
    key_name = local_ca_key_name(cert_name)
    with pki_dir.locked():
        progress("Fetching a list of existing device CAs")
        pki = fetch_pki(api)
        require_factory_root(signer, pki)
        if not pki.ca_crt:
            raise FiocaError("Factory PKI not initialized. Set it up using 'fioca keys ca create'.")
        writes: dict[str, bytes] = {}
        new_cas: list[dict[str, Any]] = []
        new_pems: list[str] = []
        moves: list[str] = []
        if options.local_ca:
            for name, what in ((cert_name, "file"), (key_name, "key file")):
                if pki_dir.has(name):
                    raise RefusedError(
                        f"A local device CA {what} {pki_dir / name} already exists.\n"
                        "Please specify a different name with --local-ca-filename."
                    )
            progress("Creating local device CA")
            polis_id = str(api.users_self()["polis-id"])
            local = create_local_ca(signer, cn=f"fio-{polis_id}", via=options.via, on_stderr=on_script_stderr)
            writes[key_name] = local.key_pem
            writes[cert_name] = profiles.cert_pem(local.cert)
            new_cas.append(ca_summary(local.cert, kind="local", file=cert_name))
            new_pems.append(profiles.cert_pem(local.cert).decode())
        if options.online_ca:
            progress("Requesting new Foundries.io Online Device CA CSR")
            answer = api.post_certs({"first-time-init": False, "ca-csr": True, "est-tls-csr": False, "tls-csr": False})
            csr = _csr_from_answer(answer.body, "ca-csr", pki.factory)
            progress("Signing Foundries.io CSR for online use")
            online = sign_csr(signer, csr, "ca", via=options.via, artifact=facts.ONLINE_CA_CERT, on_stderr=on_script_stderr)
            moves = [name for name in (facts.ONLINE_CA_CERT, facts.ONLINE_CA_CSR) if pki_dir.has(name)]
            writes[facts.ONLINE_CA_CSR] = profiles.csr_pem(csr)
            writes[facts.ONLINE_CA_CERT] = profiles.cert_pem(online)
            new_cas.append(ca_summary(online, kind="online", file=facts.ONLINE_CA_CERT))
            new_pems.append(profiles.cert_pem(online).decode())
        bundle = "\n".join([pki.ca_crt.rstrip("\n") + "\n", *new_pems]) if pki.ca_crt else "\n".join(new_pems)
        plan = AddDeviceCaPlan(pki.factory, new_cas, writes, moves, {"ca-crt": bundle})
        if not confirm(plan):
            raise not_confirmed("adding the device CA")
        return _store_and_patch(
            api, pki_dir, plan, moves=moves, writes=writes, progress=progress,
            uploading="Uploading signed certs to Foundries.io",
        )


def _csr_from_answer(body: dict[str, Any], name: str, factory: str) -> x509.CertificateSigningRequest:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(f"the POST answer has no {name}; nothing was signed")
    csr = profiles.load_csr(value, name)
    ou = profiles.subject_ou(csr)
    # A device CA's OU must be the factory; the gateway's CSR may name a CN only (fioctl never checks it).
    if name == facts.ONLINE_CA_CSR and ou != factory:
        raise CheckError(name, f"subject OU is {ou!r}, not the factory {factory!r}")
    return csr


# --- disable / enable / revoke ------------------------------------------------------------------


@dataclass
class CrlPlan:
    factory: str
    action: str  # "disable" | "enable" | "revoke"
    targets: list[dict[str, Any]]
    crl: x509.CertificateRevocationList
    dry_run: bool

    @property
    def crl_pem(self) -> str:
        return profiles.crl_pem(self.crl).decode("ascii")

    @property
    def patch_body(self) -> dict[str, str]:
        return {"ca-revoke-crl": self.crl_pem}

    def summary(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "action": self.action,
            "reason_code": facts.CRL_REASON_CODES[self.action],
            "device_cas": self.targets,
            "dry_run": self.dry_run,
            "crl": self.crl_pem,
        }


def parse_serial(text: str) -> int:
    """A base-10 serial, as `--ca-serial` takes it (fioctl's message otherwise)."""
    value = text.strip()
    if not value.isdigit() or not value.isascii():
        raise UsageError(f"Value {text} is not a valid base 10 serial")
    return int(value)


def serials_from_files(pki_dir: PkiDir, names: list[str]) -> list[int]:
    """The serial of each `--ca-file`, a file name inside the PKI dir (fioctl: not a path)."""
    serials = []
    for name in names:
        if not name or os.sep in name or name in (".", ".."):
            raise UsageError(f"The `--ca-file` argument must be filename and not a path: {name}")
        cert = profiles.load_cert(pki_dir.read_bytes(name), name)
        serials.append(cert.serial_number)
    return serials


def change_device_cas(
    api: FactoryApi,
    pki_dir: PkiDir,
    signer: RootSigner,
    *,
    action: str,
    ca_files: list[str],
    ca_serials: list[str],
    dry_run: bool,
    confirm: Confirm,
    progress: Progress = _quiet,
) -> tuple[CrlPlan, dict[str, Any]]:
    """disable (reason 6), enable (8) or revoke (9) device CAs with a root-signed CRL."""
    if action not in facts.CRL_REASON_CODES:
        raise ValueError(f"action must be one of {', '.join(facts.CRL_REASON_CODES)}")
    if not ca_files and not ca_serials:
        raise UsageError("At least one of --ca-file or --ca-serial must be provided")
    progress("Generating Certificate Revocation List")
    wanted = [parse_serial(text) for text in ca_serials] + serials_from_files(pki_dir, ca_files)
    wanted = list(dict.fromkeys(wanted))  # one entry per serial, first order kept
    pki = fetch_pki(api)
    require_factory_root(signer, pki)
    by_serial = {ca.serial_number: ca for ca in pki.device_cas}
    for serial in wanted:
        if serial not in by_serial:
            raise RefusedError(f"There is no active device CA with serial {serial}")
        if action == "enable" and str(serial) not in pki.disabled_serials:
            raise RefusedError(f"The device CA with serial {serial} is not disabled; nothing to enable")
    targets = [
        ca_summary(by_serial[serial], disabled=str(serial) in pki.disabled_serials) for serial in wanted
    ]
    progress("Signing CRL by Factory root CA")
    crl = sign_crl(signer, [(serial, facts.CRL_REASON_CODES[action]) for serial in wanted])
    plan = CrlPlan(pki.factory, action, targets, crl, dry_run)
    if dry_run:
        return plan, {}
    if not confirm(plan):
        raise not_confirmed(f"{action} of the device CA(s)")
    progress("Uploading CRL to Foundries.io")
    return plan, _patch(api, plan.patch_body, None)


# --- rotate-tls ---------------------------------------------------------------------------------


@dataclass
class RotateTlsPlan:
    factory: str
    old: x509.Certificate | None
    new: x509.Certificate
    csr: x509.CertificateSigningRequest
    moves: list[str]

    @property
    def patch_body(self) -> dict[str, str]:
        return {"tls-crt": profiles.cert_pem(self.new).decode("ascii")}

    def summary(self) -> dict[str, Any]:
        old_hosts = profiles.gateway_hosts(self.old) if self.old is not None else []
        new_hosts = profiles.gateway_hosts(self.new)
        return {
            "factory": self.factory,
            "old": ca_summary(self.old, hosts=old_hosts) if self.old is not None else None,
            "new": ca_summary(self.new, hosts=new_hosts),
            "hosts_changed": old_hosts != new_hosts,
            "moved_aside": self.moves,
            "patch_fields": list(self.patch_body),
        }


def rotate_tls(
    api: FactoryApi,
    pki_dir: PkiDir,
    signer: RootSigner,
    *,
    confirm: Confirm,
    via: Via = "script",
    progress: Progress = _quiet,
    on_script_stderr: Progress = _quiet,
) -> ApplyResult:
    """A new gateway key (POST tls-csr), its cert signed by the root, PATCHed as tls-crt."""
    with pki_dir.locked():
        pki = fetch_pki(api)
        require_factory_root(signer, pki)
        progress("Requesting new Foundries.io TLS CSR")
        answer = api.post_certs({"first-time-init": False, "ca-csr": False, "est-tls-csr": False, "tls-csr": True})
        csr = _csr_from_answer(answer.body, "tls-csr", pki.factory)
        progress("Signing Foundries.io TLS CSR")
        cert = sign_csr(signer, csr, "tls", via=via, artifact=facts.TLS_CERT, on_stderr=on_script_stderr)
        moves = [name for name in (facts.TLS_CERT, facts.TLS_CSR) if pki_dir.has(name)]
        plan = RotateTlsPlan(pki.factory, pki.tls, cert, csr, moves)
        if not confirm(plan):
            raise not_confirmed("rotating the gateway TLS certificate")
        writes = {facts.TLS_CSR: profiles.csr_pem(csr), facts.TLS_CERT: profiles.cert_pem(cert)}
        return _store_and_patch(
            api, pki_dir, plan, moves=moves, writes=writes, progress=progress,
            uploading="Uploading signed certs to Foundries.io",
        )


# --- keys est authorize --------------------------------------------------------------------------

# fioctl's POST: a new key and CSR for the EST server, nothing else.
EST_POST_BODY = {"first-time-init": False, "ca-csr": False, "est-tls-csr": True, "tls-csr": False}


@dataclass
class EstAuthorizePlan:
    factory: str
    old: x509.Certificate | None
    new: x509.Certificate | None  # None in a dry run: nothing was asked of the server
    moves: list[str]

    @property
    def patch_body(self) -> dict[str, str]:
        assert self.new is not None
        return {"est-tls-crt": profiles.cert_pem(self.new).decode("ascii")}

    def summary(self) -> dict[str, Any]:
        def described(cert: x509.Certificate | None) -> dict[str, Any] | None:
            if cert is None:
                return None
            return ca_summary(cert, hosts=profiles.gateway_hosts(cert), pem=profiles.cert_pem(cert).decode("ascii"))

        return {
            "factory": self.factory,
            "dry_run": self.new is None,
            "old": described(self.old),
            "new": described(self.new),
            "post_body": EST_POST_BODY,
            "files": [facts.EST_TLS_CSR, facts.EST_TLS_CERT],
            "moved_aside": self.moves,
            "patch_fields": ["est-tls-crt"],
        }


def authorize_est(
    api: FactoryApi,
    pki_dir: PkiDir,
    signer: RootSigner,
    *,
    confirm: Confirm,
    dry_run: bool = False,
    via: Via = "script",
    progress: Progress = _quiet,
    on_script_stderr: Progress = _quiet,
) -> ApplyResult:
    """`keys est authorize`: a new EST server key (POST est-tls-csr), its TLS server certificate
    signed by the root, PATCHed as est-tls-crt. A dry run checks the PKI dir and its root
    against the factory and sends nothing (the POST makes the server a new key)."""
    with pki_dir.locked():
        pki = fetch_pki(api)
        require_factory_root(signer, pki)
        current = pki.body.get("est-tls-crt")
        old = profiles.load_cert(current, "est-tls-crt") if current else None
        moves = [name for name in (facts.EST_TLS_CERT, facts.EST_TLS_CSR) if pki_dir.has(name)]
        if dry_run:
            return ApplyResult(EstAuthorizePlan(pki.factory, old, None, moves).summary())
        answer = api.post_certs(EST_POST_BODY)
        csr = _csr_from_answer(answer.body, facts.EST_TLS_CSR, pki.factory)
        check_est_csr(csr)
        cert = sign_csr(
            signer, csr, "tls", via=via, artifact=facts.EST_TLS_CERT, csr_artifact=facts.EST_TLS_CSR,
            on_stderr=on_script_stderr,
        )
        plan = EstAuthorizePlan(pki.factory, old, cert, moves)
        if not confirm(plan):
            raise not_confirmed("authorizing the EST server")
        writes = {facts.EST_TLS_CSR: profiles.csr_pem(csr), facts.EST_TLS_CERT: profiles.cert_pem(cert)}
        return _store_and_patch(
            api, pki_dir, plan, moves=moves, writes=writes, progress=progress, uploading="Uploading new EST certificate:",
        )


def check_est_csr(csr: x509.CertificateSigningRequest) -> None:
    """Devices (and fioctl's `config rotate-certs`) find the EST server by the one DNS name of
    its certificate: a CSR with none or several cannot make a usable est-tls-crt."""
    hosts = [name for name in _alt_names(csr) if isinstance(name, x509.DNSName)]
    if len(hosts) != 1:
        raise CheckError(
            facts.EST_TLS_CSR, f"must name exactly one DNS host (the EST server's, e.g. <id>.{facts.EST_DOMAIN}), got {len(hosts)}"
        )


def _alt_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


# --- sign ---------------------------------------------------------------------------------------


def sign_file(
    signer: RootSigner, csr_pem: bytes, *, profile: str | None = None, artifact: str, via: Via = "inprocess"
) -> tuple[x509.Certificate, str]:
    """`keys ca sign`: (certificate, profile). The type comes from the CSR, as fioctl picks it
    (basicConstraints CA:TRUE requested: a device CA; otherwise a TLS server certificate with
    the CSR's DNS, IP, URI and email names), unless `profile` ("tls" or "ca") says which. A CSR
    that asks for more than its profile grants is refused, never trimmed."""
    if profile not in (None, "tls", "ca"):
        raise UsageError(f"--profile must be tls or ca, got {profile!r}")
    csr = profiles.load_csr(csr_pem, artifact)
    chosen = profile or ("ca" if profiles.csr_asks_for_ca(csr) else "tls")
    if via == "script" and chosen == "tls" and _non_dns_names(csr):
        raise UsageError(
            f"{artifact} asks for IP, URI or email names, which the reference script drops (it copies DNS names); "
            "sign it in process (--via inprocess)"
        )
    cert = sign_csr(
        signer, csr, chosen, via=via, artifact=f"certificate for {artifact}", csr_artifact=artifact  # type: ignore[arg-type]
    )
    return cert, chosen


def _non_dns_names(csr: x509.CertificateSigningRequest) -> bool:
    return any(not isinstance(name, x509.DNSName) for name in _alt_names(csr))
