"""Signing with the factory root: the one seam every `keys ca` command goes through.

A `RootSigner` is the root certificate plus a way to use its key, in two forms:

- in process: `signer.private_key()` is a `cryptography` EC private key the builders sign
  with: the file key (`FileRootSigner`), or `hsm.TokenKey`, whose `.sign()` signs on the
  PKCS#11 token (`HsmRootSigner`);
- by script: `signer.stage_for_scripts(work_dir)` puts what the reference scripts need into
  their private work dir (`factory_ca.pem` and, for a file key, `factory_ca.key`) and returns
  the extra environment they need (an HSM signer returns HSM_MODULE / HSM_TOKEN_LABEL /
  HSM_PIN there and stages no key: the scripts' HSM branch takes over).

The signing functions (`sign_csr`, `create_local_ca`, `sign_crl`) take a signer and a `via`
("script" runs the bundled `sign_tls_csr` / `sign_ca_csr` / `create_device_ca` with
`ScriptRunner`, as `create` does; "inprocess" uses the builders of `profiles`), and check
every result against its profile before returning it. `load_root_signer(pki_dir, hsm=...)`
picks the signer.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from fioca import facts
from fioca.errors import CheckError, RefusedError
from fioca.pki import files, hsm, profiles, reference
from fioca.pki.hsm import HsmSettings
from fioca.pki import jail as jails
from fioca.pki.scripts import ScriptRunner

Profile = Literal["tls", "ca"]
Via = Literal["script", "inprocess"]
PROFILES: tuple[str, ...] = ("tls", "ca")
VIAS: tuple[str, ...] = ("script", "inprocess")

# What each profile grants; a CSR asking for anything beyond it is refused, not trimmed.
_TLS_KEY_USAGE = {"digital_signature", "key_encipherment", "key_agreement"}
_CA_KEY_USAGE = {"key_cert_sign"}
# The names a server certificate may carry, as fioctl's `keys ca sign` copies them.
_TLS_NAME_KINDS = (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier, x509.RFC822Name)
# Extensions a CSR may carry whatever the profile: they name keys, they grant nothing.
_NEUTRAL_EXTENSIONS = {ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}


class RootSigner(Protocol):
    """The factory root of trust, able to sign in process and to stage itself for scripts."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def factory(self) -> str: ...

    @property
    def pki_dir(self) -> Path: ...

    def private_key(self) -> Any: ...

    def stage_for_scripts(self, work_dir: Path) -> dict[str, str]: ...


class _CheckedRoot:
    """What both signers share: the PKI dir and its `factory_ca.pem`, checked as the factory root.

    The factory is the root's OU unless the caller names the one it must be.
    """

    def __init__(self, pki: files.PkiDir, cert_pem: bytes, *, factory: str | None):
        cert = profiles.load_cert(cert_pem, facts.ROOT_CERT)
        ou = profiles.subject_ou(cert) or ""
        profiles.check_root(cert, factory=factory or ou, artifact=facts.ROOT_CERT)
        self._pki = pki
        self._cert = cert
        self._factory = ou

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def factory(self) -> str:
        return self._factory

    @property
    def pki_dir(self) -> Path:
        return self._pki.path

    def _stage_certificate(self, work_dir: Path) -> None:
        _write_private(work_dir / facts.ROOT_CERT, profiles.cert_pem(self._cert))


class FileRootSigner(_CheckedRoot):
    """The root key as `factory_ca.key` in the PKI dir, checked against `factory_ca.pem`."""

    def __init__(self, pki_dir: Path, *, factory: str | None = None):
        pki = files.PkiDir(pki_dir)
        cert_pem = _read_required(pki, facts.ROOT_CERT)
        key_pem = _read_required(pki, facts.ROOT_KEY)
        super().__init__(pki, cert_pem, factory=factory)
        key = profiles.load_private_key(key_pem, facts.ROOT_KEY)
        profiles.check_key_matches(key, self._cert, facts.ROOT_KEY)
        self._key = key
        self._key_pem = key_pem

    def __repr__(self) -> str:
        return f"FileRootSigner({str(self._pki.path)!r}, <key hidden>)"

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    def stage_for_scripts(self, work_dir: Path) -> dict[str, str]:
        # The key is copied as its exact bytes, 0400, into the 0700 work dir that is removed after.
        self._stage_certificate(work_dir)
        _write_private(work_dir / facts.ROOT_KEY, self._key_pem)
        return {}


