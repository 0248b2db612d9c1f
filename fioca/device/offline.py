"""Offline device certificates: the documented manual procedure (PKI-SPEC section 8), two ways.

- `faithful`: the section 8 commands themselves, rendered into a shell script and run with
  `sh` against the system `openssl`, cwd = the PKI dir, one device at a time. As documented,
  `-CAcreateserial` leaves `local-ca.srl` in the PKI dir, `openssl ecparam -genkey` writes an
  `EC PARAMETERS` block before the key, and the certificate gets OpenSSL's default 30 days
  (the `days=3650` in `[req]` has no effect). One deviation: the UUID is made by fioca and
  written into `device-cert.conf` instead of running `uuidgen` inside the heredoc, because the
  folder is named after it before the script runs (and `uuidgen` is not on every system).
- in process (the default): the same files and the same certificate profile built with
  `cryptography`, for a batch spread over every core (`ProcessPoolExecutor`, each worker
  loading the local CA key once). Validity is `days` (default 3650, what the document meant).

Either way each device is built in `OUT/.partial-<name>` (0700), every artifact is checked
against its profile, files are made 0400, and only then is the folder renamed to `OUT/<name>`:
an interrupted batch leaves only complete device folders. A lock on OUT keeps two runs apart,
and partial folders a killed run left behind are removed by the next run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import uuid as uuid_module
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from fioca import facts
from fioca.device import sota
from fioca.errors import (
    CheckError,
    ExitCode,
    FiocaError,
    PkiDirError,
    RefusedError,
    ScriptError,
    UsageError,
)
from fioca.pki import profiles
from fioca.pki.files import PkiDir

# The files of a device folder, named as section 8 names them (+ what /var/sota needs).
PKEY = "pkey.pem"
CERT_CONF = "device-cert.conf"
CERT_EXT = "device-cert.ext"
CSR = "device-cert.csr"
CLIENT_CERT = "client.pem"
ROOT_CERT = "root.crt"
SOTA_TOML = "sota.toml"
DEVICE_FILES = (PKEY, CERT_CONF, CERT_EXT, CSR, CLIENT_CERT, ROOT_CERT, SOTA_TOML)

DEFAULT_OUT = "devices"
DEFAULT_DAYS = 3650  # in process; the documented procedure gives OpenSSL's 30
FAITHFUL_DAYS = profiles.OFFLINE_DEVICE_DAYS
PARTIAL_PREFIX = ".partial-"
SCRIPT_TIMEOUT_SECONDS = 60
# Below this many devices a worker pool costs more than it saves.
POOL_THRESHOLD = 32
MAX_CHUNK = 64
# In a batch, the whole profile check runs on the first certificate and on every 64th.
FULL_CHECK_EVERY = 64
_KEY_ID_OIDS = [ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER]

# device-cert.ext, byte for byte as section 8 writes it.
DEVICE_CERT_EXT = "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=critical,clientAuth\n"
# A folder name: what a uuid or a simple device name looks like, nothing a path could hide in.
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BatchInterrupted(FiocaError):
    """The batch was interrupted; the complete folders stay, partial ones are removed."""

    exit_code = ExitCode.INTERRUPTED


@dataclass(frozen=True)
class OfflinePki:
    """What issuing offline devices needs from the PKI dir, loaded and checked once."""

    pki_dir: Path
    factory: str
    local_ca: x509.Certificate
    root_pem: bytes
    gateway_host: str
    ostree_host: str


@dataclass(frozen=True)
class OfflineOptions:
    out_dir: Path
    days: int = DEFAULT_DAYS
    production: bool = False
    hardware_id: str | None = None
    sota_dir: str = sota.DEFAULT_SOTA_DIR
    gateway_port: int = sota.GATEWAY_PORT
    workers: int | None = None  # None: os.cpu_count()


@dataclass(frozen=True)
class DeviceSpec:
    uuid: str
    folder: str


@dataclass(frozen=True)
class OfflineDevice:
    uuid: str
    path: Path


# --- Loading the PKI dir ---------------------------------------------------------------------


def load_pki(pki_dir: Path) -> OfflinePki:
    """Read and check factory_ca.pem, local-ca.pem and tls-crt; the factory is the root's OU."""
    with PkiDir.open(pki_dir) as pki:
        return _load_pki(pki)


