"""What every benchmark shares: rounds alternated between the measure and its baseline,
medians with their spread, per-round (paired) ratios, and how loaded the machine was.

The machine is shared: a round of A then B, then B then A, ... sees the same noise on both
sides, and the ratio of each round's pair is what is compared with the goal. The median of
those ratios is the figure; the lowest and highest say how much to trust it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CORES = os.cpu_count() or 1
# The checkout these benchmarks belong to: the fioca they measure.
CHECKOUT = Path(__file__).resolve().parents[2]
# What the installed console script runs (it imports re, then fioca.cli's main), with this
# checkout first on the path: a worktree measures its own code, not the editable install's.
_CONSOLE_SCRIPT = f"import re, sys; sys.path.insert(0, {str(CHECKOUT)!r}); from fioca.cli import main; sys.exit(main())"


def fioca_command() -> list[str]:
    """The command line that starts this checkout's fioca as a user's `fioca` starts."""
    return [sys.executable, "-c", _CONSOLE_SCRIPT]


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
