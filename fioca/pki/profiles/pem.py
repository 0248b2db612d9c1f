"""PEM text into `cryptography` objects, in two manners.

- Strict (`load_cert`, `load_cert_bundle`, `load_csr`, `load_private_key`, `load_crl`): for what
  fioca, a script or the user made. Nothing but the PEM blocks asked for: prose around them,
  a second block or a broken body is refused, since it hides what was produced.
- Lenient (`load_server_cert`, `load_server_cert_bundle`): for what the Factory API returns
  (`root-crt`, `ca-crt`, `tls-crt`, `show` data). Text around the blocks is skipped, as
  fioctl's `pem.Decode` loop skips it; the blocks themselves are checked as strictly.

No message built here carries key material: key errors name the file and the rule only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fioca import facts
from fioca.errors import CheckError
from fioca.pki.profiles.details import CURVE_NAME, key_kind

_BLOCK = r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>.*?)-----END (?P=label)-----"
_PEM_BLOCK = re.compile(_BLOCK, re.DOTALL)
# Among other text a block starts at the beginning of a line, as Go's pem.Decode wants it.
_PEM_BLOCK_IN_TEXT = re.compile("^" + _BLOCK, re.DOTALL | re.MULTILINE)
_CERT_LABEL = "CERTIFICATE"
_CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
_KEY_LABELS = ("EC PRIVATE KEY", "PRIVATE KEY")


@dataclass(frozen=True)
class PemBlock:
    """One `-----BEGIN label-----` block, decoded."""

    label: str
    der: bytes

    def pem(self) -> bytes:
        """The block re-encoded as canonical PEM (64-column base64)."""
        body = base64.encodebytes(self.der).decode("ascii").replace("\n", "")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return ("\n".join([f"-----BEGIN {self.label}-----", *lines, f"-----END {self.label}-----"]) + "\n").encode()


def _text(pem: bytes | str, artifact: str, *, lenient: bool) -> str:
    if isinstance(pem, str):
        text = pem
    elif isinstance(pem, bytes):
        if lenient:
            # Bytes outside the blocks may be anything; latin-1 keeps every byte at its offset.
            return pem.decode("latin-1")
        try:
            text = pem.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CheckError(artifact, f"is not PEM text: invalid UTF-8 byte at offset {error.start}") from None
    else:
        raise CheckError(artifact, f"is not PEM text: got {type(pem).__name__}")
    if not lenient and not text.isascii():
        position = next(i for i, char in enumerate(text) if not char.isascii())
        raise CheckError(artifact, f"is not PEM text: non-ASCII character at offset {position}")
    return text


def pem_blocks(pem: bytes | str, artifact: str, *, lenient: bool = False) -> list[PemBlock]:
    """Split PEM text into its blocks; refuse broken base64 and, unless `lenient`, non-ASCII
    text and any text outside the blocks."""
    text = _text(pem, artifact, lenient=lenient)
    matches = list((_PEM_BLOCK_IN_TEXT if lenient else _PEM_BLOCK).finditer(text))
    if not matches:
        raise CheckError(artifact, "is not PEM: no -----BEGIN ...----- / -----END ...----- block found")
    blocks: list[PemBlock] = []
    end_of_last = 0
    for match in matches:
        if not lenient:
            _refuse_stray_text(text[end_of_last : match.start()], artifact)
        end_of_last = match.end()
        label = match["label"]
        body = "".join(match["body"].split())
        try:
            der = base64.b64decode(body.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise CheckError(artifact, f"PEM block {label} has a broken base64 body") from None
        blocks.append(PemBlock(label, der))
    if not lenient:
        _refuse_stray_text(text[end_of_last:], artifact)
    return blocks


def pem_spans(text: str) -> list[tuple[int, int]]:
    """Where each PEM block of `text` starts and ends, found as the server loaders find them."""
    return [match.span() for match in _PEM_BLOCK_IN_TEXT.finditer(text)]


def pem_only(text: str) -> str:
    """`text` without what lies outside its PEM blocks, as fioctl skips it when it reads a
    bundle (the server's `ca-crt`). Whitespace between blocks is kept, so a clean bundle comes
    back byte for byte; other text becomes one newline."""
    spans = pem_spans(text)
    if not spans:
        return ""
    kept = [text[spans[0][0] : spans[0][1]]]
    for (_, end), (start, stop) in zip(spans, spans[1:]):
        between = text[end:start]
        kept += [between if not between.strip() else "\n", text[start:stop]]
    tail = text[spans[-1][1] :]
    kept.append(tail if not tail.strip() else "\n")
    return "".join(kept)


def _refuse_stray_text(between: str, artifact: str) -> None:
    # openssl tolerates prose around blocks; a checker of what was made should not.
    stray = between.strip()
    if stray:
        raise CheckError(artifact, f"has text outside PEM blocks: {stray[:40]!r}")


def _one_block(blocks: list[PemBlock], labels: Iterable[str], artifact: str) -> PemBlock:
    labels = tuple(labels)
    wanted = " or ".join(labels)
    wrong = [block.label for block in blocks if block.label not in labels]
    if wrong:
        raise CheckError(artifact, f"must be a PEM {wanted}, got a {wrong[0]} block")
    if len(blocks) != 1:
        raise CheckError(artifact, f"must hold exactly one PEM {wanted} block, found {len(blocks)}")
    return blocks[0]


def _parse_cert(block: PemBlock, artifact: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"CERTIFICATE block does not parse as X.509: {error}") from None


def _certificates(blocks: list[PemBlock], artifact: str) -> list[x509.Certificate]:
    wrong = [block.label for block in blocks if block.label != _CERT_LABEL]
    if wrong:
        raise CheckError(artifact, f"must hold only PEM CERTIFICATE blocks, got a {wrong[0]} block")
    return [_parse_cert(block, artifact) for block in blocks]


def load_cert(pem: bytes | str, artifact: str) -> x509.Certificate:
    """Exactly one PEM certificate and nothing else."""
    return _parse_cert(_one_block(pem_blocks(pem, artifact), [_CERT_LABEL], artifact), artifact)


def load_cert_bundle(pem: bytes | str, artifact: str) -> list[x509.Certificate]:
    """One or more PEM certificates (`ca-crt`: PEMs joined with "\\n"), in file order, nothing else."""
    return _certificates(pem_blocks(pem, artifact), artifact)


def load_server_cert(pem: bytes | str, artifact: str) -> x509.Certificate:
    """One PEM certificate from the Factory API; text around it is skipped."""
    return _parse_cert(_one_block(pem_blocks(pem, artifact, lenient=True), [_CERT_LABEL], artifact), artifact)


def load_server_cert_bundle(pem: bytes | str, artifact: str) -> list[x509.Certificate]:
    """The PEM certificates of a Factory API field (`ca-crt`), in order; text around them is skipped."""
    return _certificates(pem_blocks(pem, artifact, lenient=True), artifact)


def load_csr(pem: bytes | str, artifact: str) -> x509.CertificateSigningRequest:
    """Exactly one PEM CSR whose self-signature verifies."""
    block = _one_block(pem_blocks(pem, artifact), _CSR_LABELS, artifact)
    try:
        csr = x509.load_der_x509_csr(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"CERTIFICATE REQUEST block does not parse: {error}") from None
    try:
        valid = csr.is_signature_valid
    except UnsupportedAlgorithm:
        valid = False
    if not valid:
        raise CheckError(artifact, "CSR self-signature does not verify")
    return csr


def load_private_key(pem: bytes | str, artifact: str) -> ec.EllipticCurvePrivateKey:
    """One unencrypted P-256 private key (SEC1 or PKCS#8), the only kind any profile makes.

    A leading `EC PARAMETERS` block (what `openssl ecparam -genkey` without `-noout` writes)
    is accepted and skipped when it names prime256v1.
    """
    blocks = pem_blocks(pem, artifact)
    key_blocks = []
    for block in blocks:
        if block.label == "EC PARAMETERS":
            if block.der != facts.CURVE_OID_DER:
                raise CheckError(artifact, "EC PARAMETERS block must name prime256v1 (P-256)")
            continue
        if block.label == "ENCRYPTED PRIVATE KEY":
            raise CheckError(artifact, "private key is encrypted; fioca needs an unencrypted key file")
        key_blocks.append(block)
    if not key_blocks:
        raise CheckError(artifact, "holds no private key block (only EC PARAMETERS)")
    block = _one_block(key_blocks, _KEY_LABELS, artifact)
    try:
        # The error text of a key parser is dropped on purpose: it must never echo key bytes.
        key = serialization.load_der_private_key(block.der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(artifact, f"{block.label} block does not parse as a private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CheckError(artifact, f"private key must be EC P-256, got {key_kind(key.public_key())}")
    if key.curve.name != CURVE_NAME:
        raise CheckError(artifact, f"private key must be EC P-256, got EC {key.curve.name}")
    return key


def load_crl(pem: bytes | str, artifact: str) -> x509.CertificateRevocationList:
    """Exactly one PEM `X509 CRL`."""
    block = _one_block(pem_blocks(pem, artifact), ["X509 CRL"], artifact)
    try:
        return x509.load_der_x509_crl(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"X509 CRL block does not parse: {error}") from None
