"""`make bench`: every benchmark in one run, each printing its ratio against a baseline
measured in the same process."""

from tests.bench import (
    bench_audit,
    bench_create,
    bench_devices,
    bench_est,
    bench_jail,
    bench_startup,
)

for suite in (bench_startup, bench_create, bench_jail, bench_audit, bench_devices, bench_est):
    suite.main()
    print()
