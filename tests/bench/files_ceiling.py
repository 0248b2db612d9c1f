"""The second ceiling of a device batch: keygen, two signatures, encoding and files, nothing else.

On every core at once (forked), each process makes COUNT device folders the cheapest way
Python can with the same primitives fioca uses: a P-256 key from `cryptography`, its SEC1 PEM,
one signature by the CA key and one by the device key over fixed bytes the size of a TBS and
a CSR, base64 PEM for both, and the seven files in a new folder renamed into place. No
template fill, no checks, no verification, no sync: what no batch can beat on this machine,
on this disk, now.

    python -m tests.bench.files_ceiling OUT COUNT   ->  prints devices/s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fioca.device.template import pem

TBS_BYTES = 420  # about a device certificate's TBS
CSR_BYTES = 200  # about its CertificationRequestInfo
OTHER_FILES = {"device-cert.conf": b"c" * 170, "device-cert.ext": b"e" * 78, "root.crt": b"r" * 700, "sota.toml": b"s" * 800}


def make_devices(out: Path, count: int, worker: int) -> None:
    sign = ec.ECDSA(hashes.SHA256())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    tbs, request = os.urandom(TBS_BYTES), os.urandom(CSR_BYTES)
    out_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for index in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "pkey.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()),  # fmt: skip
            "device-cert.csr": pem("CERTIFICATE REQUEST", request + key.sign(request, sign)),
            "client.pem": pem("CERTIFICATE", tbs + ca_key.sign(tbs, sign)),
            **OTHER_FILES,
        }
        partial, final = f".p-{worker}-{index}", f"{worker}-{index}"
        os.mkdir(partial, 0o700, dir_fd=out_fd)
        folder = os.open(partial, os.O_RDONLY | os.O_DIRECTORY, dir_fd=out_fd)
        for name, data in files.items():
            fd = os.open(name, flags, 0o400, dir_fd=folder)
            os.write(fd, data)
            os.close(fd)
        os.close(folder)
        os.rename(partial, final, src_dir_fd=out_fd, dst_dir_fd=out_fd)
    os.close(out_fd)


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(mode=0o700)
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    children = []
    for worker in range(cores):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                make_devices(out, count, worker)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    if any(os.waitpid(pid, 0)[1] != 0 for pid in children):
        raise SystemExit("a ceiling worker failed")
    print(f"{cores * count / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    main()
