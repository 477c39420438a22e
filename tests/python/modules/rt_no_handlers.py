"""Worker module for tests/python that imports fine but registers no handler."""

import pypool  # noqa: F401  (imported, never used: the mistake under test)
