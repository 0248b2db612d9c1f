"""How fast fioca starts: `fioca --help`, `fioca keys ca show --help` and `fioca keys ca
extract`, side by side with `python -c "import typer"` in the same run.

Goals (issue 13.5): both `--help`s within 1.5x of importing Typer, `extract` within 2x.
Each command runs ROUNDS times, interleaved so that a busy machine slows all alike; the
report gives the median of the CPU time (user + system, what the process itself spent: less
noisy than the wall clock on a shared machine) and of the wall time, and each ratio.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "21"))
GOALS = {"fioca --help": 1.5, "fioca keys ca show --help": 1.5, "fioca keys ca extract": 2.0}


def _one(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        answer = Path(work) / "factory_certs.json"
        answer.write_text(json.dumps({"create_ca": "#!/bin/sh -e\nopenssl version\n", "tls-csr": "x"}))
        fioca = [sys.executable, "-m", "fioca"]
        commands = {
            'python -c "import typer"': [sys.executable, "-c", "import typer"],
            "fioca --help": [*fioca, "--help"],
            "fioca keys ca show --help": [*fioca, "keys", "ca", "show", "--help"],
            "fioca keys ca extract": [*fioca, "keys", "ca", "extract", "create_ca", "--file", str(answer)],
        }
        env = {**os.environ, "HOME": work}
        for argv in commands.values():  # warm the bytecode caches
            _one(argv, env)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, argv in commands.items():
                samples[name].append(_one(argv, env))
    base_cpu = statistics.median(cpu for cpu, _ in samples['python -c "import typer"'])
    base_wall = statistics.median(wall for _, wall in samples['python -c "import typer"'])
    print(f"Startup, median of {ROUNDS} runs (CPU = user + system; goal as a ratio of importing Typer):")
    for name, values in samples.items():
        cpu = statistics.median(value for value, _ in values)
        wall = statistics.median(wall for _, wall in values)
        goal = f"   goal <= {GOALS[name]}x" if name in GOALS else ""
        print(f"  {name:<28} CPU {cpu * 1000:6.1f} ms ({cpu / base_cpu:4.2f}x)   wall {wall * 1000:6.1f} ms "
              f"({wall / base_wall:4.2f}x){goal}")


if __name__ == "__main__":
    main()