def _load_pki(pki: PkiDir) -> OfflinePki:
    for name in (facts.ROOT_CERT, facts.LOCAL_CA_CERT, facts.LOCAL_CA_KEY, facts.TLS_CERT):
        if not pki.has(name):
            raise PkiDirError(
                f"{pki.path / name} does not exist; offline devices need a PKI dir made by `fioca keys ca create` "
                "with a local device CA"
            )
    root_pem = pki.read_bytes(facts.ROOT_CERT)
    root = profiles.load_cert(root_pem, facts.ROOT_CERT)
    factory = profiles.subject_ou(root)
    if not factory:
        raise CheckError(facts.ROOT_CERT, "subject has no OU (the factory name)")
    profiles.check_root(root, factory=factory, artifact=facts.ROOT_CERT)
    local_ca = profiles.load_cert(pki.read_bytes(facts.LOCAL_CA_CERT), facts.LOCAL_CA_CERT)
    profiles.check_device_ca(local_ca, root=root, factory=factory, artifact=facts.LOCAL_CA_CERT)
    tls = profiles.load_cert(pki.read_bytes(facts.TLS_CERT), facts.TLS_CERT)
    hosts = profiles.gateway_hosts(tls)
    if len(hosts) < 2:
        raise CheckError(facts.TLS_CERT, "subjectAltName must name the gateway host and the OSTree host")
    return OfflinePki(
        pki_dir=pki.path, factory=factory, local_ca=local_ca, root_pem=root_pem,
        gateway_host=hosts[0], ostree_host=hosts[1],
    )


def load_local_ca_key(pki: OfflinePki) -> ec.EllipticCurvePrivateKey:
    with PkiDir.open(pki.pki_dir) as folder:
        key = profiles.load_private_key(folder.read_bytes(facts.LOCAL_CA_KEY), facts.LOCAL_CA_KEY)
    profiles.check_key_matches(key, pki.local_ca, facts.LOCAL_CA_KEY)
    return key


# --- Planning names --------------------------------------------------------------------------


def plan_devices(count: int, *, uuid: str | None = None, name: str | None = None) -> list[DeviceSpec]:
    """The uuids and folder names of a batch; `uuid` and `name` only for a single device."""
    if count < 1:
        raise UsageError("--count must be at least 1")
    if count > 1 and (uuid or name):
        raise UsageError("--uuid and --name name one device; leave them out with --count")
    if uuid is not None:
        try:
            uuid = str(uuid_module.UUID(uuid))
        except ValueError:
            raise UsageError(f"--uuid {uuid!r} is not a UUID") from None
    if name is not None and not _FOLDER_NAME.match(name):
        raise UsageError(f"--name {name!r} must be a plain folder name (letters, digits, . _ -)")
    if count == 1:
        device_uuid = uuid or str(uuid_module.uuid4())
        return [DeviceSpec(device_uuid, name or device_uuid)]
    return [DeviceSpec(u, u) for u in (str(uuid_module.uuid4()) for _ in range(count))]


# --- The documented files --------------------------------------------------------------------


def device_cert_conf(uuid: str, factory: str, *, production: bool = False) -> str:
    """device-cert.conf as section 8's heredoc expands it (production adds businessCategory)."""
    lines = [
        "[req]",
        "prompt = no",
        "days=3650",
        "distinguished_name = req_dn",
        "",
        "[req_dn]",
        "# Device ID",
        f'commonName="{uuid}"',
        f'organizationalUnitName="{factory}"',
    ]
    if production:
        lines.append(f'businessCategory="{profiles.PRODUCTION}"')
    return "\n".join(lines) + "\n"


