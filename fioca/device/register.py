"""Online registration, as `lmp-device-register` does it (PKI-SPEC section 2).

A P-256 key and a CSR (CN=<uuid>, OU=<factory> [, businessCategory=production]) are made
here; `HEAD <server>/ota/devices/` must answer < 500, then `POST` the documented body; only
201 is success. Every key of the answer is a file name written into the sota dir (atomically,
each through a temporary file), then `pkey.pem` (0400). What the server sent is checked
first: plain file names, `client.pem` for our key and uuid, signed by the CA in
`client.chained`, which chains to `root.crt`, the factory root. A sota dir that already holds
a registration is refused unless `force`.
"""

from __future__ import annotations

import os
import platform
import re
import uuid as uuid_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from fioca import facts
from fioca.api import FactoryApi, Response
from fioca.errors import ApiError, CheckError, PkiDirError, RefusedError, UsageError
from fioca.pki import files, profiles

DEVICES_PATH = "/ota/devices/"
PKEY = "pkey.pem"
CLIENT_CERT = "client.pem"
ROOT_CERT = "root.crt"
SOTA_TOML = "sota.toml"
CLIENT_CHAINED = "client.chained"
# The files whose presence means "this sota dir is registered".
REGISTRATION_FILES = (PKEY, CLIENT_CERT, SOTA_TOML)
PUBLIC_FILE_MODE = 0o644  # certificates and sota.toml: the device's services read them
MAX_FILE_BYTES = 256 * 1024
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True)
class RegisterOptions:
    sota_dir: Path
    hardware_id: str
    uuid: str | None = None
    name: str | None = None
    production: bool = False
    group: str | None = None
    tags: str | None = None
    use_ostree_server: bool = True
    force: bool = False


@dataclass(frozen=True)
class Registered:
    uuid: str
    name: str
    sota_dir: Path
    written: list[str] = field(default_factory=list)
    certificate: dict[str, Any] = field(default_factory=dict)


def default_hardware_id() -> str:
    """LmP's machine name from /etc/os-release (LMP_MACHINE), else the CPU architecture."""
    try:
        text = OS_RELEASE.read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r'^LMP_MACHINE="?([^"\n]+)"?$', text, re.MULTILINE)
    return match[1] if match else platform.machine() or "unknown"


class RegistrationApi(FactoryApi):
    """The device-registration endpoint, with FactoryApi's session, token header and TLS."""

    @property
    def devices_url(self) -> str:
        return f"{self.base}{DEVICES_PATH}"

    def probe(self) -> int:
        """HEAD first, as lmp-device-register does: anything below 500 means "server is there"."""
        return self._request("HEAD", self.devices_url, ok=tuple(range(100, 500))).status

    def create(self, body: dict[str, Any]) -> Response:
        response = self._request("POST", self.devices_url, body, ok=(201,))
        if not isinstance(response.body, dict):
            raise ApiError(f"answer to POST '{self.devices_url}' is not a JSON object")
        return response


def registration_body(options: RegisterOptions, *, uuid: str, name: str, csr_pem: str) -> dict[str, Any]:
    """The documented body; every leaf a string, `overrides` section -> key -> TOML literal."""
    overrides: dict[str, dict[str, str]] = {}
    if options.tags:
        overrides["pacman"] = {"tags": f'"{options.tags}"'}
    body: dict[str, Any] = {
        "name": name,
        "uuid": uuid,
        "csr": csr_pem,
        "hardware-id": options.hardware_id,
        "sota-config-dir": str(options.sota_dir),
        "use-ostree-server": "true" if options.use_ostree_server else "false",
        "overrides": overrides,
    }
    if options.group:
        body["group"] = options.group
    return body


