"""A small factory-registration-ref for tests: its `/sign` API as its public source behaves
(`registration_ref/app.py`, `crypto.py`, `sota_toml.py`), written here from those facts.

- plain HTTP on a random loopback port (the reference runs behind docker-compose on port 80);
  only `POST /sign`: any other method there is 405 (Flask's answer), any other path 404;
- errors are the description as the body (Flask's `make_response(description)`, text/html);
- the CSR is signed by a local CA from a PKI dir (`local-ca.pem`/`.key`; the root answered as
  `root.crt` is `factory_ca.pem`): subject copied from the CSR, whose OU must be the CA's
  ("Invalid factory(x) must be y"), serial = the UUID as a 128-bit number, 7300 days, keyUsage
  critical digitalSignature, extendedKeyUsage critical clientAuth, an AKID from the CA's key and
  no other extension; `client.chained` = certificate + "\\n" + CA;
- `group` in the body is refused (400); `hardware-id` and `csr` are required;
- with `foundries=(devices URL, token, CA bundle)`, the signed certificate is first created in
  the factory by `PUT /ota/devices/ {"client.pem", "name"}` (the reference's API token mode);
- every device signed is logged in `devices_dir/<uuid>` (its public key), as the reference does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 7300


class Refused(Exception):
    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


def sota_toml(hwid: str, overrides: dict[str, dict[str, Any]], sota_dir: str, gateway: str, ostree: str) -> str:
    """The reference's layout: its six sections, overrides merged in (new sections after), an
    empty or missing value as `# key is not set`, placeholders filled in every value."""
    sections: dict[str, dict[str, Any]] = {
        "tls": {"server": '"{gw}"', "ca_source": '"file"', "pkey_source": '"file"', "cert_source": '"file"'},
        "provision": {"server": '"{gw}"', "primary_ecu_hardware_id": '"{hwid}"'},
        "uptane": {"repo_server": '"{gw}/repo"', "key_source": '"file"'},
        "pacman": {"type": '"ostree+compose_apps"', "ostree_server": '"{ostree}/ostree"'},
        "storage": {"type": '"sqlite"', "path": '"{sota}/"'},
        "import": {
            "tls_cacert_path": '"{sota}/root.crt"',
            "tls_pkey_path": '"{sota}/pkey.pem"',
            "tls_clientcert_path": '"{sota}/client.pem"',
        },
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None or value == "":
                lines.append(f"# {key} is not set")
            else:
                filled = str(value).replace("{gw}", gateway).replace("{ostree}", ostree)
                lines.append(f"{key} = {filled.replace('{hwid}', hwid).replace('{sota}', sota_dir)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@dataclass
class RegistrationRef:
    pki_dir: Path
    devices_dir: Path
    gateway_server: str = "https://ec056c71-5d4b-4c3e-9b0e-6d1f0a2b3c4d.ota-lite.foundries.io:8443"
    ostree_server: str = "https://ec056c71-5d4b-4c3e-9b0e-6d1f0a2b3c4d.ostree.foundries.io:8443"
    foundries: tuple[str, str, str] | None = None
    root_pem: str | None = None  # what it answers as root.crt (default: the PKI dir's factory_ca.pem)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca_pem = (self.pki_dir / "local-ca.pem").read_text()
        self.ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
        self.ca_key = serialization.load_pem_private_key((self.pki_dir / "local-ca.key").read_bytes(), None)
        self.root_pem = self.root_pem or (self.pki_dir / "factory_ca.pem").read_text()
        self.devices_dir.mkdir(parents=True, exist_ok=True)
        ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ref.requests.append((self.command, self.path, raw))
                if self.path.split("?")[0] != "/sign":
                    return self._send(404, "text/html; charset=utf-8", b"Not Found")
                if self.command != "POST":
                    return self._send(405, "text/html; charset=utf-8", b"Method Not Allowed")
                try:
                    answer = ref.sign(json.loads(raw) if raw else None)
                except Refused as refused:
                    return self._send(refused.status, "text/html; charset=utf-8", refused.description.encode())
                self._send(201, "application/json", json.dumps(answer).encode())

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_POST = do_GET = do_HEAD = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sign"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the reference's /sign

    def sign(self, data: Any) -> dict[str, str]:
        if not data:
            raise Refused(400, "Missing request body")
        csr_pem = data.get("csr")
        if not csr_pem:
            raise Refused(400, "Missing required field 'csr'")
        if not isinstance(csr_pem, str):
            raise Refused(400, "Invalid data type for 'csr'")
        hwid = data.get("hardware-id")
        if not hwid:
            raise Refused(400, "Missing required field 'hardware-id'")
        if data.get("group"):
            raise Refused(400, "Registration-reference does not support 'group' field")
        cert, uuid = self._signed(csr_pem)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        if self.foundries:
            self._create_in_foundries(cert_pem, data.get("name") or None)
        public = cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (self.devices_dir / uuid).write_bytes(public)
        toml = sota_toml(hwid, data.get("overrides") or {}, data.get("sota-config-dir") or "/var/sota",
                         self.gateway_server, self.ostree_server)  # fmt: skip
        return {"root.crt": self.root_pem, "sota.toml": toml, "client.pem": cert_pem, "client.chained": cert_pem + "\n" + self.ca_pem}

    def _signed(self, csr_pem: str) -> tuple[x509.Certificate, str]:
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as error:
            raise Refused(400, str(error)) from None
        factory = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        uuid = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        ours = self.ca.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        if factory != ours:
            raise Refused(400, f"Invalid factory({factory}) must be {ours}")
        now = datetime.now(UTC)
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)  # fmt: skip
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .serial_number(int(uuid.replace("-", ""), 16))
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=DAYS))
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert, uuid

    def _create_in_foundries(self, cert_pem: str, name: str | None) -> None:
        url, token, cacert = self.foundries  # type: ignore[misc]
        body = {"client.pem": cert_pem, **({"name": name} if name else {})}
        answer = requests.put(url, json=body, headers={"OSF-TOKEN": token}, verify=cacert, timeout=10)
        if answer.status_code == 409:
            raise Refused(409, answer.text)
        if not answer.ok:
            raise Refused(500, answer.text)
