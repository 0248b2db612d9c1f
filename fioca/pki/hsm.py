"""The factory root key on a PKCS#11 token (an HSM): settings, token checks, signing.

fioctl's HSM mode (PKI-SPEC section 5) keeps the root key on a token as an EC P-256 key pair
labelled `root-ca`, id 01; no `factory_ca.key` file ever exists. Two roads reach the key:

- the scripts' HSM branch: `pkcs11-tool` makes the key pair and `openssl` signs through the
  pkcs11 engine. They get HSM_MODULE, HSM_TOKEN_LABEL and HSM_PIN in their environment only
  (`HsmSettings.script_env()`) and name the PIN as `env:HSM_PIN`, so it never reaches a
  command line;
- in process, through `python-pkcs11`: `TokenKey` is a `cryptography` EC private key whose
  `.sign()` hashes in Python and lets the token sign the digest (CKM_ECDSA). `cryptography`'s
  certificate and CRL builders call `.sign()` of any `EllipticCurvePrivateKey` subclass, so the
  profiles in `fioca.pki.profiles` sign on the token unchanged.

Every token operation opens the module, logs in, works and finalizes the module again: a
token is used for a moment per signature, and the module re-reads its configuration (e.g.
SOFTHSM2_CONF) on the next use. No message raised here carries the PIN.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import re
import stat
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    encode_dss_signature,
)

from fioca.errors import CheckError, ConfigError, RefusedError, ScriptError
from fioca.pki.profiles.details import same_key

ROOT_KEY_LABEL = "root-ca"
ROOT_KEY_ID = b"\x01"
# (kind, label, id) of the key pair's halves, as the token watch sees them.
ROOT_KEY_KINDS = (("private key", ROOT_KEY_LABEL, ROOT_KEY_ID), ("public key", ROOT_KEY_LABEL, ROOT_KEY_ID))
# DER of the OID prime256v1 (1.2.840.10045.3.1.7), as CKA_EC_PARAMS holds it.
P256_EC_PARAMS = bytes.fromhex("06082a8648ce3d030107")

# Configuration variables PKCS#11 modules read from the environment. The scripts run with a
# minimal environment, so these are passed on (when set) in HSM mode, and only then.
MODULE_CONFIG_VARS = (
    "SOFTHSM2_CONF",  # SoftHSM2
    "YUBIHSM_PKCS11_CONF",  # YubiHSM 2
    "ChrystokiConfigurationPath",  # Thales Luna
    "NFAST_HOME",  # Entrust nShield
    "CS_PKCS11_R3_CFG",  # Utimaco
)
# More names, comma-separated, for modules not listed above.
EXTRA_VARS_ENV = "FIOCA_HSM_PASS_ENV"
# A token label goes into a pkcs11: URI unescaped by the scripts; these would change its meaning.
_URI_UNSAFE = set(";?%#/\"'\\`$")


@dataclass(frozen=True)
class HsmSettings:
    """Where the root key lives: the PKCS#11 module, the token's label, and the user PIN."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    # The module's own configuration variables (SOFTHSM2_CONF ...), taken from the settings'
    # environment when these were made (`passed_module_vars`): the scripts get these and no other.
    module_env: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"HsmSettings(module={self.module!r}, token_label={self.token_label!r}, pin=<hidden>)"

    __str__ = __repr__

    def check(self) -> None:
        """The module is a file and the label fits in a pkcs11: URI (before any token use)."""
        if not self.token_label:
            raise ConfigError("--hsm-token-label is required with --hsm-module")
        bad = sorted(set(self.token_label) & _URI_UNSAFE) or [c for c in self.token_label if not c.isprintable()]
        if bad:
            raise ConfigError(
                f"HSM token label {self.token_label!r} has characters a pkcs11: URI cannot carry as is "
                f"({' '.join(repr(c) for c in bad)}); relabel the token"
            )
        if not Path(self.module).is_file():
            raise ConfigError(f"HSM module {self.module} does not exist or is not a file (--hsm-module)")

    @property
    def key_uri(self) -> str:
        """The root key as the scripts name it to openssl's pkcs11 engine (no PIN in it)."""
        return f"pkcs11:token={self.token_label};object={ROOT_KEY_LABEL};type=private"

    def script_env(self) -> dict[str, str]:
        """The environment the scripts' HSM branch needs: the HSM_* variables and the module's config."""
        return {"HSM_MODULE": self.module, "HSM_TOKEN_LABEL": self.token_label, "HSM_PIN": self.pin, **dict(self.module_env)}

    @classmethod
    def of_script_env(cls, env: Mapping[str, str]) -> HsmSettings:
        """The settings `script_env()` was made from (what the script runner is handed)."""
        own = ("HSM_MODULE", "HSM_TOKEN_LABEL", "HSM_PIN")
        return cls(env["HSM_MODULE"], env.get("HSM_TOKEN_LABEL", ""), env.get("HSM_PIN", ""),
                   tuple((name, value) for name, value in env.items() if name not in own))

    def describe(self) -> dict[str, Any]:
        """For the dry-run: the script environment by name, the PIN's value hidden."""
        return {
            "module": self.module,
            "token_label": self.token_label,
            "key": f"{ROOT_KEY_LABEL} (id 01) on the token; no factory_ca.key file",
            "script_env": {
                "HSM_MODULE": self.module,
                "HSM_TOKEN_LABEL": self.token_label,
                "HSM_PIN": "<hidden>",
                **dict(self.module_env),
            },
        }


