"""Measure the sandbox gateway (no asserts on time; run by hand, not collected by pytest):

1. first-request registrations: DEVICES new devices from the local CA, each one new mTLS
   connection and `GET /device`, CONCURRENCY at once; registrations/s, p50 and p99 latency;
2. new mTLS connections of one known device, the same way; connections/s, p50 and p99.

The sandbox runs as `fioca sandbox serve` in its own process and the clients here, so the two
do not share one interpreter lock. Its PKI is made first by the documented script flow.

    .venv/bin/python tests/sandbox/measure_gateway.py [DEVICES] [CONCURRENCY] [ROUNDS]
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox_helpers import FACTORY, Client, create_flow
from test_gateway_support import load_ca, make_device

from fioca.sandbox import Sandbox, read_info
from fioca.sandbox.store import Store


def configured_data_dir(base: Path) -> tuple[Path, Path]:
    """A sandbox data dir whose factory PKI is set; (data dir, PKI dir)."""
    data, pki = base / "sandbox", base / "pki"
    with Sandbox(data, factory=FACTORY) as box:
        client = Client(box)
        flow = create_flow(client, pki)
        response = client.patch_certs(flow.patch_body())
        assert response.status_code == 200, response.text
    return data, pki


def serve(data: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(data), "--factory", FACTORY],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    ready = process.stderr.readline()
    if not ready.startswith("sandbox ready"):
        process.kill()
        raise SystemExit(f"the sandbox did not start: {ready}")
    return process


def one_request(port: int, host: str, context: ssl.SSLContext) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            connection = http.client.HTTPConnection(host, port)
            connection.sock = tls
            connection.request("GET", "/device")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"the gateway answered {response.status}")
    return time.perf_counter() - start


def run_batch(port: int, host: str, contexts: list[ssl.SSLContext], concurrency: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(lambda context: one_request(port, host, context), contexts))
    return len(contexts) / (time.perf_counter() - start), latencies


def device_contexts(folder: Path, ca: tuple, root: Path, count: int) -> list[ssl.SSLContext]:
    contexts = []
    for _ in range(count):
        device = make_device(folder, ca)
        context = ssl.create_default_context(cafile=str(root))
        context.load_cert_chain(str(device.cert), str(device.key))
        contexts.append(context)
    return contexts


def report(label: str, rate: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"  {label:<34}{rate:>8,.0f}/s   p50 {statistics.median(ordered) * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms"


def main() -> None:
    devices = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    base = Path(tempfile.mkdtemp(prefix="fioca-measure-gateway-"))
    data, pki = configured_data_dir(base)
    process = serve(data)
    try:
        info = read_info(data)
        port = int(info.gateway_url.rsplit(":", 1)[1])
        store = Store(data)  # read only: the gateway's host name
        host = f"{store.factory().gateway_id}.ota-lite.foundries.io"
        store.close()
        ca = load_ca(pki / "local-ca.pem", pki / "local-ca.key")
        root = pki / "factory_ca.pem"
        print(f"{os.cpu_count()} cores; {devices} devices or connections a round, {concurrency} at once, {rounds} rounds")
        for index in range(rounds):
            contexts = device_contexts(base / f"devices-{index}", ca, root, devices)
            rate, latencies = run_batch(port, host, contexts, concurrency)
            print(report(f"round {index + 1}: first-request registrations", rate, latencies))
            known = [contexts[0]] * devices
            rate, latencies = run_batch(port, host, known, concurrency)
            print(report(f"round {index + 1}: new connections, known", rate, latencies))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
