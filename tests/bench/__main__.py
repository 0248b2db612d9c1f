"""`make bench`: every benchmark in one run, each printing its ratio against a baseline
measured in the same process."""

from tests.bench import bench_create

SUITES = [bench_create]
try:  # the device benchmarks arrive with the device commands
    from tests.bench import bench_devices

    SUITES.append(bench_devices)
except ImportError:
    pass

for suite in SUITES:
    suite.main()
    print()