class HsmRootSigner(_CheckedRoot):
    """The root key on a PKCS#11 token (label `root-ca`), checked against `factory_ca.pem`.

    Opening it logs in once (a wrong PIN or a missing token fails here, before anything else
    happens) and compares the token's public key with the certificate's.
    """

    def __init__(self, pki_dir: Path, settings: HsmSettings, *, factory: str | None = None):
        pki = files.PkiDir(pki_dir)
        if not pki.has(facts.ROOT_CERT):
            raise RefusedError(
                f"{pki / facts.ROOT_CERT} does not exist: {pki.path} is not a PKI dir made by "
                "`keys ca create` (with HSM flags it needs factory_ca.pem; the key is on the token)"
            )
        super().__init__(pki, pki.read_bytes(facts.ROOT_CERT), factory=factory)
        public_key = hsm.root_public_key(settings)
        if not _same_public_key(public_key, self._cert.public_key()):
            raise RefusedError(
                f"the {hsm.ROOT_KEY_LABEL} key on HSM token '{settings.token_label}' is not the key of "
                f"{pki / facts.ROOT_CERT}; use the token this root was made on"
            )
        self._settings = settings
        self._key = hsm.TokenKey(settings, public_key)

    def __repr__(self) -> str:
        return f"HsmRootSigner({str(self._pki.path)!r}, token_label={self._settings.token_label!r})"

    def private_key(self) -> hsm.TokenKey:
        return self._key

    def stage_for_scripts(self, work_dir: Path) -> dict[str, str]:
        # No key to stage: the scripts' HSM branch signs on the token with these variables.
        self._stage_certificate(work_dir)
        return self._settings.script_env()


def _same_public_key(a: Any, b: Any) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(*spki) == b.public_bytes(*spki)


def load_root_signer(pki_dir: Path, *, factory: str | None = None, hsm: HsmSettings | None = None) -> RootSigner:
    """The root signer for a PKI dir: `factory_ca.key`, or the HSM token when `hsm` is given."""
    if hsm is not None:
        return HsmRootSigner(Path(pki_dir).expanduser(), hsm, factory=factory)
    return FileRootSigner(Path(pki_dir).expanduser(), factory=factory)


def _read_required(pki: files.PkiDir, name: str) -> bytes:
    if not pki.has(name):
        raise RefusedError(
            f"{pki / name} does not exist: {pki.path} is not a PKI dir made by `keys ca create` "
            "(it needs factory_ca.pem and factory_ca.key)"
        )
    return pki.read_bytes(name)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# --- What a CSR may ask for -----------------------------------------------------------------


