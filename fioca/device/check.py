"""The document's last step: an mTLS request to the gateway as the device (PKI-SPEC section 8).

The equivalent of
    curl --cacert factory_ca.pem --cert client.pem --key pkey.pem https://<host>:<port>/device
through `fioca.api.device_get`: the gateway host is `tls-crt`'s first DNS name (or, with
no PKI dir, the host of `[tls] server` in the device's sota.toml); the gateway is verified
against the factory root (`factory_ca.pem`, else the device's `root.crt`) for that host name;
the TCP connection goes to the host, or to the address a `--resolve`/gateway URL names, with
SNI = the host, as curl's `--resolve` does.

What the gateway said is the result: accepted (200 and the /device JSON), refused by a rule
(403 and its message), or refused in the TLS handshake (the device's CA is not trusted).
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from fioca import facts
from fioca.device import sota
from fioca.errors import CheckError, FiocaError, PkiDirError, UsageError
from fioca.pki import profiles

DEVICE_PATH = facts.DEVICE_PROBE_PATH
TIMEOUT_SECONDS = 10
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class DeviceFiles:
    cert: Path
    key: Path
    root: Path
    host: str
    port: int
    uuid: str | None


@dataclass(frozen=True)
class Target:
    """Where the TCP connection goes; the TLS name stays `DeviceFiles.host`."""

    address: str
    port: int


@dataclass(frozen=True)
class CheckResult:
    accepted: bool
    host: str
    address: str
    port: int
    uuid: str | None
    status: int | None = None
    body: Any = None
    reason: str = ""
    stage: str = "http"  # "http" (the gateway answered) or "tls" (the handshake failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "stage": self.stage,
            "status": self.status,
            "reason": self.reason,
            "gateway": {"host": self.host, "address": self.address, "port": self.port},
            "uuid": self.uuid,
            "device": self.body if self.accepted else None,
        }


def key_and_cert(device_dir: Path, sota_text: str | None) -> tuple[Path, Path]:
    """The device's key and certificate files: those sota.toml's `[import]` names (by file name,
    in the folder), as aktualizr-lite finds them; else pkey.pem and client.pem. A certificate
    rotation switches both at once there (`fioca.device.rotate`)."""
    named = sota.import_paths(sota_text) if sota_text is not None else {}
    key = PurePosixPath(named.get(sota.KEY_PATH, facts.DEVICE_KEY)).name
    cert = PurePosixPath(named.get(sota.CERT_PATH, facts.DEVICE_CERT)).name
    return device_dir / key, device_dir / cert


def locate(device_dir: Path, pki_dir: Path | None = None) -> DeviceFiles:
    """The device's key and cert, the root to trust, and the gateway's host and port."""
    sota_path = device_dir / facts.SOTA_TOML
    sota_text = sota_path.read_text(encoding="utf-8", errors="replace") if sota_path.is_file() else None
    key, cert = key_and_cert(device_dir, sota_text)
    for path in (cert, key):
        if not path.is_file():
            raise PkiDirError(f"{path} does not exist; is {device_dir} a device folder (or sota dir)?")
    certificate = profiles.load_cert(cert.read_bytes(), cert.name)
    profiles.load_private_key(key.read_bytes(), key.name)  # readable, P-256 (EC PARAMETERS allowed)
    server = sota.gateway_server(sota_text) if sota_text is not None else None
    port = (urlsplit(server).port if server else None) or sota.GATEWAY_PORT
    if pki_dir is not None:
        root = pki_dir / facts.ROOT_CERT
        tls_path = pki_dir / facts.TLS_CERT
        if not tls_path.is_file() or not root.is_file():
            raise PkiDirError(f"{pki_dir} must hold {facts.ROOT_CERT} and {facts.TLS_CERT}")
        hosts = profiles.gateway_hosts(profiles.load_cert(tls_path.read_bytes(), facts.TLS_CERT))
        if not hosts:
            raise CheckError(facts.TLS_CERT, "has no DNS names: cannot tell the gateway's host")
        host = hosts[0]
    else:
        root = device_dir / "root.crt"
        if not root.is_file():
            raise PkiDirError(f"{root} does not exist; pass --pki-dir to use factory_ca.pem and tls-crt")
        host = urlsplit(server).hostname if server else None
        if not host:
            raise PkiDirError(f"no gateway host: {device_dir}/sota.toml has no [tls] server; pass --pki-dir")
    return DeviceFiles(cert=cert, key=key, root=root, host=host, port=port, uuid=profiles.subject_cn(certificate))


def parse_resolve(value: str) -> tuple[str, int | None, str]:
    """curl's `HOST:PORT:ADDR`, or `HOST:ADDR` (the port stays the gateway's)."""
    parts = value.split(":")
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) >= 3 and parts[0] and parts[1].isdigit():
        return parts[0], int(parts[1]), ":".join(parts[2:]).strip("[]")
    raise UsageError(f"--resolve {value!r} must be HOST:PORT:ADDR (as curl) or HOST:ADDR")


def target_for(device: DeviceFiles, *, resolve: str | None = None, gateway_url: str | None = None) -> Target:
    """The TCP target: --resolve for the gateway host, else a gateway URL, else the host itself."""
    if resolve:
        host, port, address = parse_resolve(resolve)
        if host != device.host:
            raise UsageError(f"--resolve names {host}, but the gateway host is {device.host}")
        return Target(address, port or device.port)
    if gateway_url:
        parts = urlsplit(gateway_url)
        if parts.scheme != "https" or not parts.hostname:
            raise UsageError(f"gateway URL {gateway_url!r} must look like https://ADDRESS:PORT")
        return Target(parts.hostname, parts.port or device.port)
    return Target(device.host, device.port)


def probe(device: DeviceFiles, target: Target, *, path: str = DEVICE_PATH, timeout: float = TIMEOUT_SECONDS) -> CheckResult:
    """One mTLS GET as the device; the gateway's answer, or why the handshake failed."""
    context = ssl.create_default_context(cafile=str(device.root))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(device.cert), str(device.key))
    except ssl.SSLError as error:
        raise CheckError("client.pem", f"key and certificate do not load together: {error.reason}") from None
    common = {"host": device.host, "address": target.address, "port": target.port, "uuid": device.uuid}
    from fioca import api  # requests: only for the probe, not for every `device` command

    try:
        status, status_reason, raw = api.device_get(
            device.host, target.port, target.address, context=context, path=path, timeout=timeout, max_body=MAX_BODY
        )
    except ssl.SSLCertVerificationError as error:
        return CheckResult(
            False, stage="tls", reason=f"the gateway's certificate does not verify against {device.root.name} "
            f"for {device.host}: {error.verify_message}", **common,
        )
    except ssl.SSLError as error:
        if not isinstance(error, ssl.SSLEOFError):
            return CheckResult(False, stage="tls", reason=_handshake_refusal(error), **common)
        return CheckResult(
            False, stage="tls", reason="the gateway closed the connection during the handshake (SSLEOFError): "
            "the device's CA is not trusted by the gateway", **common,
        )
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as error:
        # TLS 1.3: the client's handshake ends before the server judges its certificate, so a
        # refusal shows up as the connection closing on the first read.
        return CheckResult(
            False, stage="tls", reason=f"the gateway closed the connection during the handshake ({error.__class__.__name__}): "
            "the device's CA is not trusted by the gateway", **common,
        )
    except OSError as error:
        raise FiocaError(
            f"cannot reach the gateway {device.host} at {target.address}:{target.port}: {error.strerror or error}"
        ) from None
    body = _json_or_text(raw)
    if status == 200:
        return CheckResult(True, status=200, body=body, reason="accepted", **common)
    message = body.get("message") if isinstance(body, dict) else None
    reason = message or f"{status} {status_reason}".strip()
    return CheckResult(False, status=status, body=body, reason=str(reason), **common)


def _handshake_refusal(error: ssl.SSLError) -> str:
    reason = (error.reason or str(error)).lower().replace("_", " ")
    if any(word in reason for word in ("unknown ca", "certificate unknown", "bad certificate", "certificate required", "decrypt error")):
        return f"the gateway refused the device certificate in the TLS handshake ({reason}): its CA is not trusted"
    return f"TLS handshake failed: {reason}"


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", errors="replace")
