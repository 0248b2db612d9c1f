"""Offline devices as a user makes them, side by side with their baselines in the same rounds.

1. The batch: `fioca device create-offline PKI --count N` (1,000 and 10,000; 100,000 with
   `make bench-large`), run as a user runs it: a new process, start-up included, folders on
   disk (BENCH_DISK_TMP, default /var/tmp), timed from outside. Peak memory is the largest
   sum of PSS over fioca's processes (the parent and its workers), sampled every 50 ms. Each
   round also measures the two ceilings on every core: `openssl speed ecdsap256` (a device
   costs at least two signatures: its CSR and its certificate), and keygen + two signatures
   + encoding + the seven files in the same place on disk (files_ceiling.py). The batch's
   folders stay until the end of the suite: ext4 without a journal (this machine's) skips,
   one by one, every free inode freed in the last minute, or in the last six while its
   inode-table block is unwritten (fs/ext4/ialloc.c, recently_deleted), so creating files
   right after a large deletion costs several times the kernel time. Every suite's deletion
   on that disk is stamped (common.remove_from_disk), and this suite, started within six
   minutes of one, waits them out, saying so; deletions by anything else show in ceiling 2.
2. `--faithful` against the documented procedure typed by hand (section 8 with sh and
   openssl, one device after another, in the PKI dir, no jail), BENCH_FAITHFUL devices each.
   fioca runs the same commands in the script jail, one device per core at a time, checks
   every device and syncs each folder before reporting it; the hand-run procedure does none
   of that.

Environment: BENCH_ROUNDS (5), BENCH_DEVICE_COUNTS ("1000,10000"), BENCH_FAITHFUL (24),
BENCH_DISK_TMP (/var/tmp).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_module
from pathlib import Path

from tests.bench import common
from tests.test_device_support import Factory, manual_procedure

COUNTS = [int(n) for n in os.environ.get("BENCH_DEVICE_COUNTS", "1000,10000").split(",")]
FAITHFUL = int(os.environ.get("BENCH_FAITHFUL", "24"))
DISK_TMP = common.DISK_TMP
CEILING_DEVICES = 1000  # per core, for the files ceiling
GOAL_RATE = 2000  # devices/s
GOAL_SIGNING_SHARE = 0.07
GOAL_FAITHFUL = 1.8
MEMORY_GOAL_MIB = 200
SAMPLE_SECONDS = 0.05


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FIOCTL_")}


# --- peak memory of a process tree ---------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            todo.extend(int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except OSError:
            pass
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the PSS of a process and its descendants until it ends; the largest sum, MiB."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(pid) for pid in _tree(self.pid)))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_kib / 1024


# --- the measures ----------------------------------------------------------------------------------


def batch_run(pki: Path, out: Path, count: int) -> tuple[float, float]:
    """(devices/s, peak MiB) of `fioca device create-offline --count` into `out`, from outside."""
    start = time.perf_counter()
    process = subprocess.Popen([*common.fioca_command(), "device", "create-offline", str(pki), "--count", str(count), "--out", str(out)],
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    memory = PeakMemory(process.pid)
    _, stderr = process.communicate()
    elapsed = time.perf_counter() - start
    peak = memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"fioca device create-offline --count {count} failed:\n{stderr}")
    made = sum(1 for entry in os.scandir(out) if not entry.name.startswith("."))
    if made != count:
        raise SystemExit(f"the batch reported success with {made} of {count} folders")
    return count / elapsed, peak


def signing_ceiling() -> float:
    """ECDSA P-256 signatures/s on every core at once: one `openssl speed` per core."""
    command = ["openssl", "speed", "-seconds", "1", "ecdsap256"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(common.CORES)]  # fmt: skip
    total = 0.0
    for process in processes:
        out, _ = process.communicate(timeout=120)
        line = next((line for line in out.splitlines() if "nistp256" in line and "ecdsa" in line), None)
        if line is None:
            raise SystemExit(f"cannot read openssl speed output:\n{out}")
        total += float(re.findall(r"\d+\.\d+", line)[-2])  # sign/s, verify/s are the last two
    return total


def files_ceiling(out: Path) -> float:
    done = subprocess.run([sys.executable, "-m", "tests.bench.files_ceiling", str(out), str(CEILING_DEVICES)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout)


def faithful_rate(pki: Path, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([*common.fioca_command(), "device", "create-offline", str(pki), "--faithful", "--count", str(FAITHFUL),
                           "--out", str(out)], env=_env(), capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"fioca device create-offline --faithful failed:\n{done.stderr}")
    return FAITHFUL / (time.perf_counter() - start)


def by_hand_rate(pki: Path, round_index: int) -> float:
    start = time.perf_counter()
    for index in range(FAITHFUL):
        done = manual_procedure(pki, f"by-hand-{round_index}-{index}", str(uuid_module.uuid4()))
        if done.returncode != 0:
            raise SystemExit(f"the documented procedure failed: {done.stderr}")
    return FAITHFUL / (time.perf_counter() - start)


# --- the suite -------------------------------------------------------------------------------------


def batch_suite(pki: Path, disk: Path, counts: list[int], rounds: int) -> dict[str, list[float]]:
    memory: dict[int, list[float]] = {count: [] for count in counts}

    def batch(count: int):
        def run(index: int) -> float:
            rate, peak = batch_run(pki, disk / f"batch-{count}-{index}", count)
            memory[count].append(peak)
            return rate

        return run

    measures = {"signing": lambda _i: signing_ceiling(), "files": lambda i: files_ceiling(disk / f"ceiling-{i}")}
    measures.update({f"batch {count}": batch(count) for count in counts})
    samples = common.alternate(rounds, measures)
    samples.update({f"memory {count}": values for count, values in memory.items()})
    return samples


def report_batch(samples: dict[str, list[float]], counts: list[int], rounds: int, where: str, load: str) -> None:
    print(f"device batch, folders on disk ({where}), `fioca device create-offline --count N` timed from outside, "
          f"{rounds} rounds alternated; {load}")  # fmt: skip
    two_signatures = [rate / 2 for rate in samples["signing"]]
    print(common.value_line("ceiling 1: openssl speed ecdsap256, 2 signs", two_signatures, "devices/s", "{:,.0f}"))
    print(common.value_line("ceiling 2: keygen + 2 signs + PEM + 7 files", samples["files"], "devices/s", "{:,.0f}"))
    for count in counts:
        rates = samples[f"batch {count}"]
        print(common.value_line(f"fioca, {count:,} devices", rates, "devices/s", "{:,.0f}")
              + f"   {common.verdict(common.median(rates), GOAL_RATE, at_most=False)}")  # fmt: skip
        print(common.ratio_line("  share of ceiling 1", common.paired(rates, two_signatures), GOAL_SIGNING_SHARE,
                                at_most=False, percent=True))  # fmt: skip
        print(common.ratio_line("  share of ceiling 2", common.paired(rates, samples["files"]), percent=True))
        peak = samples[f"memory {count}"]
        print(common.value_line("  peak memory (PSS, all processes)", peak, "MiB", "{:,.0f}")
              + f"   {common.verdict(max(peak), MEMORY_GOAL_MIB, at_most=True)}")  # fmt: skip
    if len(counts) > 1:
        flat = common.paired(samples[f"batch {counts[-1]}"], samples[f"batch {counts[0]}"])
        print(common.ratio_line(f"flat: rate at {counts[-1]:,} / rate at {counts[0]:,}", flat))


def faithful_suite(pki: Path, base: Path, rounds: int) -> None:
    load = common.Load()
    samples = common.alternate(rounds, {
        "fioca": lambda i: faithful_rate(pki, base / f"faithful-{i}"),
        "hand": lambda i: by_hand_rate(pki, i),
    })  # fmt: skip
    print(f"--faithful / the documented procedure by hand, {FAITHFUL} devices each, {rounds} rounds alternated; "
          f"{load.done()}")  # fmt: skip
    print(common.value_line("fioca --faithful (jail, checks, synced)", samples["fioca"], "devices/s"))
    print(common.value_line("by hand: sh + openssl, one after another, no jail", samples["hand"], "devices/s"))
    print(common.ratio_line("ratio", common.paired(samples["fioca"], samples["hand"]), GOAL_FAITHFUL, at_most=False))


def main(counts: list[int] = COUNTS, rounds: int = common.ROUNDS, faithful: bool = True) -> None:
    common.settle_after_deletions()
    base = Path(tempfile.mkdtemp(prefix="fioca-bench-devices-"))
    disk = Path(tempfile.mkdtemp(prefix="fioca-bench-batch-", dir=DISK_TMP))
    factory = Factory(base / "factory")
    factory.stop()  # the PKI is made; offline devices need no server
    try:
        load = common.Load()
        samples = batch_suite(factory.pki, disk, counts, rounds)
        report_batch(samples, counts, rounds, DISK_TMP, load.done())
        if faithful:
            print()
            faithful_suite(factory.pki, base, rounds)
    finally:
        common.remove_from_disk(disk)
        common.remove_from_disk(base)  # the default tmp is on the same disk here


if __name__ == "__main__":
    main()
