"""`make bench-large`: the batch at 100,000 devices (BENCH_LARGE_COUNT), three rounds
(BENCH_ROUNDS), with its two ceilings measured in the same rounds; about 3 GB and 800,000
inodes a round on BENCH_DISK_TMP until the suite ends."""

import os

from tests.bench import bench_devices

if __name__ == "__main__":
    bench_devices.main(counts=[int(os.environ.get("BENCH_LARGE_COUNT", "100000"))],
                       rounds=int(os.environ.get("BENCH_ROUNDS", "3")), faithful=False)