def module_env(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The module configuration variables of `environ` that the scripts are given."""
    return tuple((name, environ[name]) for name in passed_module_vars(environ))


def passed_module_vars(environ: Mapping[str, str]) -> list[str]:
    extra = [name.strip() for name in environ.get(EXTRA_VARS_ENV, "").split(",") if name.strip()]
    names = [name for name in (*MODULE_CONFIG_VARS, *extra) if name in environ]
    # Never a way to hand the scripts the API token or something that loads code.
    return [name for name in dict.fromkeys(names) if not _forbidden_pass_through(name)]


def _forbidden_pass_through(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(("FIOCTL_", "LD_", "OPENSSL_", "HSM_", "PKCS11_")) or upper in (
        "TOKEN_HEADER", "PATH", "HOME", "FIOCA_HSM_PIN",
    )


# --- The token ---------------------------------------------------------------------------------


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - a dependency of fioca; the message says what to do
        raise ConfigError("HSM support needs the python-pkcs11 package: pip install python-pkcs11") from None
    return pkcs11


class PinRefused(ConfigError):
    """The token refused the PIN (wrong, or locked after too many wrong ones)."""


@contextmanager
def session(settings: HsmSettings, *, rw: bool = False, login: bool = True) -> Iterator[Any]:
    """A logged-in session on the token (a public one with `login=False`), the module
    configured as the scripts have it (`module_env`); every PKCS#11 failure becomes one clear line."""
    with _environment(dict(settings.module_env)), _logged_in(settings, rw=rw, login=login) as sess:
        yield sess


@contextmanager
def _logged_in(settings: HsmSettings, *, rw: bool, login: bool = True) -> Iterator[Any]:
    settings.check()
    pkcs11 = _pkcs11()
    errors = pkcs11.exceptions
    where = f"HSM token '{settings.token_label}'"
    try:
        lib = pkcs11.lib(settings.module)
    except errors.PKCS11Error as exc:
        _clear_openssl_errors()
        raise ConfigError(f"cannot load the HSM module {settings.module}: {type(exc).__name__} {exc}".rstrip()) from None
    try:
        try:
            token = lib.get_token(token_label=settings.token_label)
        except errors.NoSuchToken:
            labels = ", ".join(repr(label) for label in token_labels(lib)) or "none"
            raise ConfigError(
                f"no {where} in module {settings.module} (tokens there: {labels}); check --hsm-token-label"
            ) from None
        except errors.MultipleTokensReturned:
            raise ConfigError(f"more than one token is labelled '{settings.token_label}'; relabel one") from None
        try:
            opened = token.open(rw=rw, user_pin=settings.pin) if login else token.open(rw=rw)
        except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange):
            raise PinRefused(f"{where} refused the PIN (wrong PIN); nothing was changed") from None
        except errors.PinLocked:
            raise PinRefused(f"{where} is locked after too many wrong PINs; unlock it with its SO PIN") from None
        except errors.PinExpired:
            raise ConfigError(f"the PIN of {where} has expired; set a new one with your HSM's tools") from None
        except errors.UserPinNotInitialized:
            raise ConfigError(f"{where} has no user PIN yet; initialize it first") from None
        except errors.PKCS11Error as exc:
            raise ConfigError(f"cannot log in to {where}: {type(exc).__name__}") from None
        with opened as sess:
            try:
                yield sess
            except errors.PKCS11Error as exc:
                raise ConfigError(f"{where} failed: {type(exc).__name__}; nothing was changed") from None
    finally:
        # Let go of the module: the next use starts afresh (and reads its config again).
        try:
            lib.finalize()
        except errors.PKCS11Error:
            pass
        _clear_openssl_errors()


