"""Offline device certificates: the documented manual procedure (PKI-SPEC section 8), two ways.

- in process (the default): the same files and the same certificate profile, from a template
  (template.py: the builder's certificate made once, filled in and signed per device with
  `cryptography`'s ECDSA, every certificate read back and verified), on every core for a
  batch (batch.py: forked workers, durability by batch). Validity is `days` (default 3650,
  what the document meant).
- `faithful`: the section 8 commands themselves, run with `sh` and the system `openssl` in the
  script jail through the one runner (fioca/pki/scripts.py), one private work dir per device
  holding local-ca.key, local-ca.pem and tls-crt, several devices at once (one per core). As
  documented, `-CAcreateserial` leaves `local-ca.srl` (fioca keeps the last one in the PKI
  dir, 0400), `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the key, and
  the certificate gets OpenSSL's default 30 days (the `days=3650` in `[req]` has no effect).
  One deviation: the UUID is made by fioca and written into `device-cert.conf` instead of
  running `uuidgen` inside the heredoc, because the folder is named after it before the
  script runs (and `uuidgen` is not on every system). Each device's serial is one
  `-CAcreateserial` draws afresh: parallel runs never share a serial file.

Either way each device is built in `OUT/.partial-<name>` (0700), every artifact is checked
against its profile, files are made 0400, and only then, synced, is the folder renamed to
`OUT/<name>`: an interrupted batch leaves only complete device folders. A lock on OUT keeps
two runs apart, and partial folders a killed run left behind are removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import uuid as uuid_module
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fioca import facts
from fioca.device import batch, sota
from fioca.device.template import DeviceTemplate, check_device
from fioca.errors import CheckError, ExitCode, FiocaError, PkiDirError, RefusedError, ScriptError, UsageError
from fioca.pki import profiles
from fioca.pki.files import PkiDir, remove_tree

# The files of a device folder, named as section 8 names them (+ what /var/sota needs).
PKEY = "pkey.pem"
CERT_CONF = "device-cert.conf"
CERT_EXT = "device-cert.ext"
CSR = "device-cert.csr"
CLIENT_CERT = "client.pem"
ROOT_CERT = "root.crt"
SOTA_TOML = "sota.toml"
DEVICE_FILES = (PKEY, CERT_CONF, CERT_EXT, CSR, CLIENT_CERT, ROOT_CERT, SOTA_TOML)
# The documented procedure's own: the CA's serial file, and the script fioca installs.
CA_SERIAL = "local-ca.srl"
PROCEDURE_SCRIPT = "offline-device"
# What the procedure's work dir is given, from the PKI dir.
PROCEDURE_INPUTS = (facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT, facts.TLS_CERT)

DEFAULT_OUT = "devices"
DEFAULT_DAYS = 3650  # in process; the documented procedure gives OpenSSL's 30
FAITHFUL_DAYS = profiles.OFFLINE_DEVICE_DAYS
PARTIAL_PREFIX = batch.PARTIAL_PREFIX
SCRIPT_TIMEOUT_SECONDS = 60
# Below this many devices a worker pool costs more than it saves.
POOL_THRESHOLD = 32
# Devices a worker builds before the parent syncs and publishes them: enough that a sync is
# rare, few enough that progress moves and Ctrl-C waits for no more than a fraction of a second.
MAX_CHUNK = 256

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


# RFC 9562 version 4: the high nibble of octet 6 is 4, the two high bits of octet 8 are 10.
_VERSION_4 = bytes((octet & 0x0F) | 0x40 for octet in range(256))
_VARIANT_RFC = bytes((octet & 0x3F) | 0x80 for octet in range(256))


class RandomDevices(Sequence[DeviceSpec]):
    """`count` devices named after random (version 4) uuids: drawn at once, spelled on demand,
    so a batch of 100,000 costs the parent 1.6 MB, not 100,000 objects."""

    def __init__(self, count: int):
        drawn = bytearray(os.urandom(16 * count))
        drawn[6::16] = drawn[6::16].translate(_VERSION_4)  # every uuid's version and variant, at once
        drawn[8::16] = drawn[8::16].translate(_VARIANT_RFC)
        self._random = bytes(drawn)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            # A chunk spelled from one hex string: the parent and the workers slice 100,000.
            return [DeviceSpec(uuid, uuid) for uuid in _spelled(self._random[16 * start : 16 * max(start, stop)].hex())]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        index %= self._count
        [uuid] = _spelled(self._random[16 * index : 16 * index + 16].hex())  # str(UUID(...)) costs 4 times this
        return DeviceSpec(uuid, uuid)


def _spelled(digits: str) -> list[str]:
    """Canonical uuids from their hex digits, 32 a uuid, one after another."""
    return [f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-{digits[i + 12 : i + 16]}-{digits[i + 16 : i + 20]}-{digits[i + 20 : i + 32]}"
            for i in range(0, len(digits), 32)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class OfflineDevice:
    uuid: str
    folder: str
    out_dir: Path

    @property
    def path(self) -> Path:
        return self.out_dir / self.folder


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


def plan_devices(count: int, *, uuid: str | None = None, name: str | None = None) -> Sequence[DeviceSpec]:
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
    return RandomDevices(count)


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
    """Section 8's commands for one device, output into `device_dir` (relative to the cwd,
    which holds local-ca.key, local-ca.pem and tls-crt)."""
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


# --- In process ------------------------------------------------------------------------------


class InProcessIssuer:
    """Builds devices with one loaded CA key and one template (one per worker process)."""

    def __init__(self, pki: OfflinePki, options: OfflineOptions):
        self.pki = pki
        self.options = options
        self.template = DeviceTemplate(
            local_ca=pki.local_ca, ca_key=load_local_ca_key(pki), factory=pki.factory,
            production=options.production, days=options.days,
        )
        self.sota_toml = render_sota_toml(pki, options)
        self.ext_bytes = DEVICE_CERT_EXT.encode()

    def build(self, spec: DeviceSpec) -> dict[str, bytes]:
        """The device's files, every certificate checked (template.py); nothing written."""
        issued = self.template.issue(spec.uuid)
        self.template.check(issued)
        pems = issued.pem_files()
        return {
            PKEY: pems[PKEY],
            CERT_CONF: device_cert_conf(spec.uuid, self.pki.factory, production=self.options.production).encode(),
            CERT_EXT: self.ext_bytes,
            CSR: pems[CSR],
            CLIENT_CERT: pems[CLIENT_CERT],
            ROOT_CERT: self.pki.root_pem,
            SOTA_TOML: self.sota_toml,
        }


