"""Online registration, as lmp-device-register does it (PKI-SPEC 2, 9, 10).

The steps, in order:

1. `prepare`: all that can be checked before a byte is sent: the factory (set, and not LmP's
   placeholder `lmp`), the tags (required), the uuid (canonical: lower-case, hyphenated; a
   random one otherwise), the sota dir (a directory fioca can write into; not registered
   already: `client.pem` or `sql.db` refused unless `force`, and so are `pkey.pem`, `sota.toml`
   and `client.chained` left from an earlier run), aktualizr-lite not running (its lock held),
   and the factory's root when it is known (`registration_answer.known_root`).
2. `HEAD` DEVICE_API without a token: below 500 is fine. (lmp-device-register gets its OAuth
   token first; fioca probes first, so nobody approves a device for an endpoint that is down.)
3. Credentials: the token in its header (`-T`, else the settings' token; `-H`, else
   TOKEN_HEADER, else OSF-TOKEN), else the OAuth device flow (`device_flow`).
4. A P-256 key and the CSR (`profiles.build_device_csr`), the body (`registration_body`); POST;
   only 201 is success.
5. The answer checked (`registration_answer.check_answer`); the key (`pkey.pem`, SEC1, 0400)
   first, then every answer file (0644, as lmp-device-register leaves them under umask 022,
   `sota.toml` last with the newline it appends), written as one step through
   `files.write_all`. With `force`, aktualizr-lite's old `sql.db` (and a `client.chained` the new
   answer lacks) go once the new registration is on disk; lmp-device-register removes `sql.db`
   and `client.pem` before it registers, so a failed attempt there leaves no registration.

Never an orphan: when anything fails once the POST may have registered the device (the answer
fails a check, a file cannot be written, the answer was lost, Ctrl-C), the device is deleted
again (`DELETE /ota/devices/<uuid>/`, then its uuid cleared from the deny-list) when the server
registered it for our key; where that cannot be done (a registration server's `/sign`, a
device-flow token that may only create devices), the error says what is left and how to
remove it.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fioca import facts, interrupts
from fioca.api import DeviceRegistrationApi
from fioca.device import registration_answer
from fioca.errors import (
    ApiError,
    FiocaError,
    Interrupted,
    PkiDirError,
    RefusedError,
    UsageError,
)
from fioca.pki import files, profiles
from fioca.pki.profiles.details import same_key

OS_RELEASE = Path("/etc/os-release")
PUBLIC_FILE_MODE = 0o644  # certificates and sota.toml: the device's services read them; no group/other write
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_POLL_SECONDS = 5  # RFC 8628 3.2, when the server names no interval
DEFAULT_CODE_SECONDS = 900
RETRY_SECONDS = 2  # lmp-device-register's pause after an answer it did not expect
RESTORABLE_APPS_DEFAULT = " "  # lmp-device-register's default for -A: on, with no list of its own
# Registered already: lmp-device-register's two files; left from an earlier run: the others it writes.
REGISTERED = (facts.DEVICE_CERT, facts.DEVICE_SQL)
LEFTOVERS = (facts.DEVICE_KEY, facts.SOTA_TOML, facts.DEVICE_CHAINED)
_TOML_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


@dataclass(frozen=True)
class RegisterOptions:
    sota_dir: Path
    factory: str
    tags: str
    hardware_id: str
    uuid: str | None = None
    name: str | None = None
    production: bool = False
    group: str | None = None
    apps: str | None = None  # None: no compose-apps overrides (lmp-device-register without DOCKER_COMPOSE_APP)
    restorable_apps: str | None = None  # None: lmp-device-register's default (" ")
    use_ostree_server: bool = True
    force: bool = False
    pki_dir: Path | None = None
    aklite_lock: Path = Path(facts.AKLITE_LOCK)
    api_token: str | None = field(default=None, repr=False)
    token_header: str = facts.DEFAULT_TOKEN_HEADER
    token_source: str = "-T/--api-token"

    @property
    def compose_apps(self) -> bool:
        return self.apps is not None or self.restorable_apps is not None


@dataclass(frozen=True)
class Prepared:
    """What `prepare` found: the device's identity and what the sota dir already holds."""

    uuid: str
    name: str
    sota_dir: Path  # absolute, as sent in `sota-config-dir`
    known_root: registration_answer.KnownRoot | None
    present: tuple[str, ...]  # registration files already in the sota dir (replaced only with force)
    old_root: bytes | None = None  # root.crt already in the sota dir


