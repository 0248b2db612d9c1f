"""The audit of the four scripts: wall time per set of scripts, goal at most 50 ms.

Each round audits one known script set (fioca's own, the API's 2023 and 2026 revisions) in
one mode, parsing included (four shfmt processes at once); the first round of the process is
reported apart, since it also pays for Python's first regular-expression compilations.
"""

from __future__ import annotations

import os
import statistics
import time

from fioca.pki import reference
from tests.bench import common
from fioca.pki.audit import audit_scripts

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
GOAL_MS = 50.0


def measure_audit(rounds: int = ROUNDS) -> dict[str, float]:
    """Milliseconds to audit four scripts: the first call, and the median and worst after it."""
    known = reference.known_sets(factory="bench", local_ca_cn="fio-0123456789abcdef")
    cases = [(scripts, hsm) for scripts in known.values() for hsm in (False, True)]
    times = []
    for _ in range(max(rounds, 1)):
        for scripts, hsm in cases:
            start = time.perf_counter()
            audit_scripts(scripts, hsm=hsm, known=known, jail="bench")
            times.append((time.perf_counter() - start) * 1000)
    first, rest = times[0], times[1:] or times
    return {"first_ms": first, "median_ms": statistics.median(rest), "max_ms": max(rest), "runs": len(times)}


def main() -> None:
    load = common.Load()
    result = measure_audit()
    print(f"audit of the four scripts (parse with shfmt + walk), per set and mode; {load.done()}")
    print(f"  first call {result['first_ms']:.1f} ms; then median {result['median_ms']:.1f} ms, "
          f"worst {result['max_ms']:.1f} ms over {result['runs'] - 1} runs (goal <= {GOAL_MS:.0f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