def render_sota_toml(pki: OfflinePki, options: OfflineOptions) -> bytes:
    return sota.render(
        gateway_host=pki.gateway_host, ostree_host=pki.ostree_host, port=options.gateway_port,
        hardware_id=options.hardware_id, sota_dir=options.sota_dir,
    ).encode()


def faithful_script(*, factory: str, device_dir: str, uuid: str, production: bool) -> str:
    """Section 8's commands for one device, output into `device_dir` (relative to the PKI dir)."""
    d = shlex.quote(device_dir)
    production_line = f'businessCategory="{profiles.PRODUCTION}"\n' if production else ""
    return (
        "set -e\n"
        f"FACTORY={shlex.quote(factory)}\n"
        f"mkdir -p {d}\n"
        f"openssl ecparam -genkey -name prime256v1 -out {d}/pkey.pem\n"
        f"cat > {d}/device-cert.conf <<EOF\n"
        "[req]\n"
        "prompt = no\n"
        "days=3650\n"
        "distinguished_name = req_dn\n"
        "\n"
        "[req_dn]\n"
        "# Device ID\n"
        f'commonName="{uuid}"\n'
        'organizationalUnitName="${FACTORY}"\n'
        f"{production_line}"
        "EOF\n"
        f"cat > {d}/device-cert.ext <<EOF\n"
        f"{DEVICE_CERT_EXT}"
        "EOF\n"
        f"openssl req -new -config {d}/device-cert.conf -key {d}/pkey.pem -out {d}/device-cert.csr\n"
        f"openssl x509 -req -in {d}/device-cert.csr -CAcreateserial -extfile {d}/device-cert.ext "
        f"-CAkey local-ca.key -CA local-ca.pem -sha256 -out {d}/client.pem\n"
        "openssl x509 -noout -in tls-crt -ext subjectAltName\n"
    )


# --- Checks shared by both paths -------------------------------------------------------------


def check_device(
    cert: x509.Certificate,
    *,
    key: Any,
    pki: OfflinePki,
    uuid: str,
    production: bool,
    days: int,
    csr: x509.CertificateSigningRequest | None = None,
) -> None:
    """The device cert's profile, its key, its CSR, production marking and validity length."""
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=pki.factory, uuid=uuid, artifact=CLIENT_CERT)
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


# --- In process ------------------------------------------------------------------------------