@dataclass(frozen=True)
class IssuerRecipe:
    """How a fork-server worker makes its own issuer (a loaded CA key does not pickle)."""

    pki_dir: Path
    options: OfflineOptions

    def __call__(self) -> InProcessIssuer:
        return InProcessIssuer(load_pki(self.pki_dir), self.options)


def create_in_process(
    pki: OfflinePki,
    options: OfflineOptions,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None] = lambda _done: None,
) -> list[OfflineDevice]:
    """Issue `specs` in process: inline for a few devices, else on every core (batch.py)."""
    with _locked_out_dir(options.out_dir) as publisher:
        _refuse_existing(options.out_dir, specs)
        issuer = InProcessIssuer(pki, options)
        workers = options.workers or os.cpu_count() or 1
        if len(specs) < POOL_THRESHOLD or workers == 1:
            return _run_inline(issuer, publisher, options.out_dir, specs, progress)
        plan = batch.PoolPlan(specs, workers, MAX_CHUNK, options.out_dir)
        try:
            published = batch.run_pool(issuer, IssuerRecipe(pki.pki_dir, options), plan, publisher, progress)
        except batch.PoolInterrupted:
            raise _interrupted(options.out_dir, len(specs)) from None
        return [OfflineDevice(spec.uuid, spec.folder, options.out_dir) for chunk in published for spec in plan.part(chunk)]


def _run_inline(
    issuer: InProcessIssuer,
    publisher: batch.Publisher,
    out_dir: Path,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None],
) -> list[OfflineDevice]:
    """Devices in this process, a chunk at a time: written, then synced and published together."""
    done: list[OfflineDevice] = []
    try:
        for start in range(0, len(specs), MAX_CHUNK):
            part = specs[start : start + MAX_CHUNK]
            for spec in part:
                batch.write_partial(publisher.out_fd, spec.folder, issuer.build(spec))
            publisher.publish([spec.folder for spec in part])
            done.extend(OfflineDevice(spec.uuid, spec.folder, out_dir) for spec in part)
            progress(len(part))
    except KeyboardInterrupt:
        batch.remove_partials(out_dir)
        raise _interrupted(out_dir, len(specs)) from None
    except BaseException:
        batch.remove_partials(out_dir)
        raise
    return done


