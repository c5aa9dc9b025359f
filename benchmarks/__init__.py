"""Timing benchmarks, not installed with interp: run each from the repository root as `python -m benchmarks.<name>`
(its docstring gives the options); each writes its numbers and its command line to benchmarks/results/."""
