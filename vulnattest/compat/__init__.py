"""The only places vulnattest reaches past a dependency's public API, one module per dependency; each name they use
is pinned by ``tests/unit/test_compat.py``, which fails naming the dependency when an upgrade moves it."""