def check_csr_for_profile(csr: x509.CertificateSigningRequest, profile: Profile, artifact: str = "CSR") -> None:
    """Refuse a CSR that asks for more than `profile` grants (the profile is never inferred)."""
    if profile not in PROFILES:
        raise CheckError(artifact, f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != profiles.CURVE_NAME:
        raise CheckError(artifact, "public key must be EC P-256 (prime256v1)")
    for extension in csr.extensions:
        value = extension.value
        if extension.oid in _NEUTRAL_EXTENSIONS:
            continue
        if isinstance(value, x509.BasicConstraints):
            _check_requested_constraints(value, profile, artifact)
        elif isinstance(value, x509.KeyUsage):
            asked = set(profiles.key_usage_bits(value))
            granted = _TLS_KEY_USAGE if profile == "tls" else _CA_KEY_USAGE
            if not asked <= granted:
                raise CheckError(
                    artifact, f"asks for keyUsage {', '.join(sorted(asked - granted))}, which the {profile} profile does not grant"
                )
        elif isinstance(value, x509.ExtendedKeyUsage) and profile == "tls":
            extra = [oid for oid in value if oid != ExtendedKeyUsageOID.SERVER_AUTH]
            if extra:
                names = ", ".join(oid._name for oid in extra)
                raise CheckError(artifact, f"asks for extendedKeyUsage {names}; the tls profile grants serverAuth only")
        elif isinstance(value, x509.SubjectAlternativeName) and profile == "tls":
            others = [type(name).__name__ for name in value if not isinstance(name, _TLS_NAME_KINDS)]
            if others:
                raise CheckError(
                    artifact, f"asks for subjectAltName {', '.join(others)}; the tls profile takes DNS, IP, URI and email names"
                )
        else:
            raise CheckError(artifact, f"asks for {extension.oid._name}, which the {profile} profile does not grant")
    if profile == "tls":
        try:
            csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            raise CheckError(artifact, "has no DNS names in subjectAltName; the tls profile needs them") from None


def _check_requested_constraints(value: x509.BasicConstraints, profile: Profile, artifact: str) -> None:
    if profile == "tls" and value.ca:
        raise CheckError(artifact, "asks for CA:TRUE; the tls profile makes a server certificate (use --profile ca)")
    if profile == "ca":
        if not value.ca:
            raise CheckError(artifact, "asks for CA:FALSE; the ca profile makes a device CA (use --profile tls)")
        if value.path_length != 0:
            got = "unlimited" if value.path_length is None else str(value.path_length)
            raise CheckError(artifact, f"asks for pathlen {got}; the ca profile grants pathlen:0 only")


# --- Signing ----------------------------------------------------------------------------------

_SCRIPT_FOR_PROFILE = {"tls": "sign_tls_csr", "ca": "sign_ca_csr"}
_CSR_FILE_FOR_PROFILE = {"tls": facts.TLS_CSR, "ca": facts.ONLINE_CA_CSR}


@contextmanager
def _script_work_dir(
    signer: RootSigner, runner_factory: Callable[..., ScriptRunner], on_stderr: Callable[[str], None]
) -> Iterator[tuple[Path, ScriptRunner]]:
    """A fresh private work dir with the root staged, and a runner for it; removed afterwards."""
    jail = jails.require()  # before anything is staged
    work_dir = files.private_work_dir("fioca-sign-")
    try:
        env = signer.stage_for_scripts(work_dir)
        runner = runner_factory(work_dir, jail=jail, on_stderr=on_stderr, env_extra=env)
        yield work_dir, runner
    finally:
        # The work dir held a copy of the root key.
        shutil.rmtree(work_dir, ignore_errors=True)


def _reference_script(name: str, *, factory: str, local_ca_cn: str = "fio-unused") -> str:
    return reference.rendered(factory=factory, local_ca_cn=local_ca_cn)[name]


def sign_csr(
    signer: RootSigner,
    csr: x509.CertificateSigningRequest,
    profile: Profile,
    *,
    via: Via = "inprocess",
    artifact: str | None = None,
    csr_artifact: str | None = None,
    on_stderr: Callable[[str], None] = lambda _line: None,
    runner_factory: Callable[..., ScriptRunner] = ScriptRunner,
) -> x509.Certificate:
    """Sign `csr` with the root under `profile` ("tls" gateway server, "ca" device CA); checked."""
    artifact = artifact or ("tls-crt" if profile == "tls" else "ca-crt")
    check_csr_for_profile(csr, profile, artifact=csr_artifact or _CSR_FILE_FOR_PROFILE.get(profile, "CSR"))
    if via == "script":
        script = _SCRIPT_FOR_PROFILE[profile]
        csr_file = _CSR_FILE_FOR_PROFILE[profile]
        with _script_work_dir(signer, runner_factory, on_stderr) as (work_dir, runner):
            runner.put(csr_file, profiles.csr_pem(csr))
            runner.install(script, _reference_script(script, factory=signer.factory))
            stdout = runner.run(script, (csr_file,))
        if not stdout.strip():
            raise CheckError(artifact, f"script {script} exited 0 but printed no certificate")
        cert = profiles.load_cert(stdout, artifact)
    elif via == "inprocess":
        builder = profiles.sign_gateway_tls if profile == "tls" else profiles.sign_device_ca
        cert = builder(csr, root_cert=signer.certificate, root_key=signer.private_key())
    else:
        raise ValueError(f"via must be one of {VIAS}, got {via!r}")
    if profile == "tls":
        profiles.check_gateway_tls(cert, root=signer.certificate, csr=csr, artifact=artifact)
    else:
        profiles.check_device_ca(cert, root=signer.certificate, factory=signer.factory, csr=csr, artifact=artifact)
    role = profiles.Role.GATEWAY_TLS if profile == "tls" else profiles.Role.DEVICE_CA
    _check_as_fioca_asks(cert, role, signer, csr=csr, via=via, artifact=artifact)
    return cert


def _check_as_fioca_asks(
    cert: x509.Certificate,
    role: profiles.Role,
    signer: RootSigner,
    *,
    csr: x509.CertificateSigningRequest | None,
    via: Via,
    artifact: str,
) -> None:
    """What fioca just made is exactly what its own scripts ask for (run by this openssl; the
    in-process builders make what OpenSSL 3 makes)."""
    openssl = profiles.openssl_generation() if via == "script" else 3
    profiles.check_as_asked(
        cert, profiles.FIOCA.asked(role), issuer=signer.certificate, csr=csr, openssl=openssl, artifact=artifact
    )


@dataclass(frozen=True)
class LocalCa:
    cert: x509.Certificate
    key_pem: bytes = b""  # SEC1 PEM; kept out of repr

    def __repr__(self) -> str:
        return f"LocalCa(serial={self.cert.serial_number}, <key hidden>)"


def create_local_ca(
    signer: RootSigner,
    *,
    cn: str,
    via: Via = "script",
    on_stderr: Callable[[str], None] = lambda _line: None,
    runner_factory: Callable[..., ScriptRunner] = ScriptRunner,
) -> LocalCa:
    """A new local device CA `CN=<cn>, OU=<factory>`: a fresh key, signed by the root; checked."""
    if via == "script":
        script = "create_device_ca"
        with _script_work_dir(signer, runner_factory, on_stderr) as (work_dir, runner):
            runner.install(script, _reference_script(script, factory=signer.factory, local_ca_cn=cn))
            runner.run(script, (facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT))
            key_pem = runner.take(facts.LOCAL_CA_KEY)
            cert_pem = runner.take(facts.LOCAL_CA_CERT)
        cert = profiles.load_cert(cert_pem, facts.LOCAL_CA_CERT)
    elif via == "inprocess":
        key = profiles.new_key()
        csr = profiles.build_device_ca_csr(key, cn=cn, factory=signer.factory)
        cert = profiles.sign_device_ca(csr, root_cert=signer.certificate, root_key=signer.private_key())
        key_pem = profiles.private_key_pem(key)
    else:
        raise ValueError(f"via must be one of {VIAS}, got {via!r}")
    profiles.check_device_ca(
        cert, root=signer.certificate, factory=signer.factory, expected_cn=cn, artifact=facts.LOCAL_CA_CERT
    )
    _check_as_fioca_asks(cert, profiles.Role.DEVICE_CA, signer, csr=None, via=via, artifact=facts.LOCAL_CA_CERT)
    profiles.check_key_matches(profiles.load_private_key(key_pem, facts.LOCAL_CA_KEY), cert, facts.LOCAL_CA_KEY)
    return LocalCa(cert=cert, key_pem=key_pem)


def sign_crl(
    signer: RootSigner, serials_reasons: list[tuple[int, x509.ReasonFlags]]
) -> x509.CertificateRevocationList:
    """A CRL signed by the root, in process (no script ever made CRLs); checked."""
    crl = profiles.build_crl(
        root_cert=signer.certificate, root_key=signer.private_key(), serials_reasons=serials_reasons
    )
    profiles.check_crl(crl, root=signer.certificate)
    return crl
