"""The CA-compromise drill on a sandbox (no tests here; test_drill.py and bench_est.py run it).

fioctl documents the recovery from a compromised device CA in five steps: disable the CA,
clean up the devices it let in, add a new device CA, rotate every legitimate device's
certificate over EST, revoke the old CA. `Drill` runs each as the README's walkthrough does,
with the real CLI, on a factory whose local CA's key was stolen:

- the legitimate fleet: offline devices from the local CA (their folders are the inventory)
  and a few devices registered online (lmp-device-register's way, from the online CA);
- the attacker's devices, from a copy of the local CA: some connected before the compromise was
  found (the gateway registered them), some try after; and a clone of a legitimate UUID with
  the attacker's key.

`who_gets_in()` asks the gateway, as each device, with the pair its sota.toml names (or the
rogue folder's own), over a pool of plain `ssl` connections (a client fioca did not write).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fioca import facts
from fioca.device import check
from fioca.pki import profiles
from tests.est_support import Hosts, authorized, offline_devices, uuid_of
from tests.test_device_support import Factory

ACCEPTED, REFUSED, HANDSHAKE_REFUSED = 200, 403, None


@dataclass
class Fleet:
    offline: list[Path]
    registered: list[Path]
    rogue_early: list[Path]  # connected before the compromise was found
    rogue_late: list[Path]  # try only after
    clone: Path  # a legitimate UUID with the attacker's key

    @property
    def legit(self) -> list[Path]:
        return [*self.offline, *self.registered]

    @property
    def rogue(self) -> list[Path]:
        return [*self.rogue_early, *self.rogue_late, self.clone]


@dataclass
class Drill:
    factory: Factory
    base: Path
    legit_offline: int = 200
    legit_registered: int = 4
    rogue_early_count: int = 12
    rogue_late_count: int = 8
    hosts: Hosts = field(init=False)
    fleet: Fleet = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)

    # --- The factory before the compromise is found ---------------------------------------------

    def prepare(self) -> None:
        """EST authorized, the legitimate fleet out, the attacker's devices made (and the early
        ones in), every legitimate device registered at the gateway."""
        self.hosts = authorized(self.factory)
        offline = offline_devices(self.factory, self.base / "fleet", self.legit_offline)
        registered = [self._register(index) for index in range(self.legit_registered)]
        stolen = self._stolen_copy()
        rogue = offline_devices(self.factory, self.base / "rogue", self.rogue_early_count + self.rogue_late_count, pki=stolen)
        [clone] = offline_devices(self.factory, self.base / "clone", pki=stolen, uuid=uuid_of(offline[0]))
        self.fleet = Fleet(offline, registered, rogue[: self.rogue_early_count], rogue[self.rogue_early_count :], clone)
        statuses = self.statuses([*self.fleet.legit, *self.fleet.rogue_early, self.fleet.clone])
        assert set(statuses[:-1]) == {ACCEPTED} and statuses[-1] == REFUSED, statuses

    def _register(self, index: int) -> Path:
        sota_dir = self.base / "registered" / f"sota-{index}"
        sota_dir.mkdir(parents=True, mode=0o700)
        result = self.factory.run("device", "register", "--sota-dir", sota_dir, "--name", f"online-{index}", "--hwid", "rpi4", "-t", "main")
        assert result.exit_code == 0, result.stderr
        return sota_dir

    def _stolen_copy(self) -> Path:
        """What the attacker holds: the local CA's key and what create-offline reads beside it."""
        stolen = self.base / "stolen-pki"
        stolen.mkdir(mode=0o700)
        for name in (facts.ROOT_CERT, facts.LOCAL_CA_CERT, facts.LOCAL_CA_KEY, facts.TLS_CERT):
            shutil.copy(self.factory.pki / name, stolen / name)
        return stolen

    # --- The five steps ---------------------------------------------------------------------------

    def disable(self) -> None:
        self._cli("disable", "keys", "ca", "disable-device-ca", self.factory.pki, "--ca-file", facts.LOCAL_CA_CERT, "--yes")

    def clean_up(self) -> list[str]:
        """Delete every device the compromised CA let in that is not in the inventory."""
        started = time.perf_counter()
        compromised = str(self.local_ca().serial_number)
        inventory = {uuid_of(folder) for folder in self.fleet.legit}
        rogue = [uuid for uuid, device in self.factory.devices().items()
                 if device["ca_serial"] == compromised and uuid not in inventory]  # fmt: skip
        for uuid in rogue:
            result = self.factory.run("sandbox", "delete-device", "--data", self.factory.sandbox.data_dir, uuid)
            assert result.exit_code == 0, result.stderr
        self.timings["clean up"] = time.perf_counter() - started
        return rogue

    def add_device_ca(self) -> None:
        self._cli("add", "keys", "ca", "add-device-ca", self.factory.pki, "--online-ca", "--yes", "--via", "inprocess")

    def rotate(self) -> dict:
        result = self._cli("rotate", "device", "rotate-cert", self.base / "fleet", self.base / "registered", "--fleet",
                           "--format", "json")  # fmt: skip
        return json.loads(result.stdout)

    def revoke(self) -> None:
        serial = str(self.local_ca().serial_number)
        self._cli("revoke", "keys", "ca", "revoke-device-ca", self.factory.pki, "--ca-serial", serial, "--yes")

    def _cli(self, step: str, *argv: object):
        started = time.perf_counter()
        result = self.factory.run(*argv)
        self.timings[step] = time.perf_counter() - started
        assert result.exit_code == 0, result.stderr
        return result

    # --- Who the gateway lets in ------------------------------------------------------------------

    def local_ca(self):
        return profiles.load_cert((self.factory.pki / facts.LOCAL_CA_CERT).read_bytes(), facts.LOCAL_CA_CERT)

    def online_ca(self):
        return profiles.load_cert((self.factory.pki / facts.ONLINE_CA_CERT).read_bytes(), facts.ONLINE_CA_CERT)

    def who_gets_in(self, *, skip: tuple[str, ...] = ()) -> dict[str, Counter]:
        """{group: Counter of the gateway's answers}; a device asking registers it, so the late
        rogues are `skip`ped until the compromised CA is disabled."""
        groups = {"legit": self.fleet.legit, "rogue early": self.fleet.rogue_early,
                  "rogue late": self.fleet.rogue_late, "clone": [self.fleet.clone]}  # fmt: skip
        groups = {name: folders for name, folders in groups.items() if name not in skip}
        flat = [folder for folders in groups.values() for folder in folders]
        answers = dict(zip(flat, self.statuses(flat)))
        return {name: Counter(answers[folder] for folder in folders) for name, folders in groups.items()}

    def statuses(self, folders: list[Path], *, pairs: tuple[str, str] | None = None) -> list[int | None]:
        """The gateway's answer to GET /device for each folder, as the device: the pair its
        sota.toml names (`pairs`: these key and certificate file names instead)."""

        def one(folder: Path) -> int | None:
            sota_text = (folder / facts.SOTA_TOML).read_text() if (folder / facts.SOTA_TOML).exists() else None
            key, cert = check.key_and_cert(folder, sota_text) if pairs is None else (folder / pairs[0], folder / pairs[1])
            return gateway_status(self.hosts, folder / facts.DEVICE_ROOT, cert, key)

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, folders))


def gateway_status(hosts: Hosts, root: Path, cert: Path, key: Path) -> int | None:
    """One mTLS GET /device with plain `ssl`; None when the gateway refuses the handshake."""
    context = ssl.create_default_context(cafile=str(root))
    context.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", hosts.port), timeout=10) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw, server_hostname=hosts.gateway) as tls:
                tls.sendall(f"GET /device HTTP/1.1\r\nHost: {hosts.gateway}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
    except (ssl.SSLError, OSError):
        return HANDSHAKE_REFUSED
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else HANDSHAKE_REFUSED
