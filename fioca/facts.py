"""Every fact fioca knows about the factory PKI, defined once and imported everywhere else.

File names, script names, certificate validities of each named profile, CRL reason codes,
the curve, the gateway's port. Plain constants and the standard library only: the CLI builds
its enums and help texts from this module, and it must stay cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- The PKI directory, named as fioctl names it -------------------------------------------

ROOT_KEY = "factory_ca.key"
ROOT_CERT = "factory_ca.pem"
TLS_CERT = "tls-crt"
TLS_CSR = "tls-csr"
ONLINE_CA_CERT = "online-crt"
ONLINE_CA_CSR = "ca-csr"
LOCAL_CA_KEY = "local-ca.key"
LOCAL_CA_CERT = "local-ca.pem"
EST_TLS_CERT = "est-tls-crt"
EST_TLS_CSR = "est-tls-csr"
FACTORY_CERTS_JSON = "factory_certs.json"

# fioca's own files in the PKI directory.
JOURNAL_FILE = ".fioca-create.json"
WORK_DIR = ".fioca-work"  # a signing command's one script runs here; create's each in its own:


def work_dir_of(script: str) -> str:
    """The work dir of create's step `script` (its own: create's steps may run side by side)."""
    return f"{WORK_DIR}-{script}"


# Modes: fioctl writes every PKI file 0400; fioca keeps them in 0700 folders.
FILE_MODE = 0o400
DIR_MODE = 0o700
SCRIPT_MODE = 0o700  # script-era fioctl stored the server's scripts 0700
RECORD_MODE = 0o600  # fioca's own records (journal, lock), rewritten in place

# --- The server's scripts, in the order create runs them -----------------------------------

CREATE_CA = "create_ca"
SIGN_TLS_CSR = "sign_tls_csr"
SIGN_CA_CSR = "sign_ca_csr"
CREATE_DEVICE_CA = "create_device_ca"
SCRIPT_NAMES = (CREATE_CA, SIGN_TLS_CSR, SIGN_CA_CSR, CREATE_DEVICE_CA)

# --- How the root signs (keys ca sign, add-device-ca, rotate-tls) ---------------------------

SIGN_PROFILES = ("tls", "ca")  # a gateway (server) certificate, a device CA
SIGN_VIAS = ("script", "inprocess")  # the bundled reference scripts with openssl, or in process

# --- The Factory API -------------------------------------------------------------------------

DEFAULT_API = "https://api.foundries.io"
DEFAULT_TOKEN_HEADER = "OSF-TOKEN"
# Fields of certs/ that hold PEM text (or null).
CERT_FIELDS = ("root-crt", "ca-crt", "tls-crt", "est-tls-crt")
PATCH_FIELDS = ("root-crt", "ca-crt", "tls-crt", "est-tls-crt", "ca-revoke-crl")
POST_FLAGS = ("first-time-init", "ca-csr", "est-tls-csr", "tls-csr")

# --- The device gateway and the devices --------------------------------------------------------

GATEWAY_PORT = 8443
GATEWAY_DOMAIN = "ota-lite.foundries.io"
OSTREE_DOMAIN = "ostree.foundries.io"
DEFAULT_SOTA_DIR = "/var/sota"
DEVICE_PROBE_PATH = "/device"  # what `device check` GETs from the gateway by default
SANDBOX_INFO_FILE = "sandbox.json"  # how clients reach a running sandbox, in its data dir
PRODUCTION = "production"  # businessCategory value of a production device
AKLITE_LOCK = "/var/lock/aklite.lock"  # held by a running aktualizr-lite (lmp-device-register checks it)
RESERVED_FACTORY = "lmp"  # LmP's placeholder factory in /etc/os-release: lmp-device-register refuses it

# A device folder (and lmp-device-register's sota dir).
DEVICE_KEY = "pkey.pem"
DEVICE_CERT = "client.pem"
DEVICE_ROOT = "root.crt"
DEVICE_CHAINED = "client.chained"
SOTA_TOML = "sota.toml"
DEVICE_SQL = "sql.db"  # aktualizr-lite's database: with client.pem, "this sota dir is registered"
DEVICE_CSR = "device-cert.csr"
DEVICE_CONF = "device-cert.conf"
DEVICE_EXT = "device-cert.ext"

# --- EST (RFC 7030): the service that renews device certificates -----------------------------

EST_DOMAIN = "est.foundries.io"  # fioctl: "an EST server at <repoid>.est.foundries.io"
EST_PORT = 8443  # fioctl's `--est-port` default
EST_RESOURCE = "/.well-known/est"  # fioctl's `--est-resource` default, RFC 7030's path
EST_CACERTS = "cacerts"
EST_SIMPLEENROLL = "simpleenroll"
EST_SIMPLEREENROLL = "simplereenroll"
EST_CSR_TYPE = "application/pkcs10"  # a base64 DER CSR (RFC 7030 4.2.1)
EST_CERTS_TYPE = "application/pkcs7-mime; smime-type=certs-only"  # a base64 DER PKCS#7 (4.1.3, 4.2.3)
EST_DEVICE_DAYS = 365  # what Foundries' estserver issues, capped at its CA's notAfter

# --- Keys ---------------------------------------------------------------------------------------

CURVE_OPENSSL = "prime256v1"  # the curve's OpenSSL name, as the scripts write it
CURVE_SEC = "secp256r1"  # the same curve as `cryptography` names it
CURVE_NIST = "P-256"
# DER of the namedCurve OID 1.2.840.10045.3.1.7: `EC PARAMETERS` blocks and CKA_EC_PARAMS.
CURVE_OID_DER = bytes.fromhex("06082a8648ce3d030107")

# --- Named certificate profiles ---------------------------------------------------------------


@dataclass(frozen=True)
class Validity:
    """How long each certificate of a profile is valid, in days."""

    root: int
    gateway_tls: int
    device_ca: int


# The API's scripts (2020-2023, and as fioctl keeps them in x509/bash.go) and fioca's own
# bundled scripts: `-days 7300` for the root, `-days 3650` for the others.
SCRIPT_VALIDITY = Validity(root=7300, gateway_tls=3650, device_ca=3650)
# fioctl's Go PKI (v0.37 on): 20 and 10 calendar years from the day of issue.
GO_YEARS = Validity(root=20, gateway_tls=10, device_ca=10)

ROOT_CN = "Factory-CA"  # the root's CN in every profile (fioctl: factoryCaName)

# Serial numbers: OpenSSL (`req -x509`, `-CAcreateserial`) draws 159 random bits, fioctl's Go
# PKI 160 (so a Go serial can take 21 octets in DER).
OPENSSL_SERIAL_BITS = 159
GO_SERIAL_BITS = 160
# Fewer bits than this and a serial was not drawn at random (a counter, a chosen value).
RANDOM_SERIAL_MIN_BITS = 64

# What breaks trust whatever the profile: keys and digests every verifier treats as weak.
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
WEAK_DIGESTS = ("md5", "sha1")

# How far apart a signer's clock and ours may be ("not yet valid", "expired").
CLOCK_SKEW_MINUTES = 5
# The upload check: a certificate fioca uploads was made at most this long before it was stored.
UPLOAD_NOT_BEFORE_MINUTES = 15

# Device certificates.
OFFLINE_DEVICE_DAYS = 30  # the seed procedure: OpenSSL's default (its `days=3650` is ignored)
DOCUMENTED_DEVICE_DAYS = 3650  # the current documentation signs with `-days 3650`
REGISTERED_DEVICE_DAYS = 7300  # factory-registration-ref and the online CA: 20 years

CRL_NEXT_UPDATE_MINUTES = 15

# --- CRL reason codes (RFC 5280), as the backend reads them ----------------------------------

CRL_REASON_CODES = {
    "disable": 6,  # certificateHold: reversible; known devices keep working, new ones refused
    "enable": 8,  # removeFromCRL: undoes a disable (for API integrators; fioctl has no command)
    "revoke": 9,  # privilegeWithdrawn, as fioctl sends: permanent
}
