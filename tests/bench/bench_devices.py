"""Devices at factory scale, side by side in one run (loopback only, bounded in count and time).

1. Offline issuance: fioca's in-process batch (every core) in devices/s, against the documented
   section 8 procedure typed into sh (openssl, one device at a time), against fioca's own
   `--faithful` path, and against `openssl speed ecdsap256` signs/s as a ceiling (a device
   costs at least one ECDSA sign for its CSR and one for its certificate).
2. New mTLS connections per second (`openssl s_time -new`, GET /device with a device cert):
   the sandbox gateway against nginx (worker_processes 1: one core, as the gateway's Python
   process mostly gets) serving the same factory PKI.

Both issuance procedures write to the same filesystem: BENCH_TMP, default /dev/shm (RAM),
so the figures measure the procedures, not a disk shared with other work (on this machine's
ext4 a directory create costs 0.3-6 ms depending on what else runs; the output says which).
The batch is also run with its folders on disk (BENCH_DISK_TMP, default /var/tmp) and
reported beside it.
Environment: BENCH_DEVICES (default 3000), BENCH_MANUAL (20), BENCH_STIME_SECONDS (5), BENCH_TMP,
BENCH_DISK_TMP.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid as uuid_module
from pathlib import Path

from fioca.device import offline
from tests.test_device_support import Factory, Nginx, manual_procedure

DEVICES = int(os.environ.get("BENCH_DEVICES", "3000"))
MANUAL = int(os.environ.get("BENCH_MANUAL", "20"))
STIME_SECONDS = int(os.environ.get("BENCH_STIME_SECONDS", "5"))
GOAL_RATE = 2000
GOAL_RATIO = 50


def in_process_rate(factory: Factory, out: Path, count: int) -> float:
    pki = offline.load_pki(factory.pki)
    specs = offline.plan_devices(count)
    start = time.perf_counter()
    made = offline.create_in_process(pki, offline.OfflineOptions(out_dir=out), specs)
    elapsed = time.perf_counter() - start
    assert len(made) == count
    return count / elapsed


def faithful_rate(factory: Factory, out: Path, count: int) -> float:
    pki = offline.load_pki(factory.pki)
    specs = offline.plan_devices(1) if count == 1 else offline.plan_devices(count)
    start = time.perf_counter()
    offline.create_faithful(pki, offline.OfflineOptions(out_dir=out, days=offline.FAITHFUL_DAYS), specs)
    return count / (time.perf_counter() - start)


def manual_rate(factory: Factory, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        done = manual_procedure(factory.pki, f"bench-manual-{index}", str(uuid_module.uuid4()))
        if done.returncode != 0:
            raise SystemExit(f"the documented procedure failed: {done.stderr}")
    return count / (time.perf_counter() - start)


def openssl_sign_rate() -> float:
    done = subprocess.run(
        ["openssl", "speed", "-seconds", "2", "ecdsap256"], capture_output=True, text=True, timeout=120
    )
    for line in done.stdout.splitlines():
        if "nistp256" in line and "ecdsa" in line:
            numbers = re.findall(r"\d+\.\d+", line)
            return float(numbers[-2])  # sign/s, verify/s are the last two
    raise SystemExit(f"cannot read openssl speed output:\n{done.stdout}")


def new_connection_rate(device: Path, cafile: Path, port: int) -> float:
    done = subprocess.run(
        [
            "openssl", "s_time", "-new", "-connect", f"127.0.0.1:{port}", "-cert", str(device / "client.pem"),
            "-key", str(device / "pkey.pem"), "-CAfile", str(cafile), "-www", "/device", "-time", str(STIME_SECONDS),
        ],
        capture_output=True, text=True, timeout=STIME_SECONDS * 4 + 30,
    )
    match = re.search(r"(\d+) connections in (\d+(?:\.\d+)?) real seconds", done.stdout)
    if not match:
        raise SystemExit(f"cannot read openssl s_time output:\n{done.stdout}\n{done.stderr}")
    return int(match[1]) / float(match[2])


DISK_TMP = os.environ.get("BENCH_DISK_TMP", "/var/tmp")


def main() -> None:
    shm = Path("/dev/shm")
    where = os.environ.get("BENCH_TMP") or (str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None)
    base = Path(tempfile.mkdtemp(prefix="fioca-bench-devices-", dir=where))
    factory = Factory(base / "factory")
    nginx = None
    try:
        batch = in_process_rate(factory, base / "batch", DEVICES)
        # The same batch with its folders on this machine's disk, for the record.
        on_disk = Path(tempfile.mkdtemp(prefix="fioca-bench-disk-", dir=DISK_TMP))
        try:
            batch_disk = in_process_rate(factory, on_disk / "batch", DEVICES)
        finally:
            shutil.rmtree(on_disk, ignore_errors=True)
        manual = manual_rate(factory, MANUAL)
        faithful = faithful_rate(factory, base / "faithful", max(1, MANUAL // 2))
        ceiling = openssl_sign_rate()

        # One device, accepted (and so registered) by the gateway before timing connections.
        [device] = offline.create_in_process(
            offline.load_pki(factory.pki), offline.OfflineOptions(out_dir=base / "probe"), offline.plan_devices(1)
        )
        check = factory.run("device", "check", device.path, "--pki-dir", factory.pki)
        if check.exit_code != 0:
            raise SystemExit(f"the probe device was not accepted: {check.stdout}{check.stderr}")
        root = factory.pki / "factory_ca.pem"
        gateway_rate = new_connection_rate(device.path, root, factory.gateway_port)
        nginx = Nginx(factory, workers="1")
        nginx_rate = new_connection_rate(device.path, root, nginx.port)
    finally:
        if nginx is not None:
            nginx.stop()
        factory.stop()
        shutil.rmtree(base, ignore_errors=True)

    cores = os.cpu_count() or 1
    print(f"device issuance ({cores} cores; {DEVICES} in-process devices, {MANUAL} by the documented procedure; "
          f"files in {where or tempfile.gettempdir()})")
    print(f"  {'fioca in process (batch)':<44}{batch:>10,.0f} devices/s")
    print(f"  {'  the same, folders on disk (' + DISK_TMP + ')':<44}{batch_disk:>10,.0f} devices/s "
          f"(goal >= {GOAL_RATE:,}/s: {'met' if batch_disk >= GOAL_RATE else 'NOT met'})")
    print(f"  {'documented procedure (sh + openssl)':<44}{manual:>10,.1f} devices/s")
    print(f"  {'fioca --faithful (same commands + checks)':<44}{faithful:>10,.1f} devices/s")
    print(f"  {'ceiling: openssl speed ecdsap256, 2 signs':<44}{ceiling * cores / 2:>10,.0f} devices/s "
          f"({ceiling:,.0f} signs/s per core)")
    ratio = batch / manual
    print(f"  batch vs documented: {ratio:,.0f}x (goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}); "
          f"batch rate goal >= {GOAL_RATE:,}/s: {'met' if batch >= GOAL_RATE else 'NOT met'}; "
          f"{batch / (ceiling * cores / 2):.0%} of the signing ceiling")
    print(f"new mTLS connections (openssl s_time -new, GET /device, {STIME_SECONDS}s each)")
    print(f"  {'sandbox gateway':<44}{gateway_rate:>10,.0f} conn/s")
    print(f"  {'nginx (worker_processes 1), same PKI':<44}{nginx_rate:>10,.0f} conn/s")
    share = gateway_rate / nginx_rate if nginx_rate else 0.0
    print(f"  gateway vs nginx: {share:.0%} (goal >= 50%: {'met' if share >= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
