"""Shared pieces of the EST tests, the drill and its benchmark (no tests here): a factory whose
EST server is authorized, its hosts, device folders, and curl as a client fioca did not write."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fioca import facts
from fioca.pki import profiles
from tests.test_device_support import Factory


@dataclass(frozen=True)
class Hosts:
    gateway: str  # tls-crt's first DNS name
    est: str  # est-tls-crt's one DNS name
    port: int  # where the sandbox gateway listens, for both


def hosts_of(pki: Path, port: int) -> Hosts:
    gateway = profiles.gateway_hosts(profiles.load_cert((pki / facts.TLS_CERT).read_bytes(), facts.TLS_CERT))[0]
    est_path = pki / facts.EST_TLS_CERT
    est = profiles.gateway_hosts(profiles.load_cert(est_path.read_bytes(), facts.EST_TLS_CERT))[0] if est_path.exists() else ""
    return Hosts(gateway, est, port)


def hosts_for(factory: Factory) -> Hosts:
    return hosts_of(factory.pki, factory.gateway_port)


def authorized(factory: Factory) -> Hosts:
    result = factory.run("keys", "est", "authorize", factory.pki, "--yes", "--via", "inprocess")
    assert result.exit_code == 0, result.stderr
    return hosts_for(factory)


def offline_devices(factory: Factory, out: Path, count: int = 1, *, pki: Path | None = None, uuid: str | None = None) -> list[Path]:
    """`device create-offline` from the factory's PKI dir (or `pki`, e.g. a stolen copy)."""
    one = ["--uuid", uuid] if uuid else ["--count", count]
    result = factory.run("device", "create-offline", pki or factory.pki, *one, "--out", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return [Path(device["path"]) for device in json.loads(result.stdout)["devices"]]


def uuid_of(folder: Path, cert: str = facts.DEVICE_CERT) -> str:
    return profiles.subject_cn(profiles.load_cert((folder / cert).read_bytes(), cert)) or ""


@dataclass(frozen=True)
class Curl:
    exit_code: int
    status: int | None
    headers: dict[str, str]
    body: bytes
    stderr: str


def curl(
    hosts: Hosts, host: str, path: str, *, cacert: Path, cert: Path | None = None, key: Path | None = None,
    data: Path | None = None, content_type: str | None = None, method: str | None = None,
) -> Curl:
    """curl as a device would run it (the document's line, with --resolve to the sandbox)."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(cacert), "--resolve", f"{host}:{hosts.port}:127.0.0.1",
                "-D", str(head), "-o", str(body)]  # fmt: skip
        if cert is not None and key is not None:
            argv += ["--cert", str(cert), "--key", str(key)]
        if data is not None:
            argv += ["--data-binary", f"@{data}"]
        if content_type is not None:
            argv += ["-H", f"Content-Type: {content_type}"]
        if method is not None:
            argv += ["-X", method]
        done = subprocess.run([*argv, f"https://{host}:{hosts.port}{path}"], capture_output=True, text=True, timeout=30)
        lines = head.read_text(errors="replace").splitlines() if head.exists() else []
        status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else None
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return Curl(done.returncode, status, headers, body.read_bytes() if body.exists() else b"", done.stderr)


def device_status(hosts: Hosts, folder: Path, *, key: str = facts.DEVICE_KEY, cert: str = facts.DEVICE_CERT) -> int | None:
    """What the gateway answers `GET /device` with this pair of the folder (curl), None when the
    handshake is refused."""
    answer = curl(hosts, hosts.gateway, "/device", cacert=folder / facts.DEVICE_ROOT, cert=folder / cert, key=folder / key)
    return answer.status if answer.exit_code == 0 else None


def openssl(*argv: str, input: bytes | None = None, cwd: Path | None = None) -> bytes:
    done = subprocess.run(["openssl", *argv], input=input, capture_output=True, cwd=cwd, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout
