"""A module that fails at import, as user code sometimes does."""

raise RuntimeError("boom at import")
