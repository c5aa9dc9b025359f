"""Scripts that produce the numbers README.md quotes, not installed with interp: run each from the repository root as
`python -m experiments.<name>` (its docstring says what it measures and how); tests/test_experiments.py runs each on
the quick zoo."""
