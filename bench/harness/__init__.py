"""bench/run's harness: starts each system, runs the workloads, writes the results table."""