class InProcessIssuer:
    """Issues devices with one loaded CA key (one per worker process)."""

    def __init__(self, pki: OfflinePki, options: OfflineOptions):
        self.pki = pki
        self.options = options
        self.ca_key = load_local_ca_key(pki)
        self.sota_toml = render_sota_toml(pki, options)
        self.ext_bytes = DEVICE_CERT_EXT.encode()
        # Built once: every device certificate carries the same issuer-side values.
        self._key_usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        )
        self._eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        self._akid = profiles.authority_key_identifier(pki.local_ca)
        self._expected_extensions = [(ExtensionOID.KEY_USAGE, True, self._key_usage), (ExtensionOID.EXTENDED_KEY_USAGE, True, self._eku)]
        self._built = 0

    def build(self, spec: DeviceSpec) -> dict[str, bytes]:
        """The device's files, checked; nothing written."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [
            x509.NameAttribute(NameOID.COMMON_NAME, spec.uuid),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.pki.factory),
        ]
        if self.options.production:
            attributes.append(x509.NameAttribute(NameOID.BUSINESS_CATEGORY, profiles.PRODUCTION))
        subject = x509.Name(attributes)
        # openssl req with device-cert.conf: subject only, no requested extensions.
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        public_key = key.public_key()
        start = datetime.now(UTC).replace(microsecond=0)
        # What `openssl x509 -req -extfile device-cert.ext` makes (OpenSSL 3 adds SKID and AKID).
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)  # copied from the CSR
            .issuer_name(self.pki.local_ca.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=self.options.days))
            # keyUsage = critical, digitalSignature, keyAgreement
            .add_extension(self._key_usage, critical=True)
            # extendedKeyUsage = critical, clientAuth
            .add_extension(self._eku, critical=True)
            # subjectKeyIdentifier = hash, authorityKeyIdentifier = keyid (OpenSSL 3's defaults)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._akid, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self._check(cert, key, spec, subject)
        return {
            PKEY: profiles.private_key_pem(key),
            CERT_CONF: device_cert_conf(spec.uuid, self.pki.factory, production=self.options.production).encode(),
            CERT_EXT: self.ext_bytes,
            CSR: csr.public_bytes(serialization.Encoding.PEM),
            CLIENT_CERT: cert.public_bytes(serialization.Encoding.PEM),
            ROOT_CERT: self.pki.root_pem,
            SOTA_TOML: self.sota_toml,
        }

    def _check(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, spec: DeviceSpec, subject: x509.Name) -> None:
        """Every certificate gets the fast check of what the builder made; the first one and
        every FULL_CHECK_EVERY-th get the whole profile check (signature verified with the
        local CA, every rule of check_device_cert). The extensions are the same constant
        objects for every device, and the CA key was matched to local-ca.pem at load."""
        if self._built % FULL_CHECK_EVERY == 0:
            check_device(
                cert, key=key, pki=self.pki, uuid=spec.uuid, production=self.options.production, days=self.options.days
            )
        self._built += 1
        if cert.subject != subject or profiles.subject_cn(cert) != spec.uuid:
            raise CheckError(CLIENT_CERT, f"subject must be {profiles.name_text(subject)}")
        if cert.issuer != self.pki.local_ca.subject:
            raise CheckError(CLIENT_CERT, "issuer must be local-ca.pem's subject")
        if cert.public_key() != key.public_key():
            raise CheckError(PKEY, "private key does not belong to the certificate")
        length = cert.not_valid_after_utc - cert.not_valid_before_utc
        if length != timedelta(days=self.options.days):
            raise CheckError(CLIENT_CERT, f"validity must be {self.options.days} days")
        extensions = [(ext.oid, ext.critical, ext.value) for ext in cert.extensions]
        if extensions[:2] != self._expected_extensions or [oid for oid, _, _ in extensions[2:]] != _KEY_ID_OIDS:
            raise CheckError(CLIENT_CERT, "extensions differ from the device profile")
        if extensions[3][2] != self._akid:
            raise CheckError(CLIENT_CERT, "authorityKeyIdentifier is not local-ca.pem's key")

    def issue(self, spec: DeviceSpec) -> OfflineDevice:
        return write_device(self.options.out_dir, spec, self.build(spec))


def write_device(out: Path, spec: DeviceSpec, contents: dict[str, bytes]) -> OfflineDevice:
    """Write a device's files (0400) into a partial folder, then rename it into place."""
    partial = out / f"{PARTIAL_PREFIX}{spec.folder}"
    os.mkdir(partial, facts.DIR_MODE)
    try:
        folder_fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, data in contents.items():
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, facts.FILE_MODE, dir_fd=folder_fd)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
        finally:
            os.close(folder_fd)
        return _publish(partial, out / spec.folder, spec.uuid)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _publish(partial: Path, final: Path, uuid: str) -> OfflineDevice:
    """Rename a complete folder into place; never onto an existing one (the run holds the lock)."""
    if final.exists():
        raise RefusedError(f"{final} already exists; fioca never overwrites a device folder")
    os.rename(partial, final)
    return OfflineDevice(uuid=uuid, path=final)


# The worker processes' issuer: made once per process by _init_worker.
_worker_issuer: InProcessIssuer | None = None


def _init_worker(pki_dir: Path, options: OfflineOptions) -> None:
    global _worker_issuer
    # Ctrl-C reaches the whole process group; the parent decides, workers finish their chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Certificates do not pickle: each worker loads (and checks) the PKI dir itself, once.
    _worker_issuer = InProcessIssuer(load_pki(pki_dir), options)