def _interrupted(out_dir: Path, asked: int) -> BatchInterrupted:
    complete = sum(1 for entry in out_dir.iterdir() if not entry.name.startswith("."))
    return BatchInterrupted(
        f"interrupted: {complete} complete device folder(s) in {out_dir}, no partial ones; {asked} were asked for"
    )


# --- Faithful ---------------------------------------------------------------------------------


def create_faithful(
    pki: OfflinePki,
    options: OfflineOptions,
    specs: Sequence[DeviceSpec],
    progress: Callable[[int], None] = lambda _done: None,
) -> list[OfflineDevice]:
    """Run section 8's commands in the jail, one device per core at a time; check, then
    publish each device as it is done."""
    if options.days != FAITHFUL_DAYS:
        raise UsageError(f"the documented procedure gives OpenSSL's {FAITHFUL_DAYS} days; --days is for the default path")
    # Here, not at the top: a batch in process starts without the jail, sh (asyncio) and threads.
    import concurrent.futures as futures_module

    from fioca.pki import jail as jails
    from fioca.pki.scripts import ScriptLimits, ScriptRunner

    jail = jails.require()
    with PkiDir.open(pki.pki_dir) as folder:
        inputs = {name: folder.read_bytes(name) for name in PROCEDURE_INPUTS}
    with _locked_out_dir(options.out_dir) as publisher:
        _refuse_existing(options.out_dir, specs)
        limits = ScriptLimits(timeout=SCRIPT_TIMEOUT_SECONDS)
        procedure = Procedure(pki, options, lambda work: ScriptRunner(work, jail=jail, limits=limits), inputs)
        done: list[OfflineDevice] = []
        serial = None
        workers = min(options.workers or os.cpu_count() or 1, len(specs))
        pool = futures_module.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fioca-offline")
        try:
            pending = {pool.submit(procedure.run, spec): spec for spec in specs}
            while pending:
                # Every device finished meanwhile is synced and published together.
                finished, _ = futures_module.wait(pending, return_when=futures_module.FIRST_COMPLETED)
                ready = [(future, pending.pop(future)) for future in finished]
                serials = [future.result() for future, _spec in ready]
                publisher.publish([spec.folder for _future, spec in ready])
                serial = serials[-1]
                done.extend(OfflineDevice(spec.uuid, spec.folder, options.out_dir) for _future, spec in ready)
                progress(len(ready))
        except KeyboardInterrupt:
            procedure.stop(pool)
            raise _interrupted(options.out_dir, len(specs)) from None
        except BaseException:
            procedure.stop(pool)
            raise
        pool.shutdown(wait=True)
    _keep_serial(pki.pki_dir, serial)
    order = {spec.folder: index for index, spec in enumerate(specs)}
    return sorted(done, key=lambda device: order[device.folder])


