"""Process isolation: a plugin with ``isolation = "process"`` runs in a child process.

``_wire`` is the JSON-lines protocol, ``_process`` the parent side (the child's
actor and its supervisor), ``_proxy`` the stand-in the manager gets in place of
the plugin, ``_child`` the program the child runs. Nothing is imported here up
front: the child (``python -m chatcore.isolation._child``) imports this package
before it has limited itself, and should not pay for the parent's modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._process import PluginProcess as PluginProcess
    from ._process import PluginSupervisor as PluginSupervisor
    from ._process import ProcessStatus as ProcessStatus
    from ._proxy import process_plugin as process_plugin
    from ._wire import encode_answer as encode_answer
    from ._wire import encode_request as encode_request
    from ._wire import from_wire as from_wire
    from ._wire import to_wire as to_wire
    from ._wire import wire_json as wire_json

_EXPORTS = {
    "PluginProcess": "._process",
    "PluginSupervisor": "._process",
    "ProcessStatus": "._process",
    "process_plugin": "._proxy",
    "encode_answer": "._wire",
    "encode_request": "._wire",
    "from_wire": "._wire",
    "to_wire": "._wire",
    "wire_json": "._wire",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'chatcore.isolation' has no attribute {name!r}")
    value = getattr(import_module(module_name, __name__), name)
    globals()[name] = value
    return value
