"""An EST enrolment on the gateway's event loop: its write (the pending key) must not stop the
loop, which serves every device of the process, while another process holds the database."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from test_est_protocol import est_curl, openssl_csr, subject_of
from test_keys_ca_helpers import created, created_template  # noqa: F401  (fixtures)

from tests.est_support import authorized, device_status, offline_devices
from tests.test_device_support import Factory


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("est-loop"))
    yield made
    made.stop()


def test_an_enrolment_does_not_stop_the_loop_while_the_database_is_locked(factory, tmp_path):
    hosts = authorized(factory)
    enrolling, other = offline_devices(factory, tmp_path / "fleet", count=2)
    assert device_status(hosts, enrolling) == 200 and device_status(hosts, other) == 200
    _key, csr = openssl_csr(tmp_path, subject_of(enrolling))
    locker = sqlite3.connect(factory.sandbox.store.path, isolation_level=None, timeout=1)
    locker.execute("BEGIN IMMEDIATE")  # another process's write lock, as `fioca devices` might hold
    enrol = threading.Thread(target=est_curl, args=(hosts, enrolling, "simpleenroll"),
                             kwargs={"data": csr, "content_type": "application/pkcs10"})
    try:
        enrol.start()
        time.sleep(1)
        started = time.monotonic()
        assert device_status(hosts, other) == 200
        assert time.monotonic() - started < 3, "the loop waited for the database with the enrolment"
    finally:
        locker.rollback()
        locker.close()
        enrol.join()
