"""The create journal: what an unfinished `keys ca create` has done, so `--resume` can finish it.

The root of trust can be set only once, and its key exists only on this machine: a crash,
a lost answer or a server error halfway must leave a PKI dir that can be finished, never a
second root. The journal lives in the PKI dir (`.fioca-create.json`, 0600) and is rewritten
atomically (temp file, fsync, rename) after every step; it records each finished step with
the SHA-256 of the files it produced, so a resumed run can tell a finished step from a
damaged one. A successful run removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fioca.errors import PkiDirError

JOURNAL_FILE = ".fioca-create.json"
WORK_DIR = ".fioca-work"
VERSION = 1


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Journal:
    path: Path
    factory: str
    online_ca: bool
    local_ca: bool
    hsm: bool
    local_ca_cn: str
    answer_sha256: str
    steps: dict[str, dict[str, str]] = field(default_factory=dict)  # script -> {file: sha256}
    stored: bool = False
    version: int = VERSION

    @classmethod
    def load(cls, pki_dir: Path) -> Journal | None:
        path = pki_dir / JOURNAL_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            raise PkiDirError(f"the create journal {path} is unreadable; it is fioca's own record, see SECURITY.md") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise PkiDirError(f"the create journal {path} is from another fioca version")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "path"}
        try:
            return cls(path=path, **fields)
        except TypeError:
            raise PkiDirError(f"the create journal {path} is incomplete") from None

    @classmethod
    def begin(cls, pki_dir: Path, **fields) -> Journal:
        journal = cls(path=pki_dir / JOURNAL_FILE, **fields)
        journal.save()
        return journal

    def save(self) -> None:
        data = asdict(self)
        data.pop("path")
        fd, tmp = tempfile.mkstemp(prefix=".fioca-create.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)  # the journal is fioca's own record: replaced by design
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def record_step(self, script: str, produced: dict[str, Path]) -> None:
        self.steps[script] = {name: sha256_file(path) for name, path in produced.items()}
        self.save()

    def fingerprints(self) -> dict[str, str]:
        """Every file the finished steps produced, with its SHA-256."""
        return {name: digest for produced in self.steps.values() for name, digest in produced.items()}

    def mark_stored(self) -> None:
        self.stored = True
        self.save()

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
