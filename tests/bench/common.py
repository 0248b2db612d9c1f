"""What every benchmark shares: rounds alternated between the measure and its baseline,
medians with their spread, per-round (paired) ratios, and how loaded the machine was.

The machine is shared: a round of A then B, then B then A, ... sees the same noise on both
sides, and the ratio of each round's pair is what is compared with the goal. The median of
those ratios is the figure; the lowest and highest say how much to trust it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CORES = os.cpu_count() or 1
CHECKOUT = Path(__file__).resolve().parents[2]  # the fioca these benchmarks measure

# The lines pip writes as the `fioca` console script, with this checkout first on the path.
_CONSOLE_SCRIPT = (
    "import re\n"
    "import sys\n"
    "sys.path.insert(0, {checkout!r})\n"
    "from fioca.cli import main\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(main())\n"
)


def fioca_command() -> list[str]:
    """`fioca` as the user's console script starts it, running this checkout's fioca.

    Not the virtual environment's own `fioca` script: an editable install points it at the
    checkout it was installed from, so a second worktree would measure the first. Not
    `python -m fioca` either: that starts through runpy, which the console script does not."""
    return [sys.executable, "-c", _CONSOLE_SCRIPT.format(checkout=str(CHECKOUT))]


# Folders on disk (BENCH_DISK_TMP). ext4 without a journal (this machine's) skips, one by one,
# every free inode freed in the last minute, or the last six while its inode-table block is
# unwritten (fs/ext4/ialloc.c, recently_deleted, 60 + 300 s): making files right after a large
# deletion costs several times the kernel time. Every suite's deletion on that disk is stamped,
# and a suite that makes many files waits the rest of those six minutes out, saying so.
DISK_TMP = os.environ.get("BENCH_DISK_TMP", "/var/tmp")
FREED_STAMP = Path(DISK_TMP) / ".fioca-bench-batch-freed"
FREED_SETTLE_SECONDS = 360


def remove_from_disk(folder: Path) -> None:
    """Delete a suite's folder on the disk, stamped before (a suite started meanwhile waits too)
    and after."""
    FREED_STAMP.touch()
    shutil.rmtree(folder, ignore_errors=True)
    FREED_STAMP.touch()


def settle_after_deletions() -> None:
    """Wait until the inodes the last suite freed are no longer skipped."""
    try:
        left = FREED_STAMP.stat().st_mtime + FREED_SETTLE_SECONDS - time.time()
    except FileNotFoundError:
        return
    if left > 0:
        print(f"waiting {left:.0f} s: a suite deleted its folders on {DISK_TMP} "
              f"{FREED_SETTLE_SECONDS - left:.0f} s ago, and ext4 skips inodes freed that recently", flush=True)  # fmt: skip
        time.sleep(left)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass
class Load:
    """The load average (1, 5, 15 minutes) when a suite started and when it ended."""

    start: str = field(default_factory=load_average)
    end: str = ""

    def done(self) -> str:
        self.end = load_average()
        return f"load average {self.start} -> {self.end} on {CORES} cores"


def alternate(rounds: int, measures: dict[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """Run each measure once a round, the order rotated every round; samples by name."""
    names = list(measures)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(measures[name](index))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str = "{:,.1f}") -> str:
    """`median (min-max)` of the samples."""
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def paired(a: list[float], b: list[float]) -> list[float]:
    """Each round's a / b."""
    return [x / y for x, y in zip(a, b)]


def verdict(value: float, goal: float, *, at_most: bool) -> str:
    met = value <= goal if at_most else value >= goal
    return f"goal {'<=' if at_most else '>='} {goal:g}: {'met' if met else 'NOT met'}"


def ratio_line(label: str, ratios: list[float], goal: float | None = None, *, at_most: bool = True, width: int = 46,
               percent: bool = False) -> str:
    """The median of per-round ratios, their range, and the goal's verdict (as x or as %)."""
    shown = (lambda r: f"{r:.1%}") if percent else (lambda r: f"{r:.2f}x")
    text = f"  {label:<{width}} {shown(median(ratios)):>7}  (per round {shown(min(ratios))}-{shown(max(ratios))})"
    if goal is None:
        return text
    met = median(ratios) <= goal if at_most else median(ratios) >= goal
    return text + f"   goal {'<=' if at_most else '>='} {shown(goal)}: {'met' if met else 'NOT met'}"


def value_line(label: str, values: list[float], unit: str, fmt: str = "{:,.1f}", width: int = 46) -> str:
    return f"  {label:<{width}} {spread(values, fmt)} {unit}"


def timed(action: Callable[[], object]) -> float:
    """Wall seconds of `action`."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start
