"""`fioca device list-denied | delete-denied` against the sandbox: fioctl's table (tabby, padding
1), its paging and words, the owner column, and a deleted device coming back once freed."""

from __future__ import annotations

import uuid as uuid_module

from test_keys_ca_helpers import (  # noqa: F401
    Created,
    created,
    created_template,
    device_cert,
    probe_gateway,
)

from fioca.pki import profiles


def denied(created: Created, count: int, *, owner: str | None = "user") -> list[str]:
    """`count` deleted devices, oldest first (the sandbox lists them in that order)."""
    store = created.sandbox.store
    polis_id = store.factory().polis_id
    uuids = []
    for index in range(count):
        uuid = str(uuid_module.UUID(int=index + 1, version=4))
        store.add_device(uuid=uuid, name=f"dev-{index:02d}", pubkey="-", owner=polis_id if owner == "user" else owner)
        store.set_device_deny_listed(uuid)
        uuids.append(uuid)
    return uuids


def test_an_empty_deny_list_is_the_header_alone(cli, created):
    result = cli("device", "list-denied", env=created.env)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "UUID NAME OWNER\n---- ---- -----\n", "")


def test_the_table_is_fioctls(cli, created):
    mine = denied(created, 1)[0]
    store = created.sandbox.store
    orphan, stranger = (str(uuid_module.UUID(int=n, version=4)) for n in (100, 101))  # listed in this order
    store.add_device(uuid=orphan, name="a-much-longer-name", pubkey="-", owner=None)
    store.add_device(uuid=stranger, name="x", pubkey="-", owner="someone-else")
    for uuid in (orphan, stranger):
        store.set_device_deny_listed(uuid)
    result = cli("device", "list-denied", env=created.env)
    assert result.exit_code == 0, result.output
    rows = [("UUID", "NAME", "OWNER"), ("-" * 4, "-" * 4, "-" * 5), (mine, "dev-00", "Sandbox User"),
            (orphan, "a-much-longer-name", "<not in factory: acme>"), (stranger, "x", "<not in factory: acme>")]  # fmt: skip
    expected = "".join(f"{uuid:<37}{name:<19}{owner}\n" for uuid, name, owner in rows)
    assert result.stdout == expected


def test_pages_and_the_next_page_hint(cli, created):
    uuids = denied(created, 12)
    first = cli("device", "list-denied", "-n", "10", env=created.env)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:12]] == uuids[:10]
    assert lines[12:] == ["", "Next page can be viewed with: fioca device list-denied -p2 -n10"]
    second = cli("device", "list-denied", "--limit", "10", "--page", "2", env=created.env)
    assert [line.split()[0] for line in second.stdout.splitlines()[2:]] == uuids[10:]
    assert "Next page" not in second.stdout


def test_a_limit_fioctl_does_not_offer_is_refused(cli, created):
    result = cli("device", "list-denied", "-n", "7", env=created.env)
    assert result.exit_code == 2
    assert result.stderr == "ERROR: Invalid limit: 7\n"


def test_owners_unreadable_show_question_marks(cli, created):
    denied(created, 1)
    created.sandbox.inject_fault(method="GET", route="users", status=500, message="users are down")
    result = cli("device", "list-denied", env=created.env)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[2].endswith(" ???")
    assert result.stderr.startswith("Unable to look up users: HTTP error during GET")


def test_delete_denied_frees_the_uuid_and_the_device_comes_back(cli, created, tmp_path):
    uuid, cert_pem, key_pem = device_cert(created, "local-ca.pem")
    root = created.read("factory_ca.pem")
    gateway = profiles.gateway_hosts(created.cert("tls-crt"))[0]
    assert probe_gateway(created.sandbox, root, gateway, cert_pem, key_pem, tmp_path).status == 200
    other = denied(created, 1)[0]
    created.sandbox.store.set_device_deny_listed(uuid)
    assert probe_gateway(created.sandbox, root, gateway, cert_pem, key_pem, tmp_path).status == 403
    result = cli("device", "delete-denied", uuid, other, env=created.env)
    assert (result.exit_code, result.stdout) == (0, f"Deleting {uuid} .. ok\nDeleting {other} .. ok\n")
    assert cli("device", "list-denied", env=created.env).stdout == "UUID NAME OWNER\n---- ---- -----\n"
    # Freed, the uuid is new again: the gateway registers it on its next request.
    assert probe_gateway(created.sandbox, root, gateway, cert_pem, key_pem, tmp_path).status == 200


def test_delete_denied_of_an_unknown_uuid_stops_there(cli, created):
    kept = denied(created, 1)[0]
    unknown = str(uuid_module.uuid4())
    result = cli("device", "delete-denied", unknown, kept, env=created.env)
    assert result.exit_code == 6
    assert result.stdout == f"Deleting {unknown} .. "
    assert f"denied-devices/{unknown}/': 404 Not Found" in result.stderr
    assert f"= No deleted device has uuid {unknown}" in result.stderr
    assert kept in cli("device", "list-denied", env=created.env).stdout  # the next one was not tried


def test_a_uuid_that_is_a_path_stays_one_path_segment(cli, created):
    result = cli("device", "delete-denied", "../../certs", env=created.env)
    assert result.exit_code == 6
    assert "denied-devices/..%2F..%2Fcerts/'" in result.stderr


def test_fioctl_flags_after_the_command(cli, created):
    denied(created, 1)
    result = cli("device", "list-denied", "-f", "acme", env=created.env)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
    wrong = cli("device", "delete-denied", str(uuid_module.uuid4()), "-f", "other", env=created.env)
    assert wrong.exit_code == 6 and "/ota/factories/other/denied-devices/" in wrong.stderr
