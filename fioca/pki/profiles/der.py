"""Just enough DER to put 160-bit serials in a CRL, which `cryptography`'s builders refuse.

fioctl's Go PKI draws device CA serials below 2^160, so half of them need 160 bits (21 octets
in DER); `RevokedCertificateBuilder` takes 159 at most. `with_serials` takes a CRL built with
stand-in serials, puts the real ones in its TBSCertList and signs it again with the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_SEQUENCE, _INTEGER, _BIT_STRING = 0x30, 0x02, 0x03
_TIMES = (0x17, 0x18)  # UTCTime, GeneralizedTime


def _length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def integer(value: int) -> bytes:
    """A non-negative INTEGER, with the leading zero octet DER wants when the top bit is set."""
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def read(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the element at `offset`."""
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, offset + 2 + first
    count = first & 0x7F
    start = offset + 2 + count
    return tag, start, start + int.from_bytes(data[offset + 2 : start], "big")


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, offset, content start, end) of each element in data[start:end]."""
    found, offset = [], start
    while offset < end:
        tag, content, stop = read(data, offset)
        found.append((tag, offset, content, stop))
        offset = stop
    return found


def _revoked_with_serials(tbs: bytes, serials: Mapping[int, int]) -> bytes:
    """The TBSCertList with each entry's stand-in serial replaced (revokedCertificates is the
    first SEQUENCE after thisUpdate and nextUpdate)."""
    _tag, body, end = read(tbs, 0)
    parts, seen_time = [], False
    for tag, offset, content, stop in children(tbs, body, end):
        if tag in _TIMES:
            seen_time = True
        elif tag == _SEQUENCE and seen_time:
            entries = []
            for _entry_tag, _entry, entry_content, entry_stop in children(tbs, content, stop):
                _serial_tag, serial_start, serial_stop = read(tbs, entry_content)
                stand_in = int.from_bytes(tbs[serial_start:serial_stop], "big")
                rest = tbs[serial_stop:entry_stop]
                entries.append(tlv(_SEQUENCE, integer(serials.get(stand_in, stand_in)) + rest))
            parts.append(tlv(_SEQUENCE, b"".join(entries)))
            seen_time = False
            continue
        parts.append(tbs[offset:stop])
    return tlv(_SEQUENCE, b"".join(parts))


def with_serials(
    crl: x509.CertificateRevocationList, serials: Mapping[int, int], signer_key: Any
) -> x509.CertificateRevocationList:
    """`crl` with its stand-in serials (keys of `serials`) replaced by the real ones, signed
    again by `signer_key` with ECDSA-SHA256, as `crl` was."""
    tbs = _revoked_with_serials(crl.tbs_certlist_bytes, serials)
    der = crl.public_bytes(serialization.Encoding.DER)
    _tag, outer, _end = read(der, 0)
    _tag, _start, tbs_end = read(der, outer)
    _tag, _start, algorithm_end = read(der, tbs_end)
    signature = signer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_crl(
        tlv(_SEQUENCE, tbs + der[tbs_end:algorithm_end] + tlv(_BIT_STRING, b"\x00" + signature))
    )
