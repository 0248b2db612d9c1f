"""The jail's cost: one script run with bubblewrap against the same run with no jail, and
`keys ca create` (in process, on a fresh sandbox factory each round) both ways.

The in-process create is the harsh measure: no interpreter start-up or imports to hide the
jail's milliseconds in. The goal is create with the jail at most 1.3x create without it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fioca.pki import jail as jails
from fioca.pki.scripts import ScriptRunner
from fioca.sandbox.server import Sandbox
from tests.bench import common

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
RUNS = 5 * ROUNDS
GENKEY = "#!/bin/sh -e\nopenssl ecparam -genkey -name prime256v1 -noout -out k\nrm k\n"


def _median_ms(action: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def per_run(base: Path, jail: jails.Jail) -> tuple[float, float]:
    """(ms for an empty script, ms for one openssl key generation) through the runner."""
    work = base / f"runs-{jail.contained}"
    work.mkdir(mode=0o700)
    runner = ScriptRunner(work, jail=jail)
    runner.install("noop", "#!/bin/sh\n:\n")
    runner.install("genkey", GENKEY)
    runner.run("noop")  # warm-up: the jail's layout is computed once per process
    return _median_ms(lambda: runner.run("noop"), RUNS), _median_ms(lambda: runner.run("genkey"), RUNS)


def create_in_process(base: Path, n: int, jail: jails.Jail) -> float:
    from fioca.cli import main
    from fioca.cli.context import Terminal

    class Quiet(Terminal):
        def out(self, text: str = "") -> None:
            pass

        def err(self, text: str = "") -> None:
            pass

    real_require = jails.require
    jails.require = lambda **_options: jail  # what --no-jail will choose
    name = f"{'jail' if jail.contained else 'nojail'}-{n}"
    try:
        with Sandbox(base / f"{name}-sandbox", factory="bench") as box:
            os.environ["FIOCTL_CONFIG"] = str(box.data_dir / "fioctl.yaml")
            start = time.perf_counter()
            code = main(["keys", "ca", "create", str(base / f"{name}-pki"), "--yes"], terminal=Quiet())
            elapsed = time.perf_counter() - start
    finally:
        jails.require = real_require
        os.environ.pop("FIOCTL_CONFIG", None)
    if code != 0:
        raise SystemExit(f"in-process create failed with exit code {code}")
    return elapsed * 1000


def main() -> dict[str, float]:
    load = common.Load()
    jail = jails.require()
    with tempfile.TemporaryDirectory(prefix="fioca-bench-jail-") as tmp:
        base = Path(tmp)
        noop_jail, genkey_jail = per_run(base, jail)
        noop_plain, genkey_plain = per_run(base, jails.NO_JAIL)
        create_in_process(base, -1, jail)  # warm-up
        creates = {False: [], True: []}
        for n in range(ROUNDS):  # interleaved, each first in turn: both see the same machine
            for contained in (n % 2 == 0, n % 2 == 1):
                creates[contained].append(create_in_process(base, n, jail if contained else jails.NO_JAIL))
    with_jail, without = statistics.median(creates[True]), statistics.median(creates[False])
    print(f"the script jail ({jail.describe()}), median of {RUNS} runs / {ROUNDS} creates alternated; {load.done()}")
    for what, jailed, plain in (("empty script", noop_jail, noop_plain), ("openssl genkey", genkey_jail, genkey_plain)):
        print(f"  {what:<18}  jail {jailed:7.1f} ms   no jail {plain:7.1f} ms   +{jailed - plain:.1f} ms")
    print(f"  keys ca create      jail {with_jail:7.1f} ms   no jail {without:7.1f} ms")
    print(common.ratio_line("keys ca create in process: jail / no jail", common.paired(creates[True], creates[False]),
                            1.3, width=44))  # fmt: skip
    return {"run_overhead_ms": noop_jail - noop_plain, "create_jail_ms": with_jail, "create_nojail_ms": without,
            "ratio": with_jail / without}  # fmt: skip


if __name__ == "__main__":
    main()
