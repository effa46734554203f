"""The engine at run time: applies plans to running actors and sources."""
