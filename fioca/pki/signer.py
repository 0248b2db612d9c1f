"""Signing with the factory root: the one seam every `keys ca` command goes through.

A `RootSigner` is the root certificate of a PKI dir plus a way to use its key:

- in process: `signer.private_key()` is a `cryptography` EC private key the builders sign
  with: the file key (`FileRootSigner`), or `hsm.TokenKey`, whose `.sign()` signs on the
  PKCS#11 token (`HsmRootSigner`);
- by script: `signer.staged()` names the files fioca's bundled scripts need in their work dir
  (`factory_ca.pem` and, for a file key, `factory_ca.key`) and `signer.script_env()` the
  environment they need (an HSM signer adds HSM_MODULE / HSM_TOKEN_LABEL / HSM_PIN and
  stages no key: the scripts' HSM branch signs on the token).

The signing functions (`sign_csr`, `create_local_ca`, `sign_crl`) take a signer and a `via`
("script" runs the bundled `sign_tls_csr` / `sign_ca_csr` / `create_device_ca` in the jail,
as create does; "inprocess" uses the builders of `profiles`) and check every result, as its
script's text asked and against the trust rules, before returning it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from fioca import facts
from fioca.errors import CheckError, RefusedError
from fioca.pki import hsm, profiles, reference
from fioca.pki import jail as jails
from fioca.pki.files import PkiDir
from fioca.pki.hsm import HsmSettings
from fioca.pki.scripts import ScriptRunner

Profile = Literal["tls", "ca"]
Via = Literal["script", "inprocess"]
PROFILES: tuple[str, ...] = ("tls", "ca")
VIAS: tuple[str, ...] = ("script", "inprocess")

# What each profile grants; a CSR asking for anything beyond it is refused, not trimmed.
_TLS_KEY_USAGE = {"digital_signature", "key_encipherment", "key_agreement"}
_CA_KEY_USAGE = {"key_cert_sign"}
# The subjectAltName kinds `keys ca sign` copies into a TLS certificate, as fioctl does.
_TLS_NAME_KINDS = (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier, x509.RFC822Name)
# Extensions a CSR may carry whatever the profile: they name keys, they grant nothing.
_NEUTRAL_EXTENSIONS = {ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}


class RootSigner:
    """A PKI dir's `factory_ca.pem`, checked as a factory root, and a way to use its key."""

    def __init__(self, pki: PkiDir, *, factory: str | None, hsm_settings: HsmSettings | None):
        if not pki.has(facts.ROOT_CERT):
            raise RefusedError(
                f"{pki / facts.ROOT_CERT} does not exist: {pki.path} is not a PKI dir made by `keys ca create`"
            )
        cert = profiles.load_cert(pki.read_bytes(facts.ROOT_CERT), facts.ROOT_CERT)
        ou = profiles.subject_ou(cert) or ""
        profiles.check_root(cert, factory=factory or ou, artifact=facts.ROOT_CERT)
        self.pki = pki
        self.certificate = cert
        self.factory = ou
        self.hsm = hsm_settings

    def private_key(self) -> Any:
        raise NotImplementedError

    def staged(self) -> dict[str, bytes]:
        """The root's files a signing script needs in its work dir."""
        return {facts.ROOT_CERT: profiles.cert_pem(self.certificate)}

    def script_env(self, *, local_ca_cn: str) -> dict[str, str]:
        return reference.script_env(factory=self.factory, local_ca_cn=local_ca_cn)


class FileRootSigner(RootSigner):
    """The root key as `factory_ca.key` in the PKI dir, checked against `factory_ca.pem`."""

    def __init__(self, pki: PkiDir, *, factory: str | None = None):
        super().__init__(pki, factory=factory, hsm_settings=None)
        if not pki.has(facts.ROOT_KEY):
            raise RefusedError(
                f"{pki / facts.ROOT_KEY} does not exist, but {facts.ROOT_CERT} does: if this root's key is on an "
                "HSM, pass --hsm-module and --hsm-token-label (and the PIN)",
                details=["  e.g. --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token-label <label>; PIN in FIOCA_HSM_PIN"],
            )
        self._key_pem = pki.read_bytes(facts.ROOT_KEY)
        key = profiles.load_private_key(self._key_pem, facts.ROOT_KEY)
        profiles.check_key_matches(key, self.certificate, facts.ROOT_KEY)
        self._key = key

    def __repr__(self) -> str:
        return f"FileRootSigner({str(self.pki.path)!r}, <key hidden>)"

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    def staged(self) -> dict[str, bytes]:
        # The key's exact bytes, into a 0700 work dir inside the PKI dir, removed after.
        return {**super().staged(), facts.ROOT_KEY: self._key_pem}


class HsmRootSigner(RootSigner):
    """The root key on a PKCS#11 token (label `root-ca`), checked against `factory_ca.pem`.

    Opening it logs in once (a wrong PIN or a missing token fails here, before anything else
    happens) and compares the token's public key with the certificate's.
    """

    def __init__(self, pki: PkiDir, settings: HsmSettings, *, factory: str | None = None):
        super().__init__(pki, factory=factory, hsm_settings=settings)
        public_key = hsm.root_public_key(settings)
        if not profiles.same_key(public_key, self.certificate):
            raise RefusedError(
                f"the {hsm.ROOT_KEY_LABEL} key on HSM token '{settings.token_label}' is not the key of "
                f"{pki / facts.ROOT_CERT}; use the token this root was made on"
            )
        self._key = hsm.TokenKey(settings, public_key)

    def __repr__(self) -> str:
        return f"HsmRootSigner({str(self.pki.path)!r}, token_label={self.hsm.token_label!r})"

    def private_key(self) -> hsm.TokenKey:
        return self._key

    def script_env(self, *, local_ca_cn: str) -> dict[str, str]:
        # No key to stage: the scripts' HSM branch signs on the token with these variables.
        return {**super().script_env(local_ca_cn=local_ca_cn), **self.hsm.script_env()}


