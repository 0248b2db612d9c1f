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

import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
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

from fioca.errors import CheckError, ConfigError, RefusedError
from fioca.pki.profiles.details import same_key
from fioca.pki.reference import SCRIPT_VALUE_VARS

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
        # What is left once the HSM's own and the server values are taken out: the module's configuration.
        not_module = ("HSM_MODULE", "HSM_TOKEN_LABEL", "HSM_PIN", *SCRIPT_VALUE_VARS)
        return cls(env["HSM_MODULE"], env.get("HSM_TOKEN_LABEL", ""), env.get("HSM_PIN", ""),
                   tuple((name, value) for name, value in env.items() if name not in not_module))

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


def pkcs11_api() -> Any:
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
    pkcs11 = pkcs11_api()
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
    import ctypes.util  # HSM mode only: a create on a key file never loads ctypes

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
    pkcs11 = pkcs11_api()
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
    pkcs11 = pkcs11_api()
    attrs = {pkcs11.Attribute.LABEL: ROOT_KEY_LABEL, pkcs11.Attribute.CLASS: object_class}
    return list(sess.get_objects(attrs))


def root_key_objects(settings: HsmSettings) -> list[str]:
    """The kinds of `root-ca` objects the token holds ("private key", "public key", ...)."""
    pkcs11 = pkcs11_api()
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
    pkcs11 = pkcs11_api()
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
    pkcs11 = pkcs11_api()
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
