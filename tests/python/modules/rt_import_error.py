"""Worker module for tests/python that fails at import time."""

raise RuntimeError("boom at import")