def load_root_signer(pki: PkiDir, *, factory: str | None = None, hsm: HsmSettings | None = None) -> RootSigner:
    """The root signer for a PKI dir: `factory_ca.key`, or the HSM token when `hsm` is given."""
    if hsm is not None:
        return HsmRootSigner(pki, hsm, factory=factory)
    return FileRootSigner(pki, factory=factory)


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

_SCRIPT_FOR_PROFILE = {"tls": facts.SIGN_TLS_CSR, "ca": facts.SIGN_CA_CSR}
_CSR_FILE_FOR_PROFILE = {"tls": facts.TLS_CSR, "ca": facts.ONLINE_CA_CSR}
# A CN for scripts that make no local CA; fioca's scripts read LOCAL_CA_CN only in create_device_ca.
_UNUSED_CN = "fio-unused"


def _check_as_fioca_asks(
    cert: x509.Certificate, role: profiles.Role, signer: RootSigner, *, csr: x509.CertificateSigningRequest | None,
    via: Via, artifact: str,
) -> None:
    """What fioca just made is exactly what its own scripts ask for (run by this openssl; the
    in-process builders make what OpenSSL 3 makes)."""
    openssl = profiles.openssl_generation() if via == "script" else 3
    profiles.check_as_asked(
        cert, profiles.FIOCA.asked(role), issuer=signer.certificate, csr=csr, openssl=openssl, artifact=artifact
    )


def _run_bundled(
    signer: RootSigner,
    script: str,
    args: tuple[str, ...],
    inputs: dict[str, bytes],
    products: tuple[str, ...],
    *,
    local_ca_cn: str,
    on_stderr: Callable[[str], None],
) -> dict[str, bytes]:
    """Run fioca's bundled `script` in the jail, in a fresh work dir inside the PKI dir; return
    its products (stdout as "-"), taken as bytes. The caller holds the PKI dir's lock."""
    pki = signer.pki
    jail = jails.require()
    pki.remove_folder(facts.WORK_DIR)
    work_dir = pki.make_folder(facts.WORK_DIR)
    try:
        runner = ScriptRunner(work_dir, jail=jail, env_extra=signer.script_env(local_ca_cn=local_ca_cn), on_stderr=on_stderr)
        for name, text in reference.bundled().items():
            runner.install(name, text)
        for name, data in {**signer.staged(), **inputs}.items():
            runner.put(name, data)
        stdout = runner.run(script, args)
        taken = {name: runner.take(name) for name in products}
    finally:
        pki.remove_folder(facts.WORK_DIR)  # it held a copy of the root key
    return {"-": stdout, **taken}


def sign_csr(
    signer: RootSigner,
    csr: x509.CertificateSigningRequest,
    profile: Profile,
    *,
    via: Via = "inprocess",
    artifact: str | None = None,
    csr_artifact: str | None = None,
    on_stderr: Callable[[str], None] = lambda _line: None,
) -> x509.Certificate:
    """Sign `csr` with the root under `profile` ("tls" gateway server, "ca" device CA); checked."""
    artifact = artifact or ("tls-crt" if profile == "tls" else "ca-crt")
    check_csr_for_profile(csr, profile, artifact=csr_artifact or _CSR_FILE_FOR_PROFILE.get(profile, "CSR"))
    if via == "script":
        script = _SCRIPT_FOR_PROFILE[profile]
        csr_file = _CSR_FILE_FOR_PROFILE[profile]
        made = _run_bundled(
            signer, script, (csr_file,), {csr_file: profiles.csr_pem(csr)}, (), local_ca_cn=_UNUSED_CN,
            on_stderr=on_stderr,
        )
        if not made["-"].strip():
            raise CheckError(artifact, f"script {script} exited 0 but printed no certificate")
        cert = profiles.load_cert(made["-"], artifact)
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
) -> LocalCa:
    """A new local device CA `CN=<cn>, OU=<factory>`: a fresh key, signed by the root; checked."""
    if via == "script":
        script = facts.CREATE_DEVICE_CA
        names = (facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT)
        made = _run_bundled(signer, script, names, {}, names, local_ca_cn=cn, on_stderr=on_stderr)
        key_pem, cert_pem = made[facts.LOCAL_CA_KEY], made[facts.LOCAL_CA_CERT]
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


def sign_crl(signer: RootSigner, serials_reasons: list[tuple[int, int]]) -> x509.CertificateRevocationList:
    """A CRL signed by the root (serial, reason code), in process (no script ever made CRLs); checked."""
    crl = profiles.build_crl(
        root_cert=signer.certificate, root_key=signer.private_key(), serials_reasons=serials_reasons
    )
    profiles.check_crl(crl, root=signer.certificate)
    return crl
