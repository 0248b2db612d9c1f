"""Shared pieces of the device tests (no tests here): a module-scoped factory, nginx, rogue certs.

`Factory` is one sandbox with a PKI made by the real `keys ca create` flow, shared by the
tests of a module (that flow runs four openssl scripts: too slow to repeat per test).
`Nginx` is Debian's nginx serving the same factory PKI: `tls-crt` with the key the backend
holds, `ssl_verify_client on`, trust = factory root + ca-crt. `bench_devices.py` uses both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from fioca import facts
from fioca.cli import main
from fioca.pki import profiles
from fioca.sandbox.server import Sandbox

FACTORY = "acme"
_CLEARED = ("FIOCTL_FACTORY", "FIOCTL_TOKEN", "FIOCTL_CONFIG", "CACERT", "FIOCA_SERVER", "TOKEN_HEADER")


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


class Factory:
    """A running sandbox factory with its PKI dir; `run(...)` is the real CLI in process."""

    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True)
        self.sandbox = Sandbox(base / "sandbox", factory=FACTORY, scripts="api-2026")
        self.sandbox.start()
        self.env = {"FIOCTL_CONFIG": str(self.sandbox.data_dir / "fioctl.yaml")}
        self.pki = base / "pki"
        created = self.run("keys", "ca", "create", self.pki, "--yes")
        assert created.exit_code == 0, created.stderr
        tls = profiles.load_cert((self.pki / facts.TLS_CERT).read_bytes(), facts.TLS_CERT)
        self.gateway_host = profiles.gateway_hosts(tls)[0]
        self.gateway_port = int(self.sandbox.info.gateway_url.rsplit(":", 1)[1])

    def run(self, *argv: object, env: dict[str, str] | None = None) -> Result:
        full_env: dict[str, str | None] = {name: None for name in _CLEARED}
        full_env.update(self.env if env is None else env)
        full_env["HOME"] = str(self.home)
        with CliRunner().isolation(env=full_env) as (out, err, _mixed):
            code = main([str(arg) for arg in argv])
            return Result(code, out.getvalue().decode(), err.getvalue().decode())

    def devices(self) -> dict[str, dict]:
        """`fioca sandbox devices --format json`, by uuid."""
        listed = self.run("sandbox", "devices", "--data", self.sandbox.data_dir, "--format", "json")
        assert listed.exit_code == 0, listed.stderr
        import json

        return {device["uuid"]: device for device in json.loads(listed.stdout)}

    def stop(self) -> None:
        self.sandbox.stop()


def curl_device(device_dir: Path, *, cwd: Path, port: int, host: str, cacert: str = "factory_ca.pem") -> tuple[int, str]:
    """The document's curl line (GET /device), with curl's --resolve; (HTTP status or -exit, body)."""
    done = subprocess.run(
        [
            "curl", "-sS", "--max-time", "10", "--cacert", cacert,
            "--cert", str(device_dir / "client.pem"), "--key", str(device_dir / "pkey.pem"),
            "--resolve", f"{host}:{port}:127.0.0.1", "-w", "\n%{http_code}",
            f"https://{host}:{port}/device",
        ],
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )
    if done.returncode != 0:
        return -done.returncode, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """Debian's nginx as a second, standard device gateway for the factory's PKI."""

    def __init__(self, factory: Factory, workers: str = "1"):
        self.prefix = Path(tempfile.mkdtemp(prefix="fioca-nginx-"))
        self.port = free_port()
        identity = factory.sandbox.backend.gateway_identity()
        assert identity is not None, "the factory has no gateway certificate yet"
        pki = factory.pki
        (self.prefix / "gateway.pem").write_text(identity.cert_pem)
        key = self.prefix / "gateway.key"
        key.write_text(identity.key_pem)
        key.chmod(0o600)
        # Trust = the factory root + ca-crt (online CA and local CA), as the gateway's bundle.
        trust = b"".join((pki / name).read_bytes() for name in (facts.ROOT_CERT, facts.ONLINE_CA_CERT, facts.LOCAL_CA_CERT))
        (self.prefix / "trust.pem").write_bytes(trust)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = self.prefix / "tmp"
        temp.mkdir()
        (self.prefix / "nginx.conf").write_text(
            f"""{user}worker_processes {workers};
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {factory.gateway_host};
        ssl_certificate {self.prefix}/gateway.pem;
        ssl_certificate_key {key};
        ssl_client_certificate {self.prefix}/trust.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location = /device {{
            default_type application/json;
            return 200 '{{"subject": "$ssl_client_s_dn", "verify": "$ssl_client_verify"}}\\n';
        }}
    }}
}}
"""
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [nginx, "-c", str(self.prefix / "nginx.conf"), "-p", str(self.prefix), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"nginx did not start: {err}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def rogue_device(folder: Path, *, factory: str = FACTORY, ou: str | None = None, local_ca: Path | None = None) -> Path:
    """A device folder whose cert is signed by a CA the factory never heard of (same names),
    or, with `local_ca` (a PKI dir), by the real local CA with the OU `ou`."""
    folder.mkdir(parents=True)
    now = datetime.now(UTC)
    if local_ca is None:
        ca_key = profiles.new_key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fio-rogue"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, factory)])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
    else:
        ca_key = profiles.load_private_key((local_ca / facts.LOCAL_CA_KEY).read_bytes(), "local-ca.key")
        ca_cert = profiles.load_cert((local_ca / facts.LOCAL_CA_CERT).read_bytes(), "local-ca.pem")
    key = profiles.new_key()
    import uuid as uuid_module

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(uuid_module.uuid4())),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou or factory)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "pkey.pem").write_bytes(profiles.private_key_pem(key))
    (folder / "client.pem").write_bytes(profiles.cert_pem(cert))
    return folder


def manual_procedure(pki: Path, device: str, uuid: str) -> subprocess.CompletedProcess:
    """PKI-SPEC section 8 typed by a person (run by the test, not by fioca); `uuidgen` is
    replaced by a fixed uuid (it is not installed everywhere)."""
    script = f"""set -e
FACTORY={FACTORY}
mkdir -p devices/{device}
openssl ecparam -genkey -name prime256v1 -out devices/{device}/pkey.pem
cat > devices/{device}/device-cert.conf <<EOF
[req]
prompt = no
days=3650
distinguished_name = req_dn

[req_dn]
# Device ID
commonName="{uuid}"
organizationalUnitName="${{FACTORY}}"
EOF
cat > devices/{device}/device-cert.ext <<EOF
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=critical,clientAuth
EOF
openssl req -new -config devices/{device}/device-cert.conf -key devices/{device}/pkey.pem -out devices/{device}/device-cert.csr
openssl x509 -req -in devices/{device}/device-cert.csr -CAcreateserial -extfile devices/{device}/device-cert.ext -CAkey local-ca.key -CA local-ca.pem -sha256 -out devices/{device}/client.pem
openssl x509 -noout -in tls-crt -ext subjectAltName
"""
    return subprocess.run(["sh", "-s"], input=script, cwd=pki, capture_output=True, text=True, timeout=60)


def python() -> str:
    return sys.executable
