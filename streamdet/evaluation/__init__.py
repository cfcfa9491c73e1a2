"""Evaluation on public benchmarks: metrics, NAB scoring, plots and the ``evaluate`` runners."""
