"""CPython's concurrent.futures process-pool tests (Lib/test/test_concurrent_futures),
adapted to run against childkit.ChildProcessExecutor with their assertions kept.
docs/executor.md lists the tests that do not apply and why."""
