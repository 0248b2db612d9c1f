"""The sandbox gateway against nginx serving the same factory PKI, alternated over rounds.

The gateway runs as a user runs it, `fioca sandbox serve` in a process of its own; nginx has
as many worker processes as there are cores, `tls-crt` with the key the backend holds and
the factory's device CAs as its trust (tests/test_device_support.Nginx). Both answer
`GET /device` over mTLS; the gateway also applies every device rule and registers a device
it does not know.

1. New mTLS connections of one known device: BENCH_CONCURRENCY `openssl s_time -new`
   processes at once for BENCH_STIME_SECONDS, connections counted from their reports and
   timed from outside (s_time itself reports whole seconds). Also each server's own CPU per
   connection (user + system of its processes), which the client's share does not blur.
2. First-request registrations: BENCH_REGISTRATIONS new devices, one new connection and
   `GET /device` each, BENCH_CONCURRENCY at once, from a client in this process (a thread per
   connection in flight); the same certificates to nginx. Requests/s, p50/p99 latency and each
   server's CPU per request.
3. The fleet test bed: BENCH_FLEET distinct devices registered at BENCH_CONCURRENCY, once,
   then counted in the sandbox's store: every one registered exactly once, no failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.bench import common
from tests.test_device_support import FACTORY, Factory, Nginx

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "50"))
STIME_SECONDS = int(os.environ.get("BENCH_STIME_SECONDS", "3"))
REGISTRATIONS = int(os.environ.get("BENCH_REGISTRATIONS", "500"))
FLEET = int(os.environ.get("BENCH_FLEET", "1000"))
GOAL_CONNECTIONS = 0.9
GOAL_REGISTRATIONS = 0.8
GOAL_P99_MS = 250


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FIOCTL_")}


# --- the servers -----------------------------------------------------------------------------------


class Served:
    """`fioca sandbox serve` on the factory's data dir, in its own process."""

    def __init__(self, factory: Factory):
        self.process = subprocess.Popen(
            [*common.fioca_command(), "sandbox", "serve", "--data", str(factory.sandbox.data_dir), "--factory", FACTORY],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        ready = self.process.stderr.readline()
        found = re.search(r"gateway https://127\.0\.0\.1:(\d+)", ready)
        if not found:
            self.process.kill()
            raise SystemExit(f"the sandbox did not start: {ready}{self.process.stderr.read()}")
        self.port = int(found[1])
        self.pids = [self.process.pid]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes `pids` and their children, so far."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    todo = list(pids)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            todo.extend(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        except OSError:
            pass
    return total


def nginx_pids(nginx: Nginx) -> list[int]:
    return [nginx.process.pid]


# --- clients ---------------------------------------------------------------------------------------


@dataclass
class Device:
    cert: Path
    key: Path


def make_devices(factory: Factory, out: Path, count: int) -> list[Device]:
    done = subprocess.run([*common.fioca_command(), "device", "create-offline", str(factory.pki), "--count", str(count), "--out", str(out)],
                          env=_env(), capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"cannot make the bench's devices: {done.stderr}")
    folders = sorted(entry.path for entry in os.scandir(out) if not entry.name.startswith("."))
    return [Device(Path(folder) / "client.pem", Path(folder) / "pkey.pem") for folder in folders]


def s_time_rate(device: Device, root: Path, port: int) -> float:
    """Connections/s of CONCURRENCY `openssl s_time -new` at once, timed from outside."""
    command = ["openssl", "s_time", "-new", "-connect", f"127.0.0.1:{port}", "-cert", str(device.cert),
               "-key", str(device.key), "-CAfile", str(root), "-www", "/device", "-time", str(STIME_SECONDS)]  # fmt: skip
    start = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(CONCURRENCY)]  # fmt: skip
    total = 0
    for process in processes:
        out, _ = process.communicate(timeout=STIME_SECONDS * 10 + 60)
        found = re.search(r"(\d+) connections in \d+ real seconds", out)
        if not found:
            raise SystemExit(f"cannot read openssl s_time output:\n{out}")
        total += int(found[1])
    return total / (time.perf_counter() - start)


