"""What a registration server answers, checked before any of it is written (PKI-SPEC 2, 9, 10).

A 201 answer is a JSON object whose every key is a file for the sota dir. fioca writes a key
only when it is a plain file name (no path; not `pkey.pem`, which fioca makes, nor `sql.db`,
aktualizr-lite's) holding text, and only once the certificates hold together:

- `root.crt`: the factory's own root (its OU is the factory: `check_root`), or, while the factory
  has no PKI of its own, the service's shared root (PKI-SPEC 10), which names no factory and is
  checked as a root without the OU rule. When the factory's own root is known before the POST
  (`known_root`), the answer's must be that very certificate.
- `client.chained`, when sent: `client.pem`, then the CA that signed it, a device CA under that
  root (the factory's, or the shared one).
- `client.pem`: for our key, `CN=<uuid>, OU=<factory>`, the production marking asked for, a
  device certificate of that CA.
- `sota.toml` must be there (lmp-device-register writes an empty one when it is not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from fioca import facts
from fioca.errors import CheckError, PkiDirError
from fioca.pki import profiles

MAX_FILES = 16
MAX_FILE_BYTES = 256 * 1024
# What fioca writes from an answer: a plain name, no path, no leading dot.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NOT_FROM_THE_SERVER = (facts.DEVICE_KEY, facts.DEVICE_SQL)
REQUIRED = (facts.DEVICE_CERT, facts.DEVICE_ROOT, facts.SOTA_TOML)


@dataclass(frozen=True)
class KnownRoot:
    """The factory's own root as known before the POST, and where it was read."""

    cert: x509.Certificate
    source: str


@dataclass(frozen=True)
class CheckedAnswer:
    files: dict[str, bytes]  # in the answer's order
    client: x509.Certificate
    shared: bool  # root.crt is the service's shared root: the factory has no PKI of its own yet
    notes: list[str] = field(default_factory=list)


def _read_root(path: Path) -> x509.Certificate:
    try:
        return profiles.load_cert(path.read_bytes(), str(path))
    except OSError as exc:
        raise PkiDirError(f"cannot read {path}: {exc.strerror}") from None


def known_root(sota_dir: Path, pki_dir: Path | None, factory: str, *, force: bool) -> KnownRoot | None:
    """The factory's root as far as it is known before anything is sent, checked now:
    PKI_DIR/factory_ca.pem (it must be this factory's root), else a root.crt already in the sota
    dir that names the factory. A root.crt that names another factory (or none: a shared root) is
    not this factory's and will be replaced; one that does not parse is refused unless `force`."""
    from_pki = None
    if pki_dir is not None:
        path = pki_dir / facts.ROOT_CERT
        if not path.is_file():
            raise PkiDirError(f"{path} does not exist; --pki-dir names the PKI dir that holds the factory root")
        from_pki = KnownRoot(_read_root(path), str(path))
        profiles.check_root(from_pki.cert, factory=factory, artifact=str(path))
    path = sota_dir / facts.DEVICE_ROOT
    in_sota = None
    if path.is_file():
        try:
            cert = _read_root(path)
        except CheckError:
            if force:
                return from_pki  # --force: it is left from an earlier run and will be replaced
            raise
        if profiles.subject_ou(cert) == factory:
            in_sota = KnownRoot(cert, str(path))
            profiles.check_root(cert, factory=factory, artifact=str(path))
    if from_pki and in_sota and from_pki.cert != in_sota.cert:
        raise CheckError(
            in_sota.source,
            f"is not {from_pki.source} (SHA-256 {profiles.fingerprint_sha256(in_sota.cert)} vs "
            f"{profiles.fingerprint_sha256(from_pki.cert)}): two different roots for factory {factory!r}",
        )
    return from_pki or in_sota


