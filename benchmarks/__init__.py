"""Speed benchmarks: commands (``python -m benchmarks.<name>``), never timed unit tests."""
