"""The certificates of the factory PKI with `cryptography`: loading, checks in two tiers, the
named profiles, the strict checks of what fioca made, and the builders.

Accept liberally what the world really makes, check strictly what fioca makes:

- `pem`: PEM text into objects; strict for what fioca or a script made, lenient (text around
  the blocks skipped, as fioctl skips it) for what the server returns.
- `trust`: the trust tier. What breaks trust or a backend rule is an error, whoever made the
  certificate: `check_root`, `check_gateway_tls`, `check_device_ca`, `check_device_cert`,
  `check_key_matches`, `check_crl`, `check_server_csr`.
- `named`: the profile tier. The named profiles (the API's scripts, 2023 and 2026 revisions,
  run by OpenSSL 1.1 or 3; fioctl's Go PKI by version; fioca's own) and `recognise`, which
  names the closest and its differences (exact days, criticality, key identifiers, serial
  style, extra keyUsage bits) for the callers to show as notes, never to refuse.
- `strict`: what fioca just made is what the script's text asked for (`check_as_asked`,
  `check_made_by_scripts`), and the upload check right before the PATCH (`check_upload`).
- `builders`: fioca's own profile in process, and `reissue` / `reissue_pki` (fresh serials and
  signatures for what a script made).
- `details`: facts read off certificates (names, key identifiers, fingerprints, summaries).

Every check raises `fioca.errors.CheckError(artifact, rule)` naming the one rule broken; no
message carries key material.
"""

from __future__ import annotations

from datetime import timedelta

from fioca import facts
from fioca.errors import CheckError
from fioca.pki.profiles.builders import (
    DEVICE_CA_DAYS,
    GATEWAY_TLS_DAYS,
    ROOT_DAYS,
    authority_key_identifier,
    build_crl,
    build_device_ca_csr,
    build_device_csr,
    build_root,
    cert_pem,
    certs_pem,
    crl_pem,
    csr_pem,
    key_usage,
    new_key,
    private_key_pem,
    reissue,
    reissue_pki,
    sign_device_ca,
    sign_device_cert,
    sign_gateway_tls,
)
from fioca.pki.profiles.details import (
    CURVE_NAME,
    PRODUCTION,
    REASON_CODES,
    REASON_FLAGS,
    csr_asks_for_ca,
    describe,
    fingerprint_sha256,
    gateway_hosts,
    is_ca,
    key_id_sha1,
    key_id_sha256,
    key_usage_bits,
    key_usage_names,
    name_text,
    same_key,
    serial_decimal,
    subject_cn,
    subject_key_identifier,
    subject_ou,
)
from fioca.pki.profiles.named import (
    FIOCA,
    PROFILES,
    PROFILES_BY_ID,
    NamedProfile,
    Recognition,
    Role,
    pki_notes,
    profile_differences,
    recognise,
    script_profiles,
)
from fioca.pki.profiles.pem import (
    PemBlock,
    load_cert,
    load_cert_bundle,
    load_crl,
    load_csr,
    load_private_key,
    load_server_cert,
    load_server_cert_bundle,
    pem_blocks,
    pem_only,
    pem_spans,
)
from fioca.pki.profiles.strict import (
    check_as_asked,
    check_made_by_scripts,
    check_upload,
    openssl_generation,
)
from fioca.pki.profiles.trust import (
    CLOCK_SKEW,
    check_crl,
    check_device_ca,
    check_device_cert,
    check_gateway_tls,
    check_key_matches,
    check_root,
    check_server_csr,
    crl_reason,
)

ROOT_CN = facts.ROOT_CN
OFFLINE_DEVICE_DAYS = facts.OFFLINE_DEVICE_DAYS
REGISTERED_DEVICE_DAYS = facts.REGISTERED_DEVICE_DAYS
CRL_NEXT_UPDATE_MINUTES = facts.CRL_NEXT_UPDATE_MINUTES
# A device certificate's documented length may be off by a day (time zones, other tools).
VALIDITY_SLACK = timedelta(days=1)

__all__ = [
    "CLOCK_SKEW",
    "CRL_NEXT_UPDATE_MINUTES",
    "CURVE_NAME",
    "DEVICE_CA_DAYS",
    "FIOCA",
    "GATEWAY_TLS_DAYS",
    "OFFLINE_DEVICE_DAYS",
    "PRODUCTION",
    "PROFILES",
    "PROFILES_BY_ID",
    "REASON_CODES",
    "REASON_FLAGS",
    "REGISTERED_DEVICE_DAYS",
    "ROOT_CN",
    "ROOT_DAYS",
    "VALIDITY_SLACK",
    "CheckError",
    "NamedProfile",
    "PemBlock",
    "Recognition",
    "Role",
    "authority_key_identifier",
    "build_crl",
    "build_device_ca_csr",
    "build_device_csr",
    "build_root",
    "cert_pem",
    "certs_pem",
    "check_as_asked",
    "check_crl",
    "check_device_ca",
    "check_device_cert",
    "check_gateway_tls",
    "check_key_matches",
    "check_made_by_scripts",
    "check_root",
    "check_server_csr",
    "check_upload",
    "crl_pem",
    "crl_reason",
    "csr_asks_for_ca",
    "csr_pem",
    "describe",
    "fingerprint_sha256",
    "gateway_hosts",
    "is_ca",
    "key_id_sha1",
    "key_id_sha256",
    "key_usage",
    "key_usage_bits",
    "key_usage_names",
    "load_cert",
    "load_cert_bundle",
    "load_crl",
    "load_csr",
    "load_private_key",
    "load_server_cert",
    "load_server_cert_bundle",
    "name_text",
    "new_key",
    "openssl_generation",
    "pem_blocks",
    "pem_only",
    "pem_spans",
    "pki_notes",
    "private_key_pem",
    "profile_differences",
    "recognise",
    "reissue",
    "reissue_pki",
    "same_key",
    "script_profiles",
    "serial_decimal",
    "sign_device_ca",
    "sign_device_cert",
    "sign_gateway_tls",
    "subject_cn",
    "subject_key_identifier",
    "subject_ou",
]  # fmt: skip