def _issue_chunk(specs: Sequence[DeviceSpec]) -> list[OfflineDevice]:
    """Build, check and write a chunk of devices (each folder renamed into place when complete)."""
    assert _worker_issuer is not None, "worker not initialised"
    return [_worker_issuer.issue(spec) for spec in specs]


def create_in_process(
    pki: OfflinePki,
    options: OfflineOptions,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None] = lambda _done: None,
) -> list[OfflineDevice]:
    """Issue `specs` in process: inline for a few devices, else on a pool using every core."""
    with _locked_out_dir(options.out_dir):
        _refuse_existing(options.out_dir, specs)
        if len(specs) < POOL_THRESHOLD:
            issuer = InProcessIssuer(pki, options)
            return _run_inline(issuer.issue, options.out_dir, specs, progress)
        return _run_pool(pki, options, specs, progress)


def _run_inline(
    issue: Callable[[DeviceSpec], OfflineDevice],
    out_dir: Path,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None],
) -> list[OfflineDevice]:
    done: list[OfflineDevice] = []
    try:
        for spec in specs:
            done.append(issue(spec))
            progress(1)
    except KeyboardInterrupt:
        _remove_partials(out_dir)
        raise _interrupted(done, len(specs), out_dir) from None
    return done


def _run_pool(
    pki: OfflinePki, options: OfflineOptions, specs: Sequence[DeviceSpec], progress: Callable[[int], None]
) -> list[OfflineDevice]:
    workers = options.workers or os.cpu_count() or 1
    # Enough chunks to balance the cores and move the progress bar, few enough to stay cheap.
    chunk = max(1, min(MAX_CHUNK, len(specs) // (workers * 8)))
    chunks = [specs[i : i + chunk] for i in range(0, len(specs), chunk)]
    # forkserver, not fork: the caller may run threads (a sandbox in tests) that fork would copy
    # mid-lock; the server process is forked once, early, and copies nothing of ours.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fioca.device.offline"])
    done: list[OfflineDevice] = []
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(pki.pki_dir, options)
    )
    try:
        futures = [executor.submit(_issue_chunk, part) for part in chunks]
        for future in concurrent.futures.as_completed(futures):
            issued = future.result()
            done.extend(issued)
            progress(len(issued))
    except KeyboardInterrupt:
        # Chunks already running finish (small: a fraction of a second); the rest is dropped.
        executor.shutdown(wait=True, cancel_futures=True)
        _remove_partials(options.out_dir)
        complete = sum(1 for entry in options.out_dir.iterdir() if not entry.name.startswith("."))
        raise BatchInterrupted(
            f"interrupted: {complete} complete device folder(s) in {options.out_dir}, no partial ones; "
            f"{len(specs)} were asked for"
        ) from None
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        _remove_partials(options.out_dir)
        raise
    executor.shutdown(wait=True)
    return done


def _interrupted(done: list[OfflineDevice], asked: int, out_dir: Path) -> BatchInterrupted:
    return BatchInterrupted(
        f"interrupted: {len(done)} of {asked} device folder(s) complete in {out_dir}, no partial ones"
    )


# --- Faithful ---------------------------------------------------------------------------------


def create_faithful(
    pki: OfflinePki,
    options: OfflineOptions,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None] = lambda _done: None,
) -> list[OfflineDevice]:
    """Run section 8's commands with `sh`, one device at a time; check, then publish each."""
    if options.days != FAITHFUL_DAYS:
        raise UsageError(f"the documented procedure gives OpenSSL's {FAITHFUL_DAYS} days; --days is for the default path")
    with _locked_out_dir(options.out_dir):
        _refuse_existing(options.out_dir, specs)
        return _run_inline(lambda spec: _faithful_one(pki, options, spec), options.out_dir, specs, progress)