def _clear_openssl_errors() -> None:
    """Empty this thread's OpenSSL error queue after the module ran.

    Modules built on the system's libcrypto (SoftHSM2 is) leave errors there, e.g. from
    engines they probe at C_Initialize; Python's `ssl` shares that libcrypto and would report
    the stale error as the cause of the next TLS handshake ("no such engine").
    """
    libcrypto = _libcrypto()
    if libcrypto is not None:
        libcrypto.ERR_clear_error()


@functools.cache
def _libcrypto() -> Any:
    name = ctypes.util.find_library("crypto")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def token_labels(lib: Any) -> list[str]:
    labels = []
    for slot in lib.get_slots(token_present=True):
        label = slot.get_token().label
        if label:
            labels.append(label)
    return labels


def token_serial(module: str, label: str, module_env: Mapping[str, str]) -> str:
    """The serial number of the token labelled `label`, read without logging in, with the
    module configured by `module_env` as the scripts will have it (SoftHSM2 keeps each token in
    a folder named after it, and the jail binds only that folder)."""
    pkcs11 = _pkcs11()
    errors = pkcs11.exceptions
    with _environment(module_env):
        return _token_serial(pkcs11, errors, module, label)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in this process's environment for a moment: a module reads its config there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _token_serial(pkcs11: Any, errors: Any, module: str, label: str) -> str:
    try:
        lib = pkcs11.lib(module)
    except errors.PKCS11Error as exc:
        _clear_openssl_errors()
        raise ConfigError(f"cannot load the HSM module {module}: {type(exc).__name__}") from None
    try:
        serial = lib.get_token(token_label=label).serial
    except errors.NoSuchToken:
        raise ConfigError(f"no HSM token '{label}' in module {module}; check --hsm-token-label") from None
    except errors.MultipleTokensReturned:
        raise ConfigError(f"more than one token is labelled '{label}'; relabel one") from None
    finally:
        try:
            lib.finalize()
        except errors.PKCS11Error:
            pass
        _clear_openssl_errors()
    return serial.decode("ascii", "replace").strip() if isinstance(serial, bytes) else str(serial).strip()


def _objects(sess: Any, object_class: Any) -> list[Any]:
    pkcs11 = _pkcs11()
    attrs = {pkcs11.Attribute.LABEL: ROOT_KEY_LABEL, pkcs11.Attribute.CLASS: object_class}
    return list(sess.get_objects(attrs))


