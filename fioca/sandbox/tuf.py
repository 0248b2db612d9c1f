"""The gateway's TUF probes: a one-key repository with signed root metadata and empty targets.

`GET /repo/1.root.json` (or `/repo/root.json`) and `GET /repo/targets.json` are what a device or
a user probes the gateway with (PKI-SPEC section 7). The key (Ed25519) and 1.root.json are made
once per data dir and kept, 0600.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fioca.sandbox.files import write_private_file

REPO_KEY = "gateway-repo.key"
REPO_ROOT = "gateway-repo-root.json"
ROOT_VALIDITY = timedelta(days=365)
TARGETS_VALIDITY = timedelta(days=30)


def canonical_json(value: Any) -> bytes:
    """TUF's canonical form: sorted keys, no spaces (enough for the ASCII metadata here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _expires(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class TufRepo:
    """A one-key TUF repository: signed root metadata (made once) and empty targets."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, root_json: bytes):
        self._key = key
        self.root_json = root_json
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public.hex()}}
        self.key_id = hashlib.sha256(canonical_json(self.public_key)).hexdigest()

    @classmethod
    def ensure(cls, data_dir: Path) -> TufRepo:
        """The repo of this data dir: its key and 1.root.json are made once and kept."""
        key_path, root_path = data_dir / REPO_KEY, data_dir / REPO_ROOT
        if key_path.exists() and root_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ed25519.Ed25519PrivateKey)
            return cls(key, root_path.read_bytes())
        key = ed25519.Ed25519PrivateKey.generate()
        repo = cls(key, b"")
        repo.root_json = json.dumps(repo._root_metadata(), indent=2).encode("utf-8") + b"\n"
        write_private_file(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        write_private_file(root_path, repo.root_json)
        return repo

    def _signed(self, signed: dict[str, Any]) -> dict[str, Any]:
        signature = self._key.sign(canonical_json(signed))
        return {"signatures": [{"keyid": self.key_id, "sig": signature.hex()}], "signed": signed}

    def _root_metadata(self) -> dict[str, Any]:
        role = {"keyids": [self.key_id], "threshold": 1}
        return self._signed(
            {
                "_type": "root",
                "spec_version": "1.0.0",
                "version": 1,
                "expires": _expires(ROOT_VALIDITY),
                "consistent_snapshot": False,
                "keys": {self.key_id: self.public_key},
                "roles": {"root": role, "targets": dict(role), "snapshot": dict(role), "timestamp": dict(role)},
            }
        )

    def targets(self) -> bytes:
        metadata = self._signed(
            {"_type": "targets", "spec_version": "1.0.0", "version": 1, "expires": _expires(TARGETS_VALIDITY), "targets": {}}
        )
        return json.dumps(metadata, indent=2).encode("utf-8") + b"\n"
