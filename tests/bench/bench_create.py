"""`keys ca create` against the sandbox, side by side with the same flow done by hand.

The hand-run flow is the documented one: curl POST | jq . > factory_certs.json, jq -r each
field, run the four scripts with sh, build the PATCH with jq and send it with curl. Each
round gets a fresh sandbox factory (the root can be set only once), started outside the
timing; both flows talk to sandboxes in this same process, so they see the same server.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fioca.sandbox.server import Sandbox

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))

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


def _fioca_command() -> list[str]:
    script = Path(sys.executable).with_name("fioca")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fioca"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd[:3])}...\n{done.stderr}")
    return elapsed


def run_in_process(base: Path, n: int) -> float:
    """The same `keys ca create`, through fioca's main() in this process: the flow's own cost,
    without the interpreter's start-up and the imports of typer, requests, sh, cryptography."""
    from fioca.cli import main
    from fioca.cli.context import Terminal

    class Quiet(Terminal):
        def out(self, text: str = "") -> None:
            pass

        def err(self, text: str = "") -> None:
            pass

    with Sandbox(base / f"inproc-{n}-sandbox", factory="bench", scripts="api-2026") as box:
        saved = os.environ.get("FIOCTL_CONFIG")
        os.environ["FIOCTL_CONFIG"] = str(box.data_dir / "fioctl.yaml")
        try:
            start = time.perf_counter()
            code = main(["keys", "ca", "create", str(base / f"inproc-pki-{n}"), "--yes"], terminal=Quiet())
            elapsed = time.perf_counter() - start
        finally:
            if saved is None:
                os.environ.pop("FIOCTL_CONFIG", None)
            else:
                os.environ["FIOCTL_CONFIG"] = saved
    if code != 0:
        raise SystemExit(f"in-process create failed with exit code {code}")
    return elapsed


def startup_cost() -> float:
    """Wall time of `python -c 'import fioca.cli'`: the floor under every fioca command."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import fioca.cli"], check=True)
    return time.perf_counter() - start


def run_round(base: Path, n: int) -> tuple[float, float]:
    results = []
    for flow in ("fioca", "hand"):
        with Sandbox(base / f"{flow}-{n}-sandbox", factory="bench", scripts="api-2026") as box:
            info = box.info
            env = {k: v for k, v in os.environ.items() if not k.startswith("FIOCTL_")}
            if flow == "fioca":
                env["FIOCTL_CONFIG"] = str(box.data_dir / "fioctl.yaml")
                results.append(_timed([*_fioca_command(), "keys", "ca", "create", str(base / f"pki-{n}"), "--yes"], env))
            else:
                work = base / f"hand-{n}"
                work.mkdir()
                env.update(WORK=str(work), CACERT=info.cacert, TOKEN=info.token,
                           CERTS_URL=f"{info.api_url}/ota/factories/{info.factory}/certs/")
                results.append(_timed(["bash", "-c", HAND_FLOW], env))
    return results[0], results[1]


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fioca-bench-") as tmp:
        base = Path(tmp)
        run_round(base, -1)  # warm-up: page cache, imports, openssl
        rounds = [run_round(base, n) for n in range(ROUNDS)]
        in_process = statistics.median(run_in_process(base, n) for n in range(ROUNDS))
        startup = statistics.median(startup_cost() for _ in range(ROUNDS))
    fioca = statistics.median(r[0] for r in rounds)
    hand = statistics.median(r[1] for r in rounds)
    print(f"keys ca create, median of {ROUNDS} rounds (each on a fresh sandbox factory)")
    print(f"  fioca keys ca create --yes        {fioca * 1000:8.1f} ms")
    print(f"  by hand (curl, jq, sh)            {hand * 1000:8.1f} ms")
    print(f"  ratio fioca / by hand             {fioca / hand:8.2f}x   (goal <= 1.5x)")
    print(f"  of which: python + imports        {startup * 1000:8.1f} ms   (python -c 'import fioca.cli')")
    print(f"  the flow in process               {in_process * 1000:8.1f} ms   ratio {in_process / hand:.2f}x")
    return {"fioca_s": fioca, "hand_s": hand, "ratio": fioca / hand, "startup_s": startup, "in_process_s": in_process}


if __name__ == "__main__":
    main()
