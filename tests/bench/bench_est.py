"""EST at fleet scale: how fast a fleet's certificates rotate, and how long the whole
CA-compromise drill takes.

1. Fleet rotation: `fioca device rotate-cert FLEET --fleet` run as a user runs it (the
   installed command in its own process, start-up included, timed from outside) against a
   sandbox served by this process, for BENCH_EST_DEVICES device folders (default 200 and
   1000). Each round rotates the same fleet again (the same work: a new key, simplereenroll,
   the switch, the gateway's confirmation); BENCH_ROUNDS rounds, median and spread.
2. The drill (tests/drill.py, what test_drill.py runs): 204 legitimate devices and 21 rogue
   ones, the five steps, and after each the gateway asked as every device; wall time of each
   step and in all, BENCH_DRILL_ROUNDS rounds, each on a fresh factory.

The device folders live in BENCH_TMP (default /dev/shm, so the figures measure fioca and the
sandbox, not a disk shared with other work), and on disk (BENCH_DISK_TMP) for the record.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.bench import common
from tests.drill import Drill
from tests.est_support import authorized, offline_devices
from tests.test_device_support import Factory

FLEETS = [int(n) for n in os.environ.get("BENCH_EST_DEVICES", "200,1000").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DRILL_ROUNDS = int(os.environ.get("BENCH_DRILL_ROUNDS", "2"))
DISK_TMP = common.DISK_TMP


def rotation_rate(factory: Factory, fleet: Path, count: int) -> float:
    """One rotation of the whole fleet by the installed command: devices/s, start-up included."""
    env = {**os.environ, **factory.env, "HOME": str(factory.home)}
    start = time.perf_counter()
    done = subprocess.run([*common.fioca_command(), "device", "rotate-cert", str(fleet), "--fleet", "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=3600)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the fleet rotation failed:\n{done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    if answer["rotated"] != count:
        raise SystemExit(f"rotated {answer['rotated']} of {count}")
    return count / elapsed


def _scratch(where: str | None, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def bench_rotation(where: str | None) -> list[str]:
    lines = []
    for folders_in, label in ((where, "RAM" if where == "/dev/shm" else where or tempfile.gettempdir()), (DISK_TMP, DISK_TMP)):
        base = _scratch(folders_in, "fioca-bench-est-")
        factory = Factory(base / "factory")
        try:
            authorized(factory)
            for count in FLEETS:
                fleet = base / f"fleet-{count}"
                offline_devices(factory, fleet, count)
                rates = [rotation_rate(factory, fleet, count) for _ in range(ROUNDS)]
                spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
                lines.append(f"  {f'{count:,} devices, folders in {label}':<44}{statistics.median(rates):>10,.0f} devices/s "
                             f"(median of {ROUNDS}, spread {spread})")  # fmt: skip
        finally:
            factory.stop()
            if folders_in == DISK_TMP:
                common.remove_from_disk(base)  # the device suite after this one waits its deletion out
            else:
                shutil.rmtree(base, ignore_errors=True)
    return lines


def bench_drill(where: str | None) -> list[str]:
    rounds: list[dict[str, float]] = []
    for _ in range(DRILL_ROUNDS):
        base = _scratch(where, "fioca-bench-drill-")
        factory = Factory(base / "factory")
        try:
            drill = Drill(factory, base)
            timings: dict[str, float] = {}
            started = time.perf_counter()
            drill.prepare()
            timings["prepare (fleet out, EST authorized)"] = time.perf_counter() - started
            for name, step in (("1 disable", drill.disable), ("2 clean up", drill.clean_up),
                               ("3 add device CA", drill.add_device_ca), ("4 rotate", drill.rotate),
                               ("5 revoke", drill.revoke)):  # fmt: skip
                mark = time.perf_counter()
                step()
                drill.who_gets_in()
                timings[f"{name} + who gets in"] = time.perf_counter() - mark
            timings["total"] = time.perf_counter() - started
            rounds.append(timings)
        finally:
            factory.stop()
            shutil.rmtree(base, ignore_errors=True)
    fleet = f"{drill.legit_offline + drill.legit_registered} legitimate + {drill.rogue_early_count + drill.rogue_late_count + 1} rogue"
    lines = [f"CA-compromise drill ({fleet} devices; median of {DRILL_ROUNDS} rounds, each on a fresh factory)"]
    for name in rounds[0]:
        values = [timings[name] for timings in rounds]
        lines.append(f"  {name:<44}{statistics.median(values):>10.2f} s (spread {min(values):.2f}-{max(values):.2f})")
    return lines


def main() -> None:
    shm = Path("/dev/shm")
    where = os.environ.get("BENCH_TMP") or (str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None)
    cores = os.cpu_count() or 1
    print(f"fleet rotation over EST ({cores} cores; `device rotate-cert --fleet` in its own process, 8 devices at "
          "once, start-up included; the sandbox in this one)")
    for line in bench_rotation(where):
        print(line)
    for line in bench_drill(where):
        print(line)


if __name__ == "__main__":
    main()