@dataclass(frozen=True)
class Registered:
    uuid: str
    name: str
    sota_dir: Path
    written: list[str]
    certificate: dict[str, Any]
    shared: bool
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- Defaults from the device's /etc/os-release ---------------------------------------------------


def os_release(path: Path | None = None) -> dict[str, str]:
    """KEY=value pairs of /etc/os-release, quotes removed as lmp-device-register removes them."""
    try:
        text = (path or OS_RELEASE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip().replace('"', "") for key, value in pairs}


def default_hardware_id(release: dict[str, str]) -> str:
    """LmP's machine name (LMP_MACHINE), else the CPU architecture (lmp-device-register's is
    fixed when it is built)."""
    return release.get("LMP_MACHINE") or platform.machine() or "unknown"


# --- 1. Before anything is sent -------------------------------------------------------------------


def prepare(options: RegisterOptions) -> Prepared:
    """Every check that needs no server; raises before anything is sent or written."""
    _check_values(options)
    device_uuid = canonical_uuid(options.uuid)
    sota_dir = Path(os.path.abspath(options.sota_dir))
    present = _check_sota_dir(sota_dir, force=options.force)
    _check_aklite_not_running(options.aklite_lock)
    known = registration_answer.known_root(sota_dir, options.pki_dir, options.factory, force=options.force)
    root_file = sota_dir / facts.DEVICE_ROOT
    return Prepared(uuid=device_uuid, name=options.name or device_uuid, sota_dir=sota_dir, known_root=known,
                    present=present, old_root=root_file.read_bytes() if root_file.is_file() else None)  # fmt: skip


def _check_values(options: RegisterOptions) -> None:
    if not options.factory or options.factory == facts.RESERVED_FACTORY:
        raise UsageError(
            "no factory: give -f/--factory, DEVICE_FACTORY, or LMP_FACTORY in /etc/os-release"
            + (f" ('{facts.RESERVED_FACTORY}' is LmP's placeholder, not a factory)" if options.factory else "")
        )
    if not options.tags:
        raise UsageError("no tags: give -t/--tags (or LMP_FACTORY_TAG in /etc/os-release); aktualizr-lite needs them")
    for flag, value in (("--tags", options.tags), ("--apps", options.apps), ("--restorable-apps", options.restorable_apps)):
        if value is not None and _TOML_UNSAFE.search(value):
            raise UsageError(f"{flag} must not hold quotes, backslashes or control characters (it becomes a TOML string)")
    for flag, value in (("--name", options.name), ("--device-group", options.group), ("--hwid", options.hardware_id)):
        if value is not None and not value.isprintable():
            raise UsageError(f"{flag} must be printable text")


def canonical_uuid(value: str | None) -> str:
    """`value` when it is a UUID spelled the one way the service keeps (lower-case, hyphenated);
    a random one when None."""
    if value is None:
        return str(uuid_module.uuid4())
    try:
        canonical = str(uuid_module.UUID(value))
    except ValueError:
        raise UsageError(f"--uuid {value!r} is not a UUID") from None
    if canonical != value:
        raise UsageError(f"--uuid {value!r} must be spelled {canonical} (lower-case, hyphenated), as the service keeps it")
    return canonical


def _check_sota_dir(folder: Path, *, force: bool) -> tuple[str, ...]:
    """The folder exists and takes a file; it is not registered (unless force). Returns the
    registration files it holds."""
    if not folder.is_dir():
        raise PkiDirError(f"sota dir {folder} does not exist (or is not a directory)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fioca-probe-", dir=folder)  # a real write, as root too
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PkiDirError(f"cannot write into sota dir {folder}: {exc.strerror}") from None
    registered = [name for name in REGISTERED if (folder / name).exists()]
    leftovers = [name for name in LEFTOVERS if (folder / name).exists()]
    if registered and not force:
        raise RefusedError(
            f"sota dir {folder} is already registered ({', '.join(registered)} present); pass --force to "
            "register it again as a new device (the old registration stays until the new one is written)"
        )
    if leftovers and not force:
        raise RefusedError(
            f"sota dir {folder} holds {', '.join(leftovers)} from an earlier registration; "
            "pass --force to replace them, or remove them"
        )
    return tuple(registered + leftovers)