def answer_files(answer: dict[str, Any]) -> dict[str, bytes]:
    """The answer's files as bytes, each a name fioca will write and text of a sane size."""
    if len(answer) > MAX_FILES:
        raise CheckError("registration answer", f"holds {len(answer)} files; a registration has a handful")
    files: dict[str, bytes] = {}
    for name, value in answer.items():
        if not _FILE_NAME.match(name) or name in NOT_FROM_THE_SERVER:
            raise CheckError("registration answer", f"{name!r} is not a file name fioca will write")
        if not isinstance(value, str):
            raise CheckError(name, f"must be text, got {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > MAX_FILE_BYTES or "\x00" in value:
            raise CheckError(name, "is too large or holds NUL bytes")
        files[name] = data
    for required in REQUIRED:
        if required not in files:
            raise CheckError("registration answer", f"has no {required}")
    return files


def check_answer(
    answer: dict[str, Any], *, key: Any, uuid: str, factory: str, production: bool, known: KnownRoot | None
) -> CheckedAnswer:
    """The answer's files, every certificate checked; a rule broken raises CheckError naming the file."""
    files = answer_files(answer)
    root = profiles.load_cert(files[facts.DEVICE_ROOT], facts.DEVICE_ROOT)
    shared = profiles.subject_ou(root) != factory
    if known is not None and root != known.cert:
        raise CheckError(facts.DEVICE_ROOT, _not_the_known_root(root, known, shared))
    owner = None if shared else factory  # the shared root and its device CA name no factory
    profiles.check_root(root, factory=owner, artifact=facts.DEVICE_ROOT)
    client = profiles.load_cert(files[facts.DEVICE_CERT], facts.DEVICE_CERT)
    profiles.check_key_matches(key, client, facts.DEVICE_CERT)
    notes = []
    if facts.DEVICE_CHAINED in files:
        chain = profiles.load_cert_bundle(files[facts.DEVICE_CHAINED], facts.DEVICE_CHAINED)
        if len(chain) != 2 or chain[0] != client:
            raise CheckError(facts.DEVICE_CHAINED, "must be client.pem followed by its issuing CA")
        profiles.check_device_ca(chain[1], root=root, factory=owner, artifact=f"{facts.DEVICE_CHAINED} CA")
        profiles.check_device_cert(client, ca=chain[1], factory=factory, uuid=uuid, artifact=facts.DEVICE_CERT)
    else:
        _check_subject(client, uuid, factory)
        notes.append("the answer has no client.chained: client.pem's issuer was not checked (the gateway checks it)")
    marked = [a.value for a in client.subject.get_attributes_for_oid(x509.NameOID.BUSINESS_CATEGORY)]
    if (marked == [facts.PRODUCTION]) != production:
        raise CheckError(facts.DEVICE_CERT, f"production marking is {bool(marked)}, asked for {production}")
    if shared:
        notes.append(
            "root.crt is the service's shared root: factory "
            f"{factory!r} has no PKI of its own yet; register again after `keys ca create`"
        )
    return CheckedAnswer(files=files, client=client, shared=shared, notes=notes)


def _check_subject(client: x509.Certificate, uuid: str, factory: str) -> None:
    if profiles.subject_cn(client) != uuid or profiles.subject_ou(client) != factory:
        got = profiles.name_text(client.subject)
        raise CheckError(facts.DEVICE_CERT, f"subject must be CN={uuid}, OU={factory}, got {got}")


def _not_the_known_root(root: x509.Certificate, known: KnownRoot, shared: bool) -> str:
    told = f"SHA-256 {profiles.fingerprint_sha256(root)}"
    expected = f"the factory's root from {known.source} (SHA-256 {profiles.fingerprint_sha256(known.cert)})"
    if shared:
        return (
            f"is a root that names no factory ({told}), not {expected}: this server answers with the shared "
            "PKI, so the factory's own PKI is not in use there (is `keys ca create` finished? `keys ca show --just-root`)"
        )
    return f"is {profiles.name_text(root.subject)} ({told}), not {expected}"