def check_sota_dir(options: RegisterOptions) -> None:
    """The sota dir exists, is writable, and is not registered already (unless force)."""
    folder = options.sota_dir
    if not folder.is_dir():
        raise PkiDirError(f"sota dir {folder} does not exist (or is not a directory)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PkiDirError(f"sota dir {folder} is not writable")
    present = [name for name in REGISTRATION_FILES if (folder / name).exists()]
    if present and not options.force:
        raise RefusedError(
            f"sota dir {folder} is already registered ({', '.join(present)} present); "
            "pass --force to register it again as a new device"
        )


def register(api: RegistrationApi, options: RegisterOptions) -> Registered:
    """Key, CSR, HEAD, POST, check the answer, write the files. Nothing is written on failure."""
    if options.tags is not None and ('"' in options.tags or "\n" in options.tags):
        raise UsageError("--tags must not hold quotes or newlines")
    check_sota_dir(options)
    factory = api.factory
    device_uuid = _device_uuid(options.uuid)
    name = options.name or device_uuid
    key = profiles.new_key()
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=factory, production=options.production)
    body = registration_body(options, uuid=device_uuid, name=name, csr_pem=profiles.csr_pem(csr).decode())

    api.probe()
    answer = api.create(body).body
    contents = checked_answer(answer, key=key, uuid=device_uuid, factory=factory, production=options.production)
    written = []
    for file_name, data in contents.items():
        _write(options.sota_dir / file_name, data, PUBLIC_FILE_MODE, replace=options.force)
        written.append(file_name)
    # The key last: a folder with pkey.pem is one whose registration completed.
    _write(options.sota_dir / PKEY, profiles.private_key_pem(key), facts.FILE_MODE, replace=options.force)
    written.append(PKEY)
    cert = profiles.load_cert(contents[CLIENT_CERT], CLIENT_CERT)
    return Registered(
        uuid=device_uuid, name=name, sota_dir=options.sota_dir, written=written, certificate=profiles.describe(cert)
    )


def _device_uuid(value: str | None) -> str:
    if value is None:
        return str(uuid_module.uuid4())
    try:
        return str(uuid_module.UUID(value))
    except ValueError:
        raise UsageError(f"--uuid {value!r} is not a UUID") from None


def checked_answer(answer: dict[str, Any], *, key: Any, uuid: str, factory: str, production: bool) -> dict[str, bytes]:
    """The files of a 201 answer, each checked; a rule broken raises CheckError naming the file."""
    contents: dict[str, bytes] = {}
    for name, value in answer.items():
        if not isinstance(name, str) or not _FILE_NAME.match(name) or name == PKEY:
            raise CheckError("registration answer", f"{name!r} is not a file name fioca will write")
        if not isinstance(value, str):
            raise CheckError(name, f"must be text, got {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > MAX_FILE_BYTES or "\x00" in value:
            raise CheckError(name, "is too large or holds NUL bytes")
        contents[name] = data
    for required in (CLIENT_CERT, ROOT_CERT, SOTA_TOML):
        if required not in contents:
            raise CheckError("registration answer", f"has no {required}")

    root = profiles.load_cert(contents[ROOT_CERT], ROOT_CERT)
    profiles.check_root(root, factory=factory, artifact=ROOT_CERT)
    cert = profiles.load_cert(contents[CLIENT_CERT], CLIENT_CERT)
    profiles.check_key_matches(key, cert, CLIENT_CERT)
    if CLIENT_CHAINED in contents:
        chain = profiles.load_cert_bundle(contents[CLIENT_CHAINED], CLIENT_CHAINED)
        if len(chain) < 2 or chain[0] != cert:
            raise CheckError(CLIENT_CHAINED, "must be client.pem followed by its issuing CA")
        ca = chain[1]
        profiles.check_device_ca(ca, root=root, factory=factory, artifact=f"{CLIENT_CHAINED} CA")
        profiles.check_device_cert(cert, ca=ca, factory=factory, uuid=uuid, artifact=CLIENT_CERT)
    else:
        # Without the issuing CA only the subject can be checked here; the gateway checks the rest.
        if profiles.subject_cn(cert) != uuid or profiles.subject_ou(cert) != factory:
            raise CheckError(CLIENT_CERT, f"subject must be CN={uuid}, OU={factory}, got {profiles.name_text(cert.subject)}")
    is_production = any(
        a.value == profiles.PRODUCTION for a in cert.subject.get_attributes_for_oid(x509.NameOID.BUSINESS_CATEGORY)
    )
    if is_production != production:
        raise CheckError(CLIENT_CERT, f"production marking is {is_production}, asked for {production}")
    return contents


def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Atomic write: never over an existing file, unless `replace` (then an atomic rename)."""
    if not replace:
        files.write_new(path, data, mode)
        return
    try:
        files.replace_file(path, data, mode)
    except OSError as exc:
        raise PkiDirError(f"cannot write {path}: {exc.strerror}") from None