def _check_aklite_not_running(lock: Path) -> None:
    """aktualizr-lite holds its lock (a POSIX record lock) while it runs; a shared lock we can
    take means it does not."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RefusedError(f"cannot tell whether aktualizr-lite runs: {lock}: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise RefusedError(f"aktualizr-lite is running (it holds {lock}); stop it first") from None
    finally:
        os.close(fd)


# --- The body ------------------------------------------------------------------------------------


def registration_body(options: RegisterOptions, prepared: Prepared, csr_pem: str) -> dict[str, Any]:
    """lmp-device-register's body, its keys in its order; every leaf a string, `overrides`
    section -> key -> a TOML value already quoted."""
    body: dict[str, Any] = {
        "use-ostree-server": "true" if options.use_ostree_server else "false",
        "sota-config-dir": str(prepared.sota_dir),
        "hardware-id": options.hardware_id,
        "name": prepared.name,
        "uuid": prepared.uuid,
        "csr": csr_pem,
    }
    if options.compose_apps:
        body["overrides"] = {"pacman": compose_apps_overrides(options, prepared.sota_dir)}
    if options.group:
        body["group"] = options.group
    body.setdefault("overrides", {}).setdefault("pacman", {})["tags"] = f'"{options.tags}"'
    return body


def compose_apps_overrides(options: RegisterOptions, sota_dir: Path) -> dict[str, str]:
    """The [pacman] overrides lmp-device-register sends when it is built for compose apps."""
    reset_root = f"{sota_dir}/reset-apps"
    pacman = {"type": '"ostree+compose_apps"', "compose_apps_root": f'"{sota_dir}/compose-apps"'}
    if options.apps:
        pacman["compose_apps"] = f'"{options.apps}"'
    pacman["reset_apps_root"] = f'"{reset_root}"'
    restorable = RESTORABLE_APPS_DEFAULT if options.restorable_apps is None else options.restorable_apps
    if restorable:
        pacman["reset_apps"] = f'"{restorable}"'
    elif Path(reset_root).exists():  # an image preloaded with restorable apps: their use is turned on
        pacman["reset_apps"] = '""'
    return pacman


# --- 3. Credentials --------------------------------------------------------------------------------


def authenticate(api: DeviceRegistrationApi, options: RegisterOptions, device_uuid: str, *,
                 show: Callable[[list[str]], None], wait: Callable[[float], None]) -> str:
    """The token in its header, else an access token from the OAuth device flow. Returns how."""
    token = options.api_token or api.settings.token
    if token:
        source = options.token_source if options.api_token else api.settings.auth_source
        api.use_token(options.token_header, token, source)
        return f"the token from {source} in {options.token_header}"
    api.use_access_token(device_flow(api, device_uuid, show=show, wait=wait))
    return "an OAuth access token (device flow)"


def device_flow(api: DeviceRegistrationApi, device_uuid: str, *, show: Callable[[list[str]], None],
                wait: Callable[[float], None], clock: Callable[[], float] = time.monotonic) -> str:
    """RFC 8628 as lmp-device-register speaks it: ask for a user code (client_id = the uuid,
    scope `<factory>:devices:create`), show it, poll the token endpoint until someone approves
    it. The wait between polls is the server's interval (slow_down adds 5 s); an unexpected
    answer is retried after 2 s, as lmp-device-register does, until the code expires."""
    scope = f"{api.factory}:devices:create"
    grant = api.authorize_device(device_uuid, scope)
    interval = _seconds(grant.get("interval"), DEFAULT_POLL_SECONDS)
    lifetime = _seconds(grant.get("expires_in"), DEFAULT_CODE_SECONDS)
    deadline = clock() + lifetime
    show([
        f"To authorize device {device_uuid} for factory {api.factory}, open {grant['verification_uri']}",
        f"and enter the user code {grant['user_code']} (it expires in {max(1, round(lifetime / 60))} minutes).",
        "Waiting for the approval ...",
    ])  # fmt: skip
    form = {"grant_type": DEVICE_GRANT, "device_code": grant["device_code"], "client_id": device_uuid, "scope": scope}
    while True:
        try:
            answer = api.device_token(form)
        except ApiError as error:
            if error.status is not None and error.status < 500 and error.status != 429:
                raise
            pause = RETRY_SECONDS  # a server error or no answer: try again, as lmp-device-register does
        else:
            if answer.status == 200:
                return str(answer.body["access_token"])
            code = answer.body.get("error")
            if code not in ("authorization_pending", "slow_down"):
                why = answer.body.get("error_description") or ""
                raise ApiError(f"the device was not authorized: {code}" + (f" ({why})" if why else ""), status=400)
            interval += 5 if code == "slow_down" else 0
            pause = interval
        if clock() + pause > deadline:
            raise ApiError(f"nobody approved user code {grant['user_code']} in time; run the registration again")
        wait(pause)


def _seconds(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


# --- The whole flow ----------------------------------------------------------------------------------


def plan(api: DeviceRegistrationApi, options: RegisterOptions) -> dict[str, Any]:
    """The dry run: every local check, and the body as it would be sent (its CSR from a key that
    is thrown away); no request at all."""
    prepared = prepare(options)
    token = bool(options.api_token or api.settings.token)
    csr = profiles.build_device_csr(profiles.new_key(), uuid=prepared.uuid, factory=options.factory,
                                    production=options.production)  # fmt: skip
    return {
        "endpoint": api.devices_url,
        "credentials": f"token in {options.token_header}" if token else f"OAuth device flow at {api.oauth_url}",
        "body": registration_body(options, prepared, profiles.csr_pem(csr).decode()),
        "known_root": prepared.known_root.source if prepared.known_root else None,
        "replaces": list(prepared.present),
    }


def register(api: DeviceRegistrationApi, options: RegisterOptions, *,
             show: Callable[[list[str]], None] = lambda lines: None,
             wait: Callable[[float], None] = time.sleep) -> Registered:
    """Check, probe, authenticate, POST, check the answer, write the files (see the module doc)."""
    prepared = prepare(options)
    api.probe()
    authenticate(api, options, prepared.uuid, show=show, wait=wait)
    key = profiles.new_key()
    csr = profiles.build_device_csr(key, uuid=prepared.uuid, factory=options.factory, production=options.production)
    body = registration_body(options, prepared, profiles.csr_pem(csr).decode())
    created = False
    try:
        answer = api.create(body).body
        created = True
        checked = registration_answer.check_answer(answer, key=key, uuid=prepared.uuid, factory=options.factory,
                                                   production=options.production, known=prepared.known_root)  # fmt: skip
        written = _write(prepared, key, checked, force=options.force)
    except ApiError as error:
        if not created and error.status is not None and 400 <= error.status < 500:
            raise  # the server refused the registration: there is nothing to take back
        raise _taken_back(error, api, prepared, key, created=created) from None
    except FiocaError as failure:
        reported = Interrupted("Interrupted during the registration.") if interrupts.received() else failure
        raise _taken_back(reported, api, prepared, key, created=created) from None
    except KeyboardInterrupt:
        raise _taken_back(Interrupted("Interrupted during the registration."), api, prepared, key,
                          created=created) from None  # fmt: skip
    except Exception as error:  # a fault of fioca's own: still no orphan
        unexpected = FiocaError(f"unexpected failure during the registration ({error.__class__.__name__}; "
                                "FIOCA_TRACEBACK=1 shows where)")  # fmt: skip
        raise _taken_back(unexpected, api, prepared, key, created=created) from error
    notes = list(checked.notes)
    if prepared.old_root is not None and prepared.old_root != checked.files[facts.DEVICE_ROOT]:
        notes.append(f"replaced the root.crt that was in {prepared.sota_dir}: it was not factory {options.factory!r}'s root")
    removed = _remove_old(prepared, written) if options.force else []
    return Registered(
        uuid=prepared.uuid, name=prepared.name, sota_dir=prepared.sota_dir, written=written,
        certificate=profiles.describe(checked.client), shared=checked.shared, removed=removed, notes=notes,
    )  # fmt: skip


def _write(prepared: Prepared, key: Any, checked: registration_answer.CheckedAnswer, *, force: bool) -> list[str]:
    """pkey.pem first, the answer's files in its order, sota.toml last (with the newline
    lmp-device-register adds); one step (files.write_all). root.crt may be replaced: it is the
    known root again, or a root that was not the factory's."""
    items = [(facts.DEVICE_KEY, profiles.private_key_pem(key), facts.FILE_MODE)]
    for name, data in checked.files.items():
        if name != facts.SOTA_TOML:
            items.append((name, data, PUBLIC_FILE_MODE))
    items.append((facts.SOTA_TOML, checked.files[facts.SOTA_TOML] + b"\n", PUBLIC_FILE_MODE))
    replace = {name for name, _data, _mode in items} if force else {facts.DEVICE_ROOT}
    files.write_all(prepared.sota_dir, items, replace=replace)
    return [name for name, _data, _mode in items]


