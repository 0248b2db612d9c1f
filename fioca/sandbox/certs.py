"""Small certificate facts the sandbox's API backend, gateway, registration server and TLS share.

Server side only: like the rest of `fioca.sandbox`, it imports nothing from the client.
"""

from __future__ import annotations

import uuid as uuid_module

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

PRODUCTION = "production"  # businessCategory value of a production device


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s name and key signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_production(subject: x509.Name) -> bool:
    """The subject carries businessCategory=production."""
    return any(a.value == PRODUCTION for a in subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY))


def is_canonical_uuid(text: object) -> bool:
    """`text` is a UUID in its one canonical spelling: lower-case hex, hyphenated 8-4-4-4-12.

    Upper case, `{...}`, `urn:uuid:` and the hyphen-less form parse as the same UUID; the
    sandbox refuses them rather than normalising, so one device never has two spellings (a
    deleted device cannot come back, a known one cannot get a second key, under another).
    """
    if not isinstance(text, str):
        return False
    try:
        return str(uuid_module.UUID(text)) == text
    except ValueError:
        return False


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints says CA:TRUE."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    """A keyUsage with only the named bits set (the ones the sandbox's certificates use)."""
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )
