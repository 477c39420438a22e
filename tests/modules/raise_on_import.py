"""Test worker module that fails to import: the pool must report PYPOOL_ESPAWN with this text."""

raise RuntimeError("boom at import")