def _remove_old(prepared: Prepared, written: list[str]) -> list[str]:
    """With force, once the new registration is on disk: the old database and any registration
    file the new answer did not bring."""
    removed = []
    for name in (facts.DEVICE_SQL, *LEFTOVERS):
        path = prepared.sota_dir / name
        if name in written or not path.exists():
            continue
        try:
            path.unlink()
        except OSError as exc:
            raise PkiDirError(
                f"registered device {prepared.uuid}, but cannot remove the old {path}: {exc.strerror}; "
                "remove it before aktualizr-lite starts"
            ) from None
        removed.append(name)
    return removed


# --- Taking a registration back ------------------------------------------------------------------------


def _taken_back(error: FiocaError, api: DeviceRegistrationApi, prepared: Prepared, key: Any, *, created: bool) -> FiocaError:
    """`error`, with lines saying what the registration left on the server after fioca took it
    back (or why it could not, and how to remove it)."""
    error.details.extend(_undo(api, prepared, key, created=created))
    return error


def _undo(api: DeviceRegistrationApi, prepared: Prepared, key: Any, *, created: bool) -> list[str]:
    uuid, name = prepared.uuid, prepared.name
    if not api.can_delete:
        return [
            f"  nothing was written; the registration server {api.devices_url} may have signed a certificate "
            f"for device {uuid} ('{name}'), and if it also creates devices in the factory (factory-registration-ref "
            f"does when it holds an API token), remove it there: `fioctl devices delete {name}`"
        ]
    try:
        if not created:  # the answer was lost or not a 201: did the server register it, for our key?
            device = api.get_device(uuid)
            if device is None:
                return [f"  nothing was written, and the server holds no device {uuid}"]
            if not _holds_key(device, key):
                return [f"  nothing was written; a device {uuid} exists, but for another key: not this run's, left alone"]
        api.delete_device(uuid)
    except (ApiError, KeyboardInterrupt) as failure:
        why = failure.message if isinstance(failure, ApiError) else "interrupted"
        return [
            f"  nothing was written, but device {uuid} ('{name}') may stay registered in factory {api.factory}: "
            f"fioca could not delete it ({why})",
            f"  remove it with `fioctl devices delete {name}` (then `fioctl devices delete-denied {uuid}` "
            "frees its uuid)",
        ]
    return [f"  nothing was written; the server had registered device {uuid}, and fioca deleted it again"]


def _holds_key(device: dict[str, Any], key: Any) -> bool:
    """The API's device record (fioctl's `public-key`) is for this key."""
    from cryptography.hazmat.primitives import serialization

    try:
        public = serialization.load_pem_public_key(str(device.get("public-key")).encode())
    except ValueError:
        return False
    return same_key(public, key)
