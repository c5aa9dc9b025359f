"""The explorer's own pieces: `runner` (the run page) and `kinds` (finding results directories); each analysis's
page is `interp/analyses/<name>/page.py`."""
