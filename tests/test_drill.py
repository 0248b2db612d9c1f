"""The CA-compromise drill, whole, on the sandbox: 204 legitimate devices and 21 of the attacker's
(from a stolen copy of the local CA). After each of fioctl's five steps the gateway is asked,
as every device, who it lets in; at the end every legitimate device works with a certificate
from the new CA, every rogue one is refused, and nothing was lost."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fioca import facts
from fioca.pki import profiles
from tests.drill import ACCEPTED, HANDSHAKE_REFUSED, REFUSED, Drill
from tests.est_support import curl, uuid_of
from tests.test_device_support import Factory


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    base = tmp_path_factory.mktemp("drill")
    factory = Factory(base / "factory")
    made = Drill(factory, base)
    made.prepare()
    yield made
    factory.stop()


def counts(**groups: dict) -> dict[str, Counter]:
    return {name: Counter(statuses) for name, statuses in groups.items()}


def test_the_whole_recovery(drill: Drill):
    fleet = drill.fleet
    legit, early, late = len(fleet.legit), len(fleet.rogue_early), len(fleet.rogue_late)
    assert legit >= 200 and early and late

    # The compromise: the attacker's early devices got in; the clone never did (its UUID is pinned).
    assert drill.who_gets_in(skip=("rogue late",)) == counts(
        legit={ACCEPTED: legit}, **{"rogue early": {ACCEPTED: early}, "clone": {REFUSED: 1}}
    )

    # 1. Disable the CA: known devices keep working, new ones are refused.
    drill.disable()
    assert drill.who_gets_in() == counts(legit={ACCEPTED: legit}, **{"rogue early": {ACCEPTED: early},
                                         "rogue late": {REFUSED: late}, "clone": {REFUSED: 1}})  # fmt: skip
    # ... the late ones were never registered, so the clean-up below has nothing of theirs to find.

    # 2. Clean up: the devices of the compromised CA that are not in the inventory are deleted.
    deleted = drill.clean_up()
    assert sorted(deleted) == sorted(uuid_of(folder) for folder in fleet.rogue_early)
    denied = drill.factory.run("device", "list-denied")
    assert denied.exit_code == 0 and sorted(line.split()[0] for line in denied.stdout.splitlines()[2:]) == sorted(deleted)
    expected = counts(legit={ACCEPTED: legit}, **{"rogue early": {REFUSED: early}, "rogue late": {REFUSED: late},
                      "clone": {REFUSED: 1}})  # fmt: skip
    assert drill.who_gets_in() == expected

    # 3. A new device CA: nothing changes at the gateway.
    drill.add_device_ca()
    new_ca = drill.online_ca()
    assert drill.who_gets_in() == expected

    # 4. Rotate every legitimate device over EST; the attacker's devices cannot.
    rotated = drill.rotate()
    assert (rotated["rotated"], rotated["failed"]) == (legit, 0)
    for folder in fleet.legit:
        cert = profiles.load_cert((folder / facts.DEVICE_CERT).read_bytes(), facts.DEVICE_CERT)
        assert cert.issuer == new_ca.subject
        profiles.check_device_cert(cert, ca=new_ca, factory="acme", uuid=uuid_of(folder))
    attempt = drill.factory.run("device", "rotate-cert", *fleet.rogue, "--format", "json")
    assert attempt.exit_code == 1
    assert {device["status"] for device in json.loads(attempt.stdout)["devices"]} == {"failed"}
    assert drill.who_gets_in() == expected
    # The key pin moved: every legitimate device's old pair is refused now.
    assert set(drill.statuses(fleet.offline, pairs=("pkey.pem.bak", "client.pem.bak"))) == {REFUSED}

    # 5. Revoke the old CA: its certificates fail the handshake, the rotated fleet works.
    drill.revoke()
    assert drill.who_gets_in() == counts(legit={ACCEPTED: legit}, **{"rogue early": {HANDSHAKE_REFUSED: early},
                                         "rogue late": {HANDSHAKE_REFUSED: late}, "clone": {HANDSHAKE_REFUSED: 1}})  # fmt: skip
    assert set(drill.statuses(fleet.offline, pairs=("pkey.pem.bak", "client.pem.bak"))) == {HANDSHAKE_REFUSED}

    # Nothing lost: the factory knows exactly the inventory, each device on the new CA's key pin.
    devices = drill.factory.devices()
    assert set(devices) == {uuid_of(folder) for folder in fleet.legit}
    assert {device["ca_serial"] for device in devices.values()} == {str(new_ca.serial_number)}
    # And a client fioca did not write agrees, for one device of each kind.
    for folder in (fleet.offline[0], fleet.registered[0]):
        answer = curl(drill.hosts, drill.hosts.gateway, "/device", cacert=folder / "root.crt",
                      cert=folder / "client.pem", key=folder / "pkey.pem")  # fmt: skip
        assert answer.status == 200
    rogue = fleet.rogue_early[0]
    assert curl(drill.hosts, drill.hosts.gateway, "/device", cacert=rogue / "root.crt", cert=rogue / "client.pem",
                key=rogue / "pkey.pem").status is None  # fmt: skip