def root_key_objects(settings: HsmSettings) -> list[str]:
    """The kinds of `root-ca` objects the token holds ("private key", "public key", ...)."""
    pkcs11 = _pkcs11()
    found = []
    with session(settings) as sess:
        for name, object_class in (
            ("private key", pkcs11.ObjectClass.PRIVATE_KEY),
            ("public key", pkcs11.ObjectClass.PUBLIC_KEY),
            ("certificate", pkcs11.ObjectClass.CERTIFICATE),
        ):
            found += [name] * len(_objects(sess, object_class))
    return found


def check_ready_for_new_root(settings: HsmSettings) -> None:
    """Log in, and refuse a token that already holds a `root-ca`: `create` never reuses or replaces one."""
    existing = root_key_objects(settings)
    if existing:
        raise RefusedError(
            f"HSM token '{settings.token_label}' already holds a {ROOT_KEY_LABEL} object ({', '.join(existing)}); "
            "fioca makes a new root key and never reuses or replaces one. If it is left from a failed run that "
            "uploaded nothing, delete it with your HSM's tools (pkcs11-tool --delete-object --label root-ca), "
            "or use another token; nothing was written"
        )


def root_public_key(settings: HsmSettings) -> ec.EllipticCurvePublicKey:
    """The public half of the token's `root-ca` key pair (logs in; checks there is exactly one)."""
    pkcs11 = _pkcs11()
    where = f"HSM token '{settings.token_label}'"
    with session(settings) as sess:
        private = _objects(sess, pkcs11.ObjectClass.PRIVATE_KEY)
        public = _objects(sess, pkcs11.ObjectClass.PUBLIC_KEY)
        if not private:
            raise ConfigError(f"{where} holds no private key labelled {ROOT_KEY_LABEL}; is it the token the root was made on?")
        if len(private) > 1 or len(public) > 1:
            raise ConfigError(f"{where} holds more than one {ROOT_KEY_LABEL} key; fioca cannot tell which is the root")
        if not public:
            raise ConfigError(f"{where} holds no public key labelled {ROOT_KEY_LABEL} to check against factory_ca.pem")
        params = public[0][pkcs11.Attribute.EC_PARAMS]
        point = public[0][pkcs11.Attribute.EC_POINT]
    if bytes(params) != P256_EC_PARAMS:
        raise ConfigError(f"{where}'s {ROOT_KEY_LABEL} is not an EC P-256 key")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unwrap_point(bytes(point)))


