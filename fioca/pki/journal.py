"""The create journal: what an unfinished `keys ca create` has done, so `--resume` can finish it.

The root of trust can be set only once, and its key exists only on this machine: a crash,
a lost answer or a server error halfway must leave a PKI dir that can be finished, never a
second root. The journal lives in the PKI dir (`.fioca-create.json`, 0600) and is replaced
atomically after every change; it records each finished step with the SHA-256 of the files
it kept, the choices the run was started with, and, while scripts run, which ones: their
work dirs may hold a copy of the root key. A successful run removes it.

It holds no secret: names, choices and digests only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

from fioca import facts
from fioca.errors import PkiDirError
from fioca.pki.files import PkiDir

VERSION = 2


@dataclass
class Journal:
    pki: PkiDir
    factory: str
    online_ca: bool
    local_ca: bool
    hsm: bool
    local_ca_cn: str
    answer_sha256: str
    no_jail: bool = False
    reissue: bool = False
    steps: dict[str, dict[str, str]] = field(default_factory=dict)  # script -> {file: sha256}
    made: dict[str, str] = field(default_factory=dict)  # script -> when it ran (ISO 8601, UTC)
    running: list[str] = field(default_factory=list)  # the scripts whose work dirs may exist now
    version: int = VERSION

    @classmethod
    def load(cls, pki: PkiDir) -> Journal:
        where = pki / facts.JOURNAL_FILE
        try:
            data = json.loads(pki.read_bytes(facts.JOURNAL_FILE))
        except (ValueError, UnicodeDecodeError):
            raise PkiDirError(f"the create journal {where} is not readable JSON; it is fioca's own record of the run") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise PkiDirError(f"the create journal {where} is from another fioca version; finish that run with it")
        known = {f.name for f in fields(cls)} - {"pki"}
        running = data.get("running")
        if running is None or isinstance(running, str):  # the one-script-at-a-time format: a name, or null
            data["running"] = [running] if running else []
        try:
            return cls(pki=pki, **{key: value for key, value in data.items() if key in known})
        except TypeError:
            raise PkiDirError(f"the create journal {where} is incomplete") from None

    @classmethod
    def begin(cls, pki: PkiDir, **values) -> Journal:
        journal = cls(pki=pki, **values)
        journal.save()
        return journal

    def save(self) -> None:
        data = asdict(self)
        data.pop("pki")
        self.pki.replace(facts.JOURNAL_FILE, (json.dumps(data, indent=2) + "\n").encode(), facts.RECORD_MODE)

    def record_step(self, script: str, kept: dict[str, str], *, made_at: datetime) -> None:
        """A finished step (its work dir is gone): what it kept, and when it ran."""
        self.steps[script] = dict(kept)
        self.made[script] = made_at.isoformat()
        self.running = [name for name in self.running if name != script]
        self.save()

    def made_at(self, script: str) -> datetime:
        """When the step ran: its certificates' notBefore must lie close to it."""
        return datetime.fromisoformat(self.made[script])

    def restart_steps(self, scripts: list[str], *, answer_sha256: str) -> None:
        """Forget finished steps (their files were moved aside) for a new answer."""
        for script in scripts:
            self.steps.pop(script, None)
            self.made.pop(script, None)
        self.answer_sha256 = answer_sha256
        self.save()

    def note_running(self, scripts: list[str]) -> None:
        """The scripts whose work dirs exist from now on (before they are made, and after
        they are gone), so that an interrupted run says where a copy of the root key may be."""
        self.running = list(scripts)
        self.save()

    def fingerprints(self) -> dict[str, str]:
        """Every file the finished steps kept, with its SHA-256."""
        return {name: digest for kept in self.steps.values() for name, digest in kept.items()}

    def progress(self) -> str:
        done = ", ".join(self.steps) or "no script"
        text = f"finished: {done}"
        if self.running:
            text += f"; stopped inside {' and '.join(self.running)}"
            # The work dirs still there (an earlier version's run kept its one as .fioca-work).
            left = [self.pki / name for name in (*map(facts.work_dir_of, self.running), facts.WORK_DIR) if self.pki.has(name)]
            if left:
                text += f", whose work dir{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} may hold a copy of the root key"
        return text

    def finish(self) -> None:
        self.pki.remove(facts.JOURNAL_FILE)
