"""Built-in middleware: ``logging``, ``metrics``, ``rate_limit`` and ``cache``.

Each is an ordinary plugin, registered as an entry point of the
``chatcore.plugins`` group like any third-party plugin, and enabled with a
``[[plugins]]`` table (``plugin = "metrics"``). Nothing here is imported unless
a config names it.
"""

from __future__ import annotations

__all__: list[str] = []