class Procedure:
    """Section 8 for one device: a private work dir given the PKI's three files, the commands
    as a `#!/bin/sh -e` script run in the jail, the products taken, checked and written as
    the device's partial folder. The work dir (a copy of local-ca.key) is always removed."""

    def __init__(self, pki: OfflinePki, options: OfflineOptions, runner: Callable[[Path], Any], inputs: dict[str, bytes]):
        self.pki = pki
        self.options = options
        self.runner = runner  # a ScriptRunner on a work dir, in the jail
        self.inputs = inputs
        self.sota_toml = render_sota_toml(pki, options)

    def run(self, spec: DeviceSpec) -> bytes:
        """Make `spec`'s partial folder; the serial file the procedure left."""
        work = self.options.out_dir / f"{PARTIAL_PREFIX}{spec.folder}.work"
        os.mkdir(work, facts.DIR_MODE)
        try:
            runner = self.runner(work)
            for name, data in self.inputs.items():
                runner.put(name, data)
            text = faithful_script(factory=self.pki.factory, device_dir=".", uuid=spec.uuid, production=self.options.production)
            runner.install(PROCEDURE_SCRIPT, "#!/bin/sh -e\n" + text)
            try:
                san_line = runner.run(PROCEDURE_SCRIPT).decode("utf-8", "replace")
            except ScriptError as error:
                raise ScriptError(f"the documented openssl commands failed: {error.message}") from None
            made = {name: runner.take(name) for name in (PKEY, CERT_CONF, CERT_EXT, CSR, CLIENT_CERT, CA_SERIAL)}
        finally:
            with batch.opened_folder(self.options.out_dir) as out_fd:
                remove_tree(out_fd, work.name)  # it held local-ca.key
        _check_faithful(made, self.pki, self.options, spec, san_line)
        files = {name: made[name] for name in (PKEY, CERT_CONF, CERT_EXT, CSR, CLIENT_CERT)}
        files.update({ROOT_CERT: self.pki.root_pem, SOTA_TOML: self.sota_toml})
        with batch.opened_folder(self.options.out_dir) as out_fd:
            batch.write_partial(out_fd, spec.folder, {name: files[name] for name in DEVICE_FILES})
        return made[CA_SERIAL]

    def stop(self, pool: Any) -> None:
        """No new device starts; those running finish (a script has its timeout); partial
        folders and work dirs go."""
        pool.shutdown(wait=True, cancel_futures=True)
        batch.remove_partials(self.options.out_dir)


def _keep_serial(pki_dir: Path, serial: bytes | None) -> None:
    """local-ca.srl in the PKI dir, as the documented `-CAcreateserial` leaves it (0400)."""
    if serial is None:
        return
    if not re.fullmatch(rb"[0-9A-F]{2,42}\n", serial):
        raise CheckError(CA_SERIAL, "is not the hexadecimal serial openssl writes")
    with PkiDir.open(pki_dir) as folder:
        folder.replace(CA_SERIAL, serial, facts.FILE_MODE)


def _check_faithful(made: dict[str, bytes], pki: OfflinePki, options: OfflineOptions, spec: DeviceSpec, san_line: str) -> None:
    key = profiles.load_private_key(made[PKEY], PKEY)  # EC PARAMETERS block allowed
    csr = profiles.load_csr(made[CSR], CSR)
    cert = profiles.load_cert(made[CLIENT_CERT], CLIENT_CERT)
    check_device(cert, key=key, local_ca=pki.local_ca, factory=pki.factory, uuid=spec.uuid,
                 production=options.production, days=FAITHFUL_DAYS, csr=csr)
    if not csr.is_signature_valid:
        raise CheckError(CSR, "self-signature does not verify")
    if made[CERT_EXT] != DEVICE_CERT_EXT.encode():
        raise CheckError(CERT_EXT, "differs from the documented extensions")
    if made[CERT_CONF] != device_cert_conf(spec.uuid, pki.factory, production=options.production).encode():
        raise CheckError(CERT_CONF, "differs from the documented request configuration")
    # The document finds the gateway in `openssl x509 -ext subjectAltName`; it must agree.
    names = re.findall(r"DNS:([^,\s]+)", san_line)
    if names[:2] != [pki.gateway_host, pki.ostree_host]:
        raise CheckError(facts.TLS_CERT, f"openssl reports gateway names {names}, cryptography {pki.gateway_host}")


# --- The output folder -----------------------------------------------------------------------


@contextlib.contextmanager
def _locked_out_dir(out_dir: Path) -> Iterator[batch.Publisher]:
    """Create OUT (0700) if needed, hold its lock, clear partial folders a killed run left;
    the publisher that moves complete folders into it."""
    folder, _notes = PkiDir.prepare(out_dir)
    with folder, folder.locked():
        batch.remove_partials(folder.path)
        with batch.opened_folder(folder.path) as out_fd:
            yield batch.Publisher(folder.path, out_fd)


def _refuse_existing(out_dir: Path, specs: Sequence[DeviceSpec]) -> None:
    """Named folders that exist are refused before anything is made (random uuids are new;
    publishing refuses any name that exists all the same)."""
    if isinstance(specs, RandomDevices):
        return
    taken = [spec.folder for spec in specs if (out_dir / spec.folder).exists()]
    if taken:
        raise RefusedError(f"{out_dir / taken[0]} already exists; fioca never overwrites a device folder")
