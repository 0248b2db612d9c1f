"""`make bench`: every benchmark in one run, each printing its ratios against baselines
measured in the same rounds, with the load average it ran under (tests/bench/common.py).
The device suite runs last: it leaves many files to delete, which slows file creation for
a while after; and before it starts, it waits out what the suites before it deleted on the
same disk (tests/bench/common.py, settle_after_deletions: up to six minutes)."""

from tests.bench import bench_audit, bench_create, bench_devices, bench_est, bench_gateway, bench_jail, bench_startup

for suite in (bench_startup, bench_create, bench_jail, bench_audit, bench_gateway, bench_est, bench_devices):
    suite.main()
    print()
