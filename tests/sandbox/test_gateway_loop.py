"""The gateway's event loop (gateway.GatewayLoop) and its group commit (Store.commit_device_writes):
one thread serves every connection of a process, so a device that stalls must delay nobody,
requests sent back to back on one connection are answered in order, and the writes of many
devices committed together still record each device once."""

from __future__ import annotations

import re
import select
import socket
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gateway_support import Factory, make_device, new_uuid, running_factory

from fioca.sandbox.store import DeviceWrites, Store, new_device


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with running_factory(tmp_path_factory.mktemp("gateway-loop")) as made:
        yield made


def _tls(factory: Factory, folder: Path) -> ssl.SSLSocket:
    return factory.gateway.tls(make_device(folder, factory.local_ca()), cafile=factory.root_file)


def _answers(tls: ssl.SSLSocket) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    received = b""
    while chunk := tls.recv(65536):
        received += chunk
    return received


def test_devices_that_stall_delay_nobody(factory: Factory, tmp_path: Path) -> None:
    silent = socket.create_connection(("127.0.0.1", factory.gateway.port), timeout=10)  # no ClientHello
    halfway = _tls(factory, tmp_path / "halfway")
    halfway.sendall(b"GET /device HTTP/1.1\r\nHost: ")  # a request that never ends
    try:
        device = make_device(tmp_path / "device", factory.local_ca())
        assert factory.get(device).status == 200
        # The twin: the stalled connections are still open and were answered nothing.
        assert select.select([silent, halfway], [], [], 0.2)[0] == []
    finally:
        silent.close()
        halfway.close()


def test_requests_sent_back_to_back_are_answered_in_order(factory: Factory, tmp_path: Path) -> None:
    with _tls(factory, tmp_path / "device") as tls:
        host = factory.gateway.host
        tls.sendall(f"GET /device HTTP/1.1\r\nHost: {host}\r\n\r\n"
                    f"GET /nothing HTTP/1.1\r\nHost: {host}\r\n\r\n"
                    f"GET /repo/1.root.json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answers = _answers(tls)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200", b"404", b"200"]


def test_nothing_is_answered_after_a_request_that_closes(factory: Factory, tmp_path: Path) -> None:
    with _tls(factory, tmp_path / "device") as tls:
        host = factory.gateway.host
        tls.sendall(f"GET /device HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                    f"GET /device HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answers = _answers(tls)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200"]
    assert b"Connection: close" in answers


def _new(uuid: str) -> DeviceWrites:
    return DeviceWrites(new={uuid: new_device(uuid=uuid, name=uuid, pubkey="PEM", is_prod=False, ca_serial="7",
                                              owner=None, group=None, seen=True)})


def test_a_group_commit_records_each_new_device_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    known, deleted, fresh = new_uuid(), new_uuid(), new_uuid()
    store.commit_device_writes(_new(known))
    store.commit_device_writes(_new(deleted))
    store.set_device_deny_listed(deleted)
    writes = _new(fresh)
    writes.new.update(_new(known).new)
    writes.new.update(_new(deleted).new)
    writes.seen[known] = "2030-01-01T00:00:00Z"
    assert store.commit_device_writes(writes) == {fresh}  # the others existed: left out
    assert store.device(known).last_seen == "2030-01-01T00:00:00Z"  # its last_seen, same transaction
    assert store.device(deleted).deny_listed  # a deleted uuid does not come back through a group
    assert [device.uuid for device in store.devices(include_deny_listed=True)].count(known) == 1
    # The twin: one device added alone says when its uuid exists.
    with pytest.raises(sqlite3.IntegrityError):
        store.add_device(uuid=known, name="again", pubkey="PEM")
    store.close()


def test_every_commit_of_the_store_is_fsynced(tmp_path: Path) -> None:
    """A registration the gateway answered is on the disk: SQLite's FULL (2) syncs the WAL at
    every commit; NORMAL, as before, syncs only at checkpoints."""
    store = Store(tmp_path)
    try:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
