"""The ``chatcore`` command line.

Heavy imports (Trio, pydantic, sqlite-utils, the engine) happen inside the
commands, so ``chatcore --help`` starts fast. Each private module holds one
group of commands and registers it on the root group when imported.

Plugins that add commands use the helpers exported here: the same ``--config``
and ``--json`` options, config lookup, error lines and exit codes as chatcore's
own commands.
"""

from __future__ import annotations

# Imported for their side effect: each module registers its commands on `cli`.
from . import _chat, _config, _history, _plugins, _replay, _sync  # noqa: F401
from ._common import config_option as config_option
from ._common import json_option as json_option
from ._common import load_command_config as load_command_config
from ._common import print_json as print_json
from ._common import run_guarded as run_guarded
from ._root import cli as cli
from ._root import main as main

__all__ = [
    "config_option",
    "json_option",
    "load_command_config",
    "main",
    "print_json",
    "run_guarded",
]
