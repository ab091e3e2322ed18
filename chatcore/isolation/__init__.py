"""Process isolation: a plugin with ``isolation = "process"`` runs in a child process.

``_wire`` is the JSON-lines protocol, ``_process`` the parent side (the child's
actor and its supervisor), ``_proxy`` the stand-in the manager gets in place of
the plugin, ``_child`` the program the child runs. The engine imports this
package only when a plugin asks for process isolation.
"""

from ._process import PluginProcess as PluginProcess
from ._process import PluginSupervisor as PluginSupervisor
from ._process import ProcessStatus as ProcessStatus
from ._proxy import process_plugin as process_plugin
