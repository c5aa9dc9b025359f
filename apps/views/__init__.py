"""One module per explorer page; each exposes `render(results)` and pure helpers the tests check."""