class Client:
    """One new mTLS connection and `GET /device` a device, CONCURRENCY at once."""

    def __init__(self, devices: list[Device], root: Path, host: str):
        self.host = host
        self.contexts = []
        for device in devices:
            context = ssl.create_default_context(cafile=str(root))
            context.load_cert_chain(str(device.cert), str(device.key))
            self.contexts.append(context)

    def request(self, port: int, context: ssl.SSLContext) -> tuple[float, int]:
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with context.wrap_socket(raw, server_hostname=self.host) as tls:
                    tls.sendall(f"GET /device HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode())
                    answer = b""
                    while chunk := tls.recv(65536):
                        answer += chunk
        except (OSError, ssl.SSLError):
            return time.perf_counter() - start, 0
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
        return time.perf_counter() - start, status

    def run(self, port: int) -> tuple[float, list[float], int]:
        """(requests/s, latencies, failures) over every device once."""
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            results = list(pool.map(lambda context: self.request(port, context), self.contexts))
        elapsed = time.perf_counter() - start
        return len(results) / elapsed, [latency for latency, _ in results], sum(1 for _, status in results if status != 200)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# --- the suite -------------------------------------------------------------------------------------


def registered(factory: Factory) -> dict[str, int]:
    """uuid -> how many rows the sandbox's store has for it (through the CLI, as a user looks)."""
    done = subprocess.run([*common.fioca_command(), "sandbox", "devices", "--data", str(factory.sandbox.data_dir), "--format", "json"],
                          env=_env(), capture_output=True, text=True, check=True)  # fmt: skip
    import json

    counts: dict[str, int] = {}
    for device in json.loads(done.stdout):
        counts[device["uuid"]] = counts.get(device["uuid"], 0) + 1
    return counts


def connections_suite(gateway: Served, nginx: Nginx, known: Device, root: Path, rounds: int) -> None:
    load = common.Load()
    cpu: dict[str, list[float]] = {"gateway": [], "nginx": []}

    def measure(name: str, port: int, pids: list[int]):
        def run(_index: int) -> float:
            before = cpu_seconds(pids)
            start = time.perf_counter()
            rate = s_time_rate(known, root, port)
            cpu[name].append((cpu_seconds(pids) - before) / (rate * (time.perf_counter() - start)) * 1e6)
            return rate

        return run

    samples = common.alternate(rounds, {"gateway": measure("gateway", gateway.port, gateway.pids),
                                        "nginx": measure("nginx", nginx.port, nginx_pids(nginx))})  # fmt: skip
    print(f"new mTLS connections, {CONCURRENCY} x openssl s_time -new for {STIME_SECONDS}s, GET /device, "
          f"{rounds} rounds alternated; {load.done()}")  # fmt: skip
    print(common.value_line("sandbox gateway", samples["gateway"], "conn/s", "{:,.0f}"))
    print(common.value_line(f"nginx, {common.CORES} workers, same PKI", samples["nginx"], "conn/s", "{:,.0f}"))
    print(common.ratio_line("gateway / nginx", common.paired(samples["gateway"], samples["nginx"]), GOAL_CONNECTIONS,
                            at_most=False))  # fmt: skip
    print(common.value_line("server CPU per connection: gateway", cpu["gateway"], "us", "{:,.0f}"))
    print(common.value_line("server CPU per connection: nginx", cpu["nginx"], "us", "{:,.0f}"))


def registrations_suite(factory: Factory, gateway: Served, nginx: Nginx, base: Path, rounds: int) -> None:
    load = common.Load()
    root, host = factory.pki / "factory_ca.pem", factory.gateway_host
    clients = [Client(make_devices(factory, base / f"new-{index}", REGISTRATIONS), root, host) for index in range(rounds)]
    latencies: dict[str, list[float]] = {"gateway": [], "nginx": []}
    cpu: dict[str, list[float]] = {"gateway": [], "nginx": []}

    def measure(name: str, port: int, pids: list[int]):
        def run(index: int) -> float:
            before = cpu_seconds(pids)
            rate, times, failures = clients[index].run(port)
            cpu[name].append((cpu_seconds(pids) - before) / REGISTRATIONS * 1e6)
            if failures:
                raise SystemExit(f"{failures} of {REGISTRATIONS} requests to the {name} failed")
            latencies[name].append(percentile(times, 0.99) * 1000)
            latencies[f"{name} p50"] = latencies.get(f"{name} p50", []) + [percentile(times, 0.5) * 1000]
            return rate

        return run

    samples = common.alternate(rounds, {"gateway": measure("gateway", gateway.port, gateway.pids),
                                        "nginx": measure("nginx", nginx.port, nginx_pids(nginx))})  # fmt: skip
    print(f"first-request registrations, {REGISTRATIONS} new devices a round at concurrency {CONCURRENCY}, the same "
          f"requests to nginx, {rounds} rounds alternated; {load.done()}")  # fmt: skip
    print(common.value_line("sandbox gateway (registers each)", samples["gateway"], "req/s", "{:,.0f}"))
    print(common.value_line("nginx, same requests", samples["nginx"], "req/s", "{:,.0f}"))
    print(common.ratio_line("gateway / nginx", common.paired(samples["gateway"], samples["nginx"]), GOAL_REGISTRATIONS,
                            at_most=False))  # fmt: skip
    for name in ("gateway", "nginx"):
        print(common.value_line(f"{name} p50 / p99", latencies[f"{name} p50"], "ms", "{:,.0f}")
              + f" / {common.spread(latencies[name], '{:,.0f}')} ms")  # fmt: skip
    print(f"  {'gateway p99':<46} {common.verdict(common.median(latencies['gateway']), GOAL_P99_MS, at_most=True)} ms")
    print(common.value_line("server CPU per request: gateway", cpu["gateway"], "us", "{:,.0f}"))
    print(common.value_line("server CPU per request: nginx", cpu["nginx"], "us", "{:,.0f}"))


def fleet_suite(factory: Factory, gateway: Served, base: Path) -> None:
    load = common.Load()
    devices = make_devices(factory, base / "fleet", FLEET)
    client = Client(devices, factory.pki / "factory_ca.pem", factory.gateway_host)
    before = registered(factory)
    rate, times, failures = client.run(gateway.port)
    after = registered(factory)
    fleet = {device.cert.parent.name for device in devices}
    once = sum(1 for uuid in fleet if after.get(uuid) == 1 and uuid not in before)
    print(f"fleet test bed: {FLEET} distinct devices registered at concurrency {CONCURRENCY}; {load.done()}")
    print(f"  {'registrations/s':<46} {rate:,.0f}")
    print(f"  {'latency p50 / p99':<46} {percentile(times, 0.5) * 1000:,.0f} / {percentile(times, 0.99) * 1000:,.0f} ms")
    print(f"  {'failures':<46} {failures}")
    print(f"  {'registered exactly once':<46} {once} of {FLEET}; {len(after) - len(before)} new rows in the store")


def main(rounds: int = common.ROUNDS) -> None:
    base = Path(tempfile.mkdtemp(prefix="fioca-bench-gateway-"))
    factory = Factory(base / "factory")
    nginx = Nginx(factory, workers=str(common.CORES))
    factory.stop()  # the data dir is served by `fioca sandbox serve` from here on
    gateway = None
    try:
        gateway = Served(factory)
        [known] = make_devices(factory, base / "known", 1)
        root = factory.pki / "factory_ca.pem"
        Client([known], root, factory.gateway_host).run(gateway.port)  # registered before the timing
        connections_suite(gateway, nginx, known, root, rounds)
        print()
        registrations_suite(factory, gateway, nginx, base, rounds)
        print()
        fleet_suite(factory, gateway, base)
    finally:
        if gateway is not None:
            gateway.stop()
        nginx.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
