"""Plugins that the isolation tests run in child processes (``isolation = "process"``)."""