def _faithful_one(pki: OfflinePki, options: OfflineOptions, spec: DeviceSpec) -> OfflineDevice:
    out = options.out_dir
    partial = out / f"{PARTIAL_PREFIX}{spec.folder}"
    os.mkdir(partial, facts.DIR_MODE)
    try:
        # Paths as the document writes them: relative to the PKI dir when the folder is inside it.
        try:
            device_dir = str(partial.resolve().relative_to(pki.pki_dir.resolve()))
        except ValueError:
            device_dir = str(partial.resolve())
        script = faithful_script(
            factory=pki.factory, device_dir=device_dir, uuid=spec.uuid, production=options.production
        )
        san_line = _run_script(script, pki.pki_dir)
        _check_faithful(partial, pki, options, spec, san_line)
        (partial / ROOT_CERT).write_bytes(pki.root_pem)
        (partial / SOTA_TOML).write_bytes(render_sota_toml(pki, options))
        for name in DEVICE_FILES:
            os.chmod(partial / name, facts.FILE_MODE)
        unexpected = sorted(set(os.listdir(partial)) - set(DEVICE_FILES))
        if unexpected:
            raise ScriptError(f"the documented procedure left unexpected files: {', '.join(unexpected)}")
        return _publish(partial, out / spec.folder, spec.uuid)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_script(script: str, cwd: Path) -> str:
    """Run the rendered commands with sh (cwd = PKI dir, minimal env); stdout is the SAN line."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        result = sh.sh("-s", _in=script, _cwd=str(cwd), _env=env, _timeout=SCRIPT_TIMEOUT_SECONDS)
    except sh.ErrorReturnCode as error:
        stderr = error.stderr.decode(errors="replace").strip().splitlines()
        raise ScriptError(
            f"the documented openssl commands failed (exit {error.exit_code})", details=stderr[-5:]
        ) from None
    except sh.TimeoutException:
        raise ScriptError(f"the documented openssl commands took longer than {SCRIPT_TIMEOUT_SECONDS}s") from None
    return str(result)


def _check_faithful(partial: Path, pki: OfflinePki, options: OfflineOptions, spec: DeviceSpec, san_line: str) -> None:
    key = profiles.load_private_key((partial / PKEY).read_bytes(), PKEY)  # EC PARAMETERS block allowed
    csr = profiles.load_csr((partial / CSR).read_bytes(), CSR)
    cert = profiles.load_cert((partial / CLIENT_CERT).read_bytes(), CLIENT_CERT)
    profiles.check_key_matches(key, cert, PKEY)
    check_device(cert, key=key, pki=pki, uuid=spec.uuid, production=options.production, days=FAITHFUL_DAYS, csr=csr)
    if (partial / CERT_EXT).read_text() != DEVICE_CERT_EXT:
        raise CheckError(CERT_EXT, "differs from the documented extensions")
    # The document finds the gateway in `openssl x509 -ext subjectAltName`; it must agree.
    names = re.findall(r"DNS:([^,\s]+)", san_line)
    if names[:2] != [pki.gateway_host, pki.ostree_host]:
        raise CheckError(facts.TLS_CERT, f"openssl reports gateway names {names}, cryptography {pki.gateway_host}")


# --- The output folder -----------------------------------------------------------------------


@contextlib.contextmanager
def _locked_out_dir(out_dir: Path) -> Iterator[None]:
    """Create OUT (0700) if needed, hold its lock, and clear partial folders a killed run left."""
    folder, _notes = PkiDir.prepare(out_dir)
    with folder, folder.locked():
        _remove_partials(folder.path)
        yield


def _remove_partials(out_dir: Path) -> None:
    for entry in out_dir.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)


def _refuse_existing(out_dir: Path, specs: Sequence[DeviceSpec]) -> None:
    taken = [spec.folder for spec in specs if (out_dir / spec.folder).exists()]
    if taken:
        raise RefusedError(f"{out_dir / taken[0]} already exists; fioca never overwrites a device folder")
