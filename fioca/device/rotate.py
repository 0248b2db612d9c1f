"""A device's certificate rotated over EST (RFC 7030), the device side: one folder, or a fleet.

A new key, a CSR with the same identity (the current certificate's subject, byte for byte, and
its subjectAltName), `simplereenroll` authenticated with the current certificate, and the new
files in place of the old, which are kept aside (`NAME.bak`, `.bak.1`, ...).

The invariant: interrupted at any point, killed included, the device has a working key and
certificate. It holds because the device finds its key and certificate where sota.toml's
`[import]` paths name them (as aktualizr-lite and `fioca device check` do), and that pair only
ever changes by one atomic rename of sota.toml:

  1. the new key is written as `pkey.pem.next`, then (once issued and checked: the chain to
     root.crt through the EST server's cacerts, the same subject, our key, the device profile)
     the certificate as `client.pem.next` (and `client.chained.next` beside a client.chained);
  2. sota.toml is replaced by the same text naming the `.next` files: the switch. Until the
     device uses the new key, the gateway accepts both keys (the sandbox: `pending_pubkey`);
  3. a request to the gateway with the new pair completes the rotation there; a refusal puts
     sota.toml back (the old pair is still the pinned one);
  4. `pkey.pem` and `client.pem` are kept aside (hard links) and replaced by the new files,
     sota.toml gets its own names back, and the `.next` files go.

Before 2 the old names are in sota.toml and work; from 2 to 4 the `.next` ones are and work;
after 4 the old names hold the new files. A run on a folder left mid-way first settles it: a
switched folder is finished (step 4, then asked at the gateway) and not rotated a second time;
an unswitched one loses its `.next` files and is rotated. Every write goes through
`fioca.pki.files` (new files never overwrite, all are fsync'ed); `_Writer` is the one place.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fioca import facts
from fioca.device import check, sota
from fioca.device.est import EstClient, EstServer, Transport
from fioca.errors import CheckError, FiocaError, Interrupted, PkiDirError, RefusedError
from fioca.pki import profiles
from fioca.pki.files import PkiDir

STAGED = ".next"  # the new files until they take the old names
DEFAULT_WORKERS = 8

# Every point a rotation passes, in order (`on_step` hears each; a kill may land at any).
# Those with words are what `fioca device rotate-cert` shows for one device.
STEPS: dict[str, str | None] = {
    "settle": "Finishing an interrupted rotation of this device first",
    "cacerts": "Fetching the EST server's CA certificates (cacerts)",
    "key": "Generating a new key",
    "enroll": "Requesting a new certificate (simplereenroll)",
    "staged": None,
    "switch": "Switching sota.toml to the new key and certificate",
    "confirm": "Confirming the new certificate with the device gateway",
    "install": "Keeping the old key and certificate aside (.bak)",
    **{f"{what}-{name}": None for name in (facts.DEVICE_KEY, facts.DEVICE_CERT, facts.DEVICE_CHAINED)
       for what in ("keep", "replace")},
    "restore": None,
    "clean": None,
    "done": None,
}
Step = Callable[[str], None]


def _quiet(_step: str) -> None:
    pass


# --- The folder ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceFolder:
    """A device folder (or sota dir) as the device sees it: the pair sota.toml names."""

    path: Path
    sota_text: str
    key_name: str  # the file names sota.toml's [import] gives (ending .next mid-rotation)
    cert_name: str
    root: x509.Certificate
    cert: x509.Certificate

    @property
    def switched(self) -> bool:
        return self.key_name.endswith(STAGED)

    @property
    def uuid(self) -> str:
        return profiles.subject_cn(self.cert) or "?"

    @property
    def chained(self) -> bool:
        return (self.path / facts.DEVICE_CHAINED).exists()


def open_folder(path: Path) -> DeviceFolder:
    """Read a device folder; refuse one whose sota.toml does not name its key and certificate."""
    sota_path = path / facts.SOTA_TOML
    try:
        text = sota_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PkiDirError(f"{sota_path} does not exist; is {path} a device folder (or sota dir)?") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PkiDirError(f"cannot read {sota_path}: {getattr(error, 'strerror', None) or error}") from None
    named = sota.import_paths(text)
    if set(named) != {sota.KEY_PATH, sota.CERT_PATH}:
        raise PkiDirError(
            f"{sota_path} has no [import] {sota.KEY_PATH} and {sota.CERT_PATH}: the rotation switches the key "
            "and certificate there, at once"
        )
    key_name, cert_name = (PurePosixPath(named[name]).name for name in (sota.KEY_PATH, sota.CERT_PATH))
    if key_name.endswith(STAGED) != cert_name.endswith(STAGED):
        raise PkiDirError(f"{sota_path} names {key_name} with {cert_name}: one of them was edited by hand")
    with PkiDir.open(path) as folder:
        cert = profiles.load_cert(folder.read_bytes(cert_name), cert_name)
        key = profiles.load_private_key(folder.read_bytes(key_name), key_name)
        root = profiles.load_cert(folder.read_bytes(facts.DEVICE_ROOT), facts.DEVICE_ROOT)
    profiles.check_key_matches(key, cert, key_name)
    return DeviceFolder(path, text, key_name, cert_name, root, cert)


class _Writer:
    """Every change a rotation makes to the folder, through `fioca.pki.files` (one O_NOFOLLOW
    handle on the folder; each change fsync'ed before the next step relies on it)."""

    def __init__(self, path: Path):
        self.path = path

    def folder(self) -> PkiDir:
        return PkiDir.open(self.path)

    def write_new(self, name: str, data: bytes) -> None:
        with self.folder() as folder:
            folder.write_new(name, data)  # 0400, never over an existing file

    def replace(self, name: str, data: bytes) -> None:
        """NAME replaced atomically, keeping its mode (0400 for a new one)."""
        try:
            mode = stat.S_IMODE(os.stat(self.path / name, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            mode = facts.FILE_MODE
        with self.folder() as folder:
            folder.replace(name, data, mode)

    def keep_aside(self, name: str) -> None:
        """A hard link NAME.bak (.bak.1, ...) to the current file; once per file (a second
        run after a kill finds the link it made)."""
        current = os.stat(self.path / name, follow_symlinks=False)
        for candidate in self.path.iterdir():
            if candidate.name.startswith(f"{name}.bak") and candidate.stat(follow_symlinks=False).st_ino == current.st_ino:
                return
        with self.folder() as folder:
            folder.link_aside(name, ".bak")

    def remove(self, *names: str) -> None:
        with self.folder() as folder:
            for name in names:
                folder.remove(name)
            folder.sync()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One rotation of a folder at a time: a lock on the folder itself (no lock file left
        in a device's sota dir)."""
        with self.folder() as folder:
            try:
                with folder.locked():
                    yield
            except RefusedError as refused:
                if "in use by another fioca run" not in refused.message:
                    raise
                raise RefusedError(f"{self.path} is being rotated by another fioca run; wait for it to finish") from None


def _sota_with(folder: DeviceFolder, *, staged: bool) -> str:
    """sota.toml naming the `.next` files (staged) or the device's own names."""
    named = sota.import_paths(folder.sota_text)
    paths = {}
    for key, value in named.items():
        plain = value.removesuffix(STAGED)
        paths[key] = plain + STAGED if staged else plain
    return sota.with_import_paths(folder.sota_text, paths)


def _plain(name: str) -> str:
    return name.removesuffix(STAGED)


def _staged_names(folder: DeviceFolder) -> list[tuple[str, str]]:
    """(staged file, the file it replaces) for the key, the certificate and client.chained."""
    names = [_plain(folder.key_name), _plain(folder.cert_name)]
    if folder.chained:
        names.append(facts.DEVICE_CHAINED)
    return [(name + STAGED, name) for name in names]


# --- Settling a folder left mid-way ------------------------------------------------------------


def _settle(folder: DeviceFolder, writer: _Writer, on_step: Step) -> bool:
    """Finish a rotation that was switched (True), or drop the `.next` files of one that was
    not (False: nothing to finish). `.next` files equal to the files they replace are what a
    run killed while cleaning up left: that rotation is done (True)."""
    if folder.switched:
        on_step("settle")
        _install(folder, writer, on_step)
        return True
    path = folder.path
    left = [(staged, name) for staged, name in _staged_names(folder) if (path / staged).exists()]
    if not left:
        return False
    installed = all((path / name).exists() and (path / name).read_bytes() == (path / staged).read_bytes()
                    for staged, name in left)  # fmt: skip
    writer.remove(*(staged for staged, _name in left))
    return installed


def _install(folder: DeviceFolder, writer: _Writer, on_step: Step) -> None:
    """Step 4: the old files kept aside, the new ones under the old names, sota.toml back to
    them, the `.next` files removed. Each part is skipped when a killed run already did it."""
    on_step("install")
    for staged, name in _staged_names(folder):
        data = (folder.path / staged).read_bytes()
        if (folder.path / name).exists():
            if (folder.path / name).read_bytes() == data:
                continue
            on_step(f"keep-{name}")
            writer.keep_aside(name)
        on_step(f"replace-{name}")
        writer.replace(name, data)
    on_step("restore")
    writer.replace(facts.SOTA_TOML, _sota_with(folder, staged=False).encode("utf-8"))
    on_step("clean")
    writer.remove(*(staged for staged, _name in _staged_names(folder)))


# --- One device --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotated:
    uuid: str
    path: Path
    serial: str
    issuer: str
    fingerprint: str
    confirmed: bool  # the gateway accepted the new certificate (else it completes on the next request)
    resumed: bool = False  # this run finished a rotation a killed run had switched

    def as_dict(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "path": str(self.path), "status": "rotated", "serial": self.serial,
                "issuer": self.issuer, "fingerprint": self.fingerprint, "confirmed": self.confirmed,
                "resumed": self.resumed}  # fmt: skip


@dataclass
class CaCache:
    """The EST server's cacerts for a fleet: fetched once, each root and issuing CA checked once."""

    certs: list[x509.Certificate] | None = None
    checked_roots: set[bytes] = field(default_factory=set)
    checked_issuers: set[bytes] = field(default_factory=set)


def rotate(
    path: Path, server: EstServer, transport: Transport, *, on_step: Step = _quiet, cas: CaCache | None = None
) -> Rotated:
    """Rotate one device folder's key and certificate (see the module docstring). A folder a
    killed run had switched is finished instead, and not rotated a second time."""
    writer = _Writer(path)
    with writer.locked():
        folder = open_folder(path)
        resumed = _settle(folder, writer, on_step)
        if resumed:
            folder = open_folder(path)
        else:
            cert = _enroll_and_stage(folder, server, transport, on_step, cas or CaCache())
            on_step("switch")
            switched = _sota_with(folder, staged=True)
            writer.replace(facts.SOTA_TOML, switched.encode("utf-8"))
            folder = dataclasses.replace(folder, sota_text=switched, key_name=_plain(folder.key_name) + STAGED,
                                         cert_name=_plain(folder.cert_name) + STAGED, cert=cert)  # fmt: skip
        on_step("confirm")
        answer = _ask_gateway(folder, transport)
        if answer is not None and not answer.accepted:
            if folder.switched:
                _roll_back(folder, writer)
                raise RefusedError(
                    f"the gateway refused the new certificate of device {folder.uuid} ({answer.reason}); "
                    "the device keeps its old key and certificate"
                )
            raise RefusedError(f"the gateway refuses device {folder.uuid} ({answer.reason})")
        if folder.switched:
            _install(folder, writer, on_step)
        on_step("done")
    cert = folder.cert
    return Rotated(
        uuid=folder.uuid, path=path, serial=profiles.serial_decimal(cert), issuer=profiles.name_text(cert.issuer),
        fingerprint=profiles.fingerprint_sha256(cert), confirmed=answer is not None, resumed=resumed,
    )


def _enroll_and_stage(
    folder: DeviceFolder, server: EstServer, transport: Transport, on_step: Step, cas: CaCache
) -> x509.Certificate:
    """Steps 1: a new key, the certificate EST issues for it, both checked and staged."""
    client = EstClient(server, transport, root=folder.path / facts.DEVICE_ROOT,
                       cert=folder.path / folder.cert_name, key=folder.path / folder.key_name)  # fmt: skip
    on_step("cacerts")
    ca_certs = _ca_certs(client, folder, cas)
    on_step("key")
    key = profiles.new_key()
    writer = _Writer(folder.path)
    try:
        writer.write_new(_plain(folder.key_name) + STAGED, profiles.private_key_pem(key))
        on_step("enroll")
        answer = client.simplereenroll(_renewal_csr(folder.cert, key))
        cert, issuer = _check_issued(answer, key, folder, ca_certs, cas)
        cert_pem = profiles.cert_pem(cert)
        writer.write_new(_plain(folder.cert_name) + STAGED, cert_pem)
        if folder.chained:
            writer.write_new(facts.DEVICE_CHAINED + STAGED, cert_pem + profiles.cert_pem(issuer))
    except Exception:
        writer.remove(*(staged for staged, _name in _staged_names(folder)))  # a refusal leaves the folder as it was
        raise
    on_step("staged")
    return cert


def _ca_certs(client: EstClient, folder: DeviceFolder, cas: CaCache) -> list[x509.Certificate]:
    """cacerts (once per fleet), which must hold this device's root: its explicit trust anchor."""
    if cas.certs is None:
        cas.certs = client.cacerts()
    digest = folder.root.fingerprint(hashes.SHA256())
    if digest not in cas.checked_roots:
        if not any(cert.fingerprint(hashes.SHA256()) == digest for cert in cas.certs):
            raise RefusedError(
                f"the EST server's CA certificates do not include {folder.path / facts.DEVICE_ROOT}: "
                "it is not this factory's EST server"
            )
        cas.checked_roots.add(digest)
    return cas.certs


def _renewal_csr(current: x509.Certificate, key: Any) -> x509.CertificateSigningRequest:
    """The CSR RFC 7030 4.2.2 asks for: the current subject and subjectAltName, a new key; and
    the purposes lmp-device-register's CSR asks for (a TLS client signature)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(current.subject)
        .add_extension(profiles.key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
    )
    try:
        names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(names.value, critical=names.critical)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(key, hashes.SHA256())


def _check_issued(
    answer: list[x509.Certificate], key: Any, folder: DeviceFolder, ca_certs: list[x509.Certificate], cas: CaCache
) -> tuple[x509.Certificate, x509.Certificate]:
    """The issued certificate (the answer's one for our key) and its CA, both checked: the CA
    is a device CA of the device's root, the certificate a device certificate for our key with
    the same subject. Nothing unchecked is ever staged."""
    artifact = _plain(folder.cert_name) + STAGED
    mine = [cert for cert in answer if _spki(cert.public_key()) == _spki(key.public_key())]
    if len(mine) != 1:
        raise CheckError(artifact, f"the EST answer holds {len(mine)} certificate(s) for the new key, not one")
    cert = mine[0]
    if cert.subject.public_bytes() != folder.cert.subject.public_bytes():
        raise CheckError(artifact, f"subject must stay {profiles.name_text(folder.cert.subject)}")
    factory = profiles.subject_ou(folder.root) or ""
    issuers = [ca for ca in ca_certs if ca.subject == cert.issuer and profiles.is_ca(ca) and ca.subject != ca.issuer]
    issuer = next((ca for ca in issuers if _signed_by(cert, ca)), None)
    if issuer is None:
        raise CheckError(artifact, "is not signed by a device CA of the EST server's cacerts; fioca cannot check it")
    checked = issuer.fingerprint(hashes.SHA256()) + folder.root.fingerprint(hashes.SHA256())
    if checked not in cas.checked_issuers:
        profiles.check_device_ca(issuer, root=folder.root, factory=factory, artifact=f"issuer of {artifact}")
        cas.checked_issuers.add(checked)
    profiles.check_device_cert(cert, ca=issuer, factory=factory, uuid=folder.uuid, artifact=artifact)
    return cert, issuer


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any failure means "not this CA"
        return False
    return True


def _ask_gateway(folder: DeviceFolder, transport: Transport) -> check.CheckResult | None:
    """Step 3: the gateway, asked with the pair sota.toml now names; accepted, it completes the
    rotation there. None when it cannot be reached: the new pair is kept (the gateway accepts
    the new key and completes at the device's next request)."""
    server = sota.gateway_server(folder.sota_text)
    parts = urlsplit(server or "")
    if not parts.hostname:
        raise PkiDirError(f"{folder.path / facts.SOTA_TOML} has no [tls] server: where is the device's gateway?")
    device = check.DeviceFiles(
        cert=folder.path / folder.cert_name, key=folder.path / folder.key_name, root=folder.path / facts.DEVICE_ROOT,
        host=parts.hostname, port=parts.port or facts.GATEWAY_PORT, uuid=folder.uuid,
    )
    target = check.Target(*transport.target(device.host, device.port))
    try:
        return check.probe(device, target)
    except FiocaError:
        return None


def _roll_back(folder: DeviceFolder, writer: _Writer) -> None:
    """sota.toml names the old pair again (still the one the gateway pins); `.next` files go."""
    writer.replace(facts.SOTA_TOML, _sota_with(folder, staged=False).encode("utf-8"))
    writer.remove(*(staged for staged, _name in _staged_names(folder)))


# --- A fleet --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    path: Path
    rotated: Rotated | None = None
    error: FiocaError | None = None
    uuid: str | None = None  # of a failed one, when its certificate could be read

    def as_dict(self) -> dict[str, Any]:
        if self.rotated is not None:
            return self.rotated.as_dict()
        assert self.error is not None
        return {"uuid": self.uuid, "path": str(self.path), "status": "failed", "error": self.error.message,
                "exit_code": int(self.error.exit_code)}  # fmt: skip


def _uuid_of(path: Path) -> str | None:
    try:
        return open_folder(path).uuid
    except FiocaError:
        return None


def fleet_folders(fleet: Path) -> list[Path]:
    """The device folders directly in `fleet` (each with a sota.toml), by name."""
    if not fleet.is_dir():
        raise PkiDirError(f"{fleet} is not a directory of device folders")
    return sorted(entry for entry in fleet.iterdir() if not entry.name.startswith(".") and (entry / facts.SOTA_TOML).is_file())


def rotate_fleet(
    paths: Sequence[Path],
    server: EstServer,
    transport: Transport,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] = lambda _n: None,
) -> list[Outcome]:
    """Rotate many folders, `workers` at a time; one device's failure is its own outcome.
    Ctrl-C lets the rotations under way finish (each device is safe at any point anyway)."""
    cas = CaCache()
    started = time.monotonic()

    def one(path: Path) -> Outcome:
        try:
            return Outcome(path, rotated=rotate(path, server, transport, cas=cas))
        except FiocaError as error:
            return Outcome(path, error=error, uuid=_uuid_of(path))

    outcomes: dict[Path, Outcome] = {}
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rotate")
    try:
        futures = {executor.submit(one, path): path for path in paths}
        for future in concurrent.futures.as_completed(futures):
            outcomes[futures[future]] = future.result()
            progress(1)
    except KeyboardInterrupt:
        executor.shutdown(wait=True, cancel_futures=True)
        done = sum(1 for outcome in outcomes.values() if outcome.rotated is not None)
        raise Interrupted(
            f"Interrupted after {time.monotonic() - started:.0f} s: {done} of {len(paths)} device(s) rotated; every "
            "device still has a working key and certificate. Run the same command again for the rest."
        ) from None
    executor.shutdown(wait=True)
    return [outcomes[path] for path in paths]

