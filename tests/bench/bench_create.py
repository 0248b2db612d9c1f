"""`keys ca create --yes` as a user runs it (a new process: start-up, imports, the jail's
set-up, the audit, the four scripts in the jail, the checks, the upload), side by side with
the same flow done by hand, alternated over rounds.

The hand-run flow is the documented one: curl POST | jq . > factory_certs.json, jq -r each
field, run the four scripts with sh (plainly: no jail, no audit, no checks), build the PATCH
with jq and send it with curl. Each run gets a fresh sandbox factory (the root can be set
only once), started before the clock; both flows talk to sandboxes in this process, so they
see the same server. The flow in process (fioca's main() called here, imports warm) says
how much of the difference is start-up.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from fioca.sandbox.server import Sandbox
from tests.bench import common

ROUNDS = common.ROUNDS
GOAL = 1.2

HAND_FLOW = r"""
set -e
cd "$WORK"
curl -sf --cacert "$CACERT" -X POST -H "Content-Type: application/json" -H "OSF-TOKEN: $TOKEN" "$CERTS_URL" \
  | jq . > factory_certs.json
for f in create_ca sign_tls_csr sign_ca_csr create_device_ca; do
  jq -r ".$f" factory_certs.json > "$f"; chmod 700 "$f"
done
jq -r '."tls-csr"' factory_certs.json > tls-csr
jq -r '."ca-csr"' factory_certs.json > ca-csr
./create_ca
./sign_tls_csr tls-csr > tls-crt 2>/dev/null
./sign_ca_csr ca-csr > online-crt 2>/dev/null
./create_device_ca local-ca.key local-ca.pem 2>/dev/null
printf '%s\n%s' "$(cat online-crt)" "$(cat local-ca.pem)" > ca-crt
jq -n --rawfile root factory_ca.pem --rawfile tls tls-crt --rawfile ca ca-crt \
  '{"root-crt": $root, "tls-crt": $tls, "ca-crt": $ca}' > patch.json
curl -sf --cacert "$CACERT" -X PATCH -H "Content-Type: application/json" -H "OSF-TOKEN: $TOKEN" \
  --data-binary @patch.json "$CERTS_URL" > /dev/null
"""


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd[:3])}...\n{done.stderr}")
    return elapsed


def quiet_terminal():
    """A terminal that shows nothing (the in-process run); fioca.cli loads on first use."""
    from fioca.cli.context import Terminal

    class Quiet(Terminal):
        def out(self, text: str = "") -> None:
            pass

        def err(self, text: str = "") -> None:
            pass

    return Quiet()


def run_in_process(base: Path, n: int) -> float:
    """The same `keys ca create`, through fioca's main() in this process: the flow's own cost,
    without the interpreter's start-up and the imports (warm after the first round)."""
    from fioca.cli import main

    with Sandbox(base / f"inproc-{n}-sandbox", factory="bench", scripts="api-2026") as box:
        saved = os.environ.get("FIOCTL_CONFIG")
        os.environ["FIOCTL_CONFIG"] = str(box.data_dir / "fioctl.yaml")
        try:
            start = time.perf_counter()
            code = main(["keys", "ca", "create", str(base / f"inproc-pki-{n}"), "--yes"], terminal=quiet_terminal())
            elapsed = time.perf_counter() - start
        finally:
            if saved is None:
                os.environ.pop("FIOCTL_CONFIG", None)
            else:
                os.environ["FIOCTL_CONFIG"] = saved
    if code != 0:
        raise SystemExit(f"in-process create failed with exit code {code}")
    return elapsed


def run_flow(base: Path, flow: str, n: int) -> float:
    """One create on a sandbox factory of its own (started before the clock, stopped after)."""
    with Sandbox(base / f"{flow}-{n}-sandbox", factory="bench", scripts="api-2026") as box:
        info = box.info
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIOCTL_")}
        if flow == "fioca":
            env["FIOCTL_CONFIG"] = str(box.data_dir / "fioctl.yaml")
            return _timed([*common.fioca_command(), "keys", "ca", "create", str(base / f"pki-{n}"), "--yes"], env)
        work = base / f"hand-{n}"
        work.mkdir()
        env.update(WORK=str(work), CACERT=str(info.cacert), TOKEN=info.token,
                   CERTS_URL=f"{info.api_url}/ota/factories/{info.factory}/certs/")
        return _timed(["bash", "-c", HAND_FLOW], env)


def main(rounds: int = ROUNDS) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fioca-bench-") as tmp:
        base = Path(tmp)
        run_flow(base, "fioca", -1)  # one of each first: the page cache holds python, openssl and the scripts
        run_flow(base, "hand", -1)
        load = common.Load()
        samples = common.alternate(rounds, {
            "fioca": lambda n: run_flow(base, "fioca", n),
            "hand": lambda n: run_flow(base, "hand", n),
            "in process": lambda n: run_in_process(base, n),
        })  # fmt: skip
    ms = {name: [value * 1000 for value in values] for name, values in samples.items()}
    print(f"keys ca create, each on a fresh sandbox factory, {rounds} rounds alternated; {load.done()}")
    print(common.value_line("fioca keys ca create --yes (scripts in the jail)", ms["fioca"], "ms", "{:,.0f}", width=52))
    print(common.value_line("by hand: curl, jq, sh (scripts run plainly)", ms["hand"], "ms", "{:,.0f}", width=52))
    print(common.ratio_line("fioca / by hand", common.paired(ms["fioca"], ms["hand"]), GOAL, width=52))
    print(common.value_line("the flow in process (no start-up, warm imports)", ms["in process"], "ms", "{:,.0f}", width=52))
    print(common.ratio_line("in process / by hand", common.paired(ms["in process"], ms["hand"]), width=52))
    return {"fioca_s": common.median(samples["fioca"]), "hand_s": common.median(samples["hand"])}


if __name__ == "__main__":
    main()
