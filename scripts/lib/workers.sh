# pytest-xdist's options for the whole suite, sourced by scripts/test, scripts/coverage and
# scripts/test-cpu (one definition): PUMPCTL_TEST_WORKERS workers, else one more than the cores.
#
# A test mostly waits on the processes it started (its service, simulator, broker, Chromium)
# and on bounded real-time waits: with one worker per core the cores were idle 30 % of the run
# (vmstat, 2-core machine, fresh clone, CI=true). Measured there on one commit:
#   2 workers: 588 s, cores 70 % busy;  3: 494 s, 82 %;  4: 473 s, 94 %, and in a second run
#   three tests failed, each on a real-time bound of the product the starved machine missed
#   (a write-ahead record not written within 2 s, A3; a restart slower than a scaled clock's
#   bag; a stop of the web side past its 2 s + 5 s). One more than the cores keeps that margin.
# Every test starts its own servers on free ports, so workers share nothing.
# worksteal: a worker that runs out takes tests still queued at another (with the default
# "load" the last page tests ran on one worker while the other sat idle).
PYTEST_WORKERS=(-n "${PUMPCTL_TEST_WORKERS:-$(($(nproc) + 1))}" --dist worksteal)