def _unwrap_point(data: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point; some modules give the bare point."""
    if len(data) == 67 and data[:2] == b"\x04\x41":
        return data[2:]
    return data


def sign_digest(settings: HsmSettings, digest: bytes) -> bytes:
    """ECDSA over a SHA-256 digest with the token's `root-ca`; DER-encoded as X.509 wants it."""
    pkcs11 = _pkcs11()
    with session(settings) as sess:
        keys = _objects(sess, pkcs11.ObjectClass.PRIVATE_KEY)
        if len(keys) != 1:
            raise ConfigError(
                f"HSM token '{settings.token_label}' holds {len(keys)} private keys labelled {ROOT_KEY_LABEL}, not one"
            )
        raw = keys[0].sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


class TokenKey(ec.EllipticCurvePrivateKey):
    """The token's root key as a `cryptography` key: it signs, it never leaves the token."""

    def __init__(self, settings: HsmSettings, public_key: ec.EllipticCurvePublicKey):
        self._settings = settings
        self._public_key = public_key

    def __repr__(self) -> str:
        return f"TokenKey(token_label={self._settings.token_label!r}, object={ROOT_KEY_LABEL!r})"

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if isinstance(algorithm, Prehashed):
            digest = data
        elif isinstance(algorithm, hashes.SHA256):
            digest = hashlib.sha256(data).digest()
        else:
            raise ValueError("the factory root signs with ECDSA-SHA256 only")
        return sign_digest(self._settings, digest)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError("the factory root key only signs")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError("the root key never leaves the HSM token")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise NotImplementedError("the root key never leaves the HSM token")

    def __copy__(self) -> TokenKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenKey:
        return self


def check_cert_matches_token(settings: HsmSettings, cert: Any, artifact: str) -> None:
    """The certificate's public key must be the token's `root-ca` public key."""
    if not same_key(cert, root_public_key(settings)):
        raise CheckError(artifact, f"its public key is not the {ROOT_KEY_LABEL} key on HSM token '{settings.token_label}'")


# --- What a script left on the token -------------------------------------------------------------

# The files SoftHSM2 keeps in a token's folder: its lock files stay empty, `generation` is 8 bytes (a count).
_SOFTHSM2_FILE = re.compile(r"generation|token\.object|token\.lock|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\.(?:object|lock)")
# With SoftHSM2's db back end, its database (and what sqlite keeps beside it while it writes).
_SOFTHSM2_DB_FILE = re.compile(r"sqlite3\.db(?:-journal|-wal|-shm)?")
_SOFTHSM2_OBJECT = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\.object")


class TokenWatch:
    """What an HSM-mode script left on its token. It holds the PIN and the token's folder
    read-write, so what it stores there outlives the run (the PIN in a file beside the key).
    After each script the token holds no object it did not hold before but the halves of one
    `root-ca` key pair (id 01), and, with SoftHSM2, the token's folder holds only the files
    SoftHSM2 makes, one object file per object and one new file per new object. Anything else
    is removed where it can be told apart, and the run refused; a changed PIN too.

    What no check here can see: bytes hidden inside SoftHSM2's own files, or in attributes of
    the root-ca objects fioca does not read (the README's security notes)."""

    def __init__(self, settings: HsmSettings, folder: str | None, *, backend: str = "file"):
        self.settings = settings
        self.folder = folder  # the token's own folder in a SoftHSM2 store, else None
        # SoftHSM2's file back end keeps a file per object; its db back end, one sqlite3.db.
        self.object_folder = folder if backend == "file" else None
        self.own = _SOFTHSM2_FILE if backend == "file" else _SOFTHSM2_DB_FILE
        self.before = token_objects(settings)
        self.files = set(_object_files(folder)) if self.object_folder else set()  # its object files, by name
        self.mode = stat.S_IMODE(os.stat(folder).st_mode) if folder else 0  # the script may chmod it
        self.generation = (_generation(folder) or 0) if self.object_folder else 0

    def check(self, script: str) -> None:
        """Raise ScriptError (after removing what was left) when `script` left anything else."""
        if self.folder:
            _set_mode(self.folder, self.mode)
        left = _stray_files(self.folder, self.own) if self.folder else []
        count = _generation(self.folder) if self.object_folder else None
        if count is not None and not self.generation <= count < self.generation + _GENERATION_STEP:
            # SoftHSM2 counts a token's changes there, a few a script: 8 bytes of its own (the
            # PIN's, say) otherwise. Removed, SoftHSM2 makes it again.
            _remove_object_files(self.folder, ["generation"])
            left.append("generation")
        flood = sorted(set(_object_files(self.folder)) - self.files) if self.object_folder else []
        if len(flood) > _MAX_NEW_OBJECTS:
            # Each copy of an object file is an object SoftHSM2 loads, and each destroy rescans
            # the folder: thousands took the watch minutes (100,000: hours). They go as files.
            _remove_object_files(self.folder, flood)
            left.append(f"{len(flood)} object files")
        try:
            now = token_objects(self.settings)
        except PinRefused:
            raise self._pin_changed(script, left) from None
        except ConfigError as error:  # it was there before the script: "check --hsm-token-label" is not the cause
            raise ScriptError(
                f"script {script} left the HSM token unusable ({error.message}); nothing it made was used: look at the "
                "token before you use it again"
            ) from None
        # The key pair the scripts make: labelled root-ca, id 01 (an id is the script's to choose:
        # the PIN fits), one of each (a second one is no root: its public point may be the PIN's).
        foreign = {kind for kind in now - self.before if kind not in ROOT_KEY_KINDS or now[kind] > 1}
        left += [f"{name} {_named(label, quoted=True)}" for name, label, _id in foreign]
        # PKCS#11 tells a kind the token did not hold before; of two alike, not which one is new.
        try:
            _destroy(self.settings, {kind for kind in foreign if not self.before[kind]})
            kept = any(self.before[kind] for kind in foreign)
        except ConfigError:  # refused (CKA_DESTROYABLE false): in a SoftHSM2 folder, its file goes
            kept = True
        if self.object_folder:
            left += self._object_files_made(script, remove=kept)
        elif kept:
            raise ScriptError(
                f"script {script} left on the HSM token what fioca never makes there ({_some(left)}); "
                "what could be told apart from the token's own objects was removed, nothing the script made was "
                "used: look at the token before you use it again"
            )
        if left:
            raise ScriptError(
                f"script {script} left on the HSM token what fioca never makes there ({_some(left)}); "
                "it was removed and nothing the script made was used"
            )

    def _object_files_made(self, script: str, *, remove: bool) -> list[str]:
        """The SoftHSM2 folder holds one object file per object, one new file per new object.
        Else (a file named as SoftHSM2 names an object, the PIN in it, that the token does not
        show; an object put in place of one the script deleted, the root's public key), or with
        `remove`, which file is which cannot be told: every object file the script made goes,
        and their names are returned."""
        files = _object_files(self.object_folder)
        now = token_objects(self.settings)
        made = sorted(set(files) - self.files)
        if not remove and len(made) == sum((now - self.before).values()) and len(files) == sum(now.values()):
            _renamed(self.object_folder, made)  # their names (UUIDs) were the script's to choose: the PIN's, say
            return []
        _remove_object_files(self.object_folder, made)
        if len(_object_files(self.object_folder)) != sum(token_objects(self.settings).values()):
            raise ScriptError(
                f"script {script} left object files in the HSM token's folder {self.folder} that the token does "
                "not show; nothing it made was used: look at the folder before you use the token again"
            )
        return made

    def _pin_changed(self, script: str, left: list[str]) -> ScriptError:
        """The script changed the PIN (or locked the token): fioca no longer logs in. What it
        left in the objects anyone reads without the PIN (the new PIN, say) is removed."""
        foreign: set[tuple[str, str, bytes]] = set()
        with contextlib.suppress(ConfigError):  # the message below is the one to give, whatever else fails
            found = {kind for kind in token_objects(self.settings, login=False) - self.before if not self.before[kind]}
            _destroy(self.settings, found, login=False)
            foreign = found
        removed = [*left, *(f"{name} {_named(label, quoted=True)}" for name, label, _id in foreign)]
        what = f" (removed what it left: {_some(removed)})" if removed else ""
        return ScriptError(
            f"script {script} changed the PIN of HSM token '{self.settings.token_label}' or locked it: fioca's "
            f"PIN no longer logs in{what}; nothing the script made was used: set a new user PIN with the SO PIN "
            "before you use the token again"
        )


def token_objects(settings: HsmSettings, *, login: bool = True) -> Counter[tuple[str, str, bytes]]:
    """Every object the token shows once logged in (only its public ones without `login`), as (kind, label, id)."""
    with session(settings, login=login) as sess:
        return Counter(_kind_of(found) for found in sess.get_objects())


def _destroy(settings: HsmSettings, kinds: set[tuple[str, str, bytes]], *, login: bool = True) -> None:
    if not kinds:
        return
    with session(settings, rw=True, login=login) as sess:
        for found in list(sess.get_objects()):
            if _kind_of(found) in kinds:
                found.destroy()


def _kind_of(found: Any) -> tuple[str, str, bytes]:
    """(kind, label, id): "data", "private key", ... as PKCS#11 names the class."""
    attribute = _pkcs11().Attribute
    kind = _attribute(found, attribute.CLASS, None)
    name = kind.name.lower().replace("_", " ") if kind is not None else "object"
    return name, _attribute(found, attribute.LABEL, ""), bytes(_attribute(found, attribute.ID, b""))


# What a label that is not UTF-8 reads as (python-pkcs11 decodes labels): never root-ca.
_UNDECODABLE = "<not UTF-8>"


def _attribute(found: Any, name: Any, default: Any) -> Any:
    errors = _pkcs11().exceptions
    try:
        return found[name]
    except (errors.AttributeTypeInvalid, errors.AttributeSensitive):
        return default
    except UnicodeDecodeError:
        return _UNDECODABLE


def _stray_files(folder: str, own: re.Pattern[str] = _SOFTHSM2_FILE) -> list[str]:
    """Remove and name what SoftHSM2 does not keep in a token's folder: another name, not a
    regular file, a second link, a lock file with content or with no file it locks (SoftHSM2
    makes and removes the two together: the lock's name, a UUID, could spell the PIN), a
    `generation` that is not 8 bytes."""
    from fioca.pki.files import remove_tree

    strays = []
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        names = os.listdir(fd)
        locked = {name.removesuffix(".object") + ".lock" for name in names if name.endswith(".object")}
        for name in names:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            ours = own.fullmatch(name) and stat.S_ISREG(st.st_mode) and st.st_nlink == 1
            lock = name.endswith(".lock") and own is _SOFTHSM2_FILE
            if ours and not (lock and (st.st_size or name not in locked)) and not (name == "generation" and st.st_size != 8):
                continue
            strays.append(_named(name))
            remove_tree(fd, name)
    finally:
        os.close(fd)
    return strays


# How far a script may move SoftHSM2's change count (it makes a key pair: a few).
_GENERATION_STEP = 1 << 16
# New object files a script may leave before the watch asks the module (a key pair: two).
_MAX_NEW_OBJECTS = 16


def _generation(folder: str) -> int | None:
    """SoftHSM2's change count in a token's folder (None when it has none yet)."""
    try:
        fd = os.open(os.path.join(folder, "generation"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return int.from_bytes(os.read(fd, 8), "big")
    finally:
        os.close(fd)


def _some(names: list[str], shown: int = 8) -> str:
    """`names` for a one-line message: the first few, sorted, and how many more."""
    names = sorted(names)
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _named(text: str, *, quoted: bool = False) -> str:
    """A name or label the script chose, for a one-line message: repr() when it holds a newline
    or anything else not printable (a forged line after it), else as it is (in quotes)."""
    if not text.isprintable():
        return repr(text)
    return f"'{text}'" if quoted else text


def _set_mode(folder: str, mode: int) -> None:
    """The token's folder given back the mode it had (`chmod 0` kept the watch out)."""
    # O_PATH needs no permission on the folder; its /proc link is this very folder, not a path looked up again.
    handle = os.open(folder, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if stat.S_IMODE(os.fstat(handle).st_mode) != mode:
            os.chmod(f"/proc/self/fd/{handle}", mode)
    finally:
        os.close(handle)


def _object_files(folder: str) -> list[str]:
    return [name for name in os.listdir(folder) if _SOFTHSM2_OBJECT.fullmatch(name)]


def _renamed(folder: str, names: list[str]) -> None:
    """The object files `names` (and their lock files) under UUIDs fioca draws: SoftHSM2 finds
    a token's objects by listing its folder, whatever their names."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in names:
            stem, new = name.removesuffix(".object"), str(uuid.uuid4())
            for suffix in (".object", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(stem + suffix, new + suffix, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _remove_object_files(folder: str, names: list[str]) -> None:
    """Remove the files `names` of the token's folder, an object file with its lock file."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in names:
            for each in dict.fromkeys((name, name.removesuffix(".object") + ".lock") if name.endswith(".object") else (name,)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(each, dir_fd=fd)
    finally:
        os.close(fd)
