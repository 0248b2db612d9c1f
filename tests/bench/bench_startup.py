"""How fast fioca starts: `fioca --help`, `fioca keys ca show --help` and `fioca keys ca
extract`, side by side with `python -c "import typer"` in the same run.

Goals (issue 13.5): both `--help`s within 1.5x of importing Typer, `extract` within 2x.
Each command runs ROUNDS times, interleaved so that a busy machine slows all alike; the
report gives the median of the CPU time (user + system, what the process itself spent: less
noisy than the wall clock on a shared machine) with its spread, the wall time, and each
command's per-round ratio against importing Typer.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import common

ROUNDS = int(os.environ.get("BENCH_STARTUP_ROUNDS", "21"))
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
    load = common.Load()
    with tempfile.TemporaryDirectory() as work:
        answer = Path(work) / "factory_certs.json"
        answer.write_text(json.dumps({"create_ca": "#!/bin/sh -e\nopenssl version\n", "tls-csr": "x"}))
        fioca = common.fioca_command()
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
        names = list(commands)
        for index in range(ROUNDS):  # each round in another order: a busy moment hits all alike
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_one(commands[name], env))
    typer_cpu = [cpu for cpu, _ in samples['python -c "import typer"']]
    print(f"start-up, {ROUNDS} rounds alternated, CPU = user + system of the process (less noisy than the wall "
          f"clock on a shared machine), ratios per round against importing Typer; {load.done()}")  # fmt: skip
    for name, values in samples.items():
        cpu = [value * 1000 for value, _ in values]
        wall = [value * 1000 for _, value in values]
        print(common.value_line(f"{name}: CPU", cpu, "ms", width=40) + f"   wall {common.median(wall):,.1f} ms")
        if name in GOALS:
            print(common.ratio_line("  / import typer", common.paired([v for v, _ in values], typer_cpu), GOALS[name],
                                    width=40))  # fmt: skip


if __name__ == "__main__":
    main()
