"""The plugin machinery behind ``chatcore.plugin``: lifecycle, discovery, ordering, the manager.

Plugin authors import from ``chatcore.plugin``; the runtime imports from here.
"""

from ._base import BaseBackendProvider as BaseBackendProvider
from ._base import BaseFeatureExtension as BaseFeatureExtension
from ._base import BaseMessageProcessor as BaseMessageProcessor
from ._base import BaseMiddleware as BaseMiddleware
from ._base import BasePlugin as BasePlugin
from ._base import CallNext as CallNext
from ._base import PluginConfig as PluginConfig
from ._base import PluginMetadata as PluginMetadata
from ._base import PluginType as PluginType
from ._base import hook as hook
from ._discovery import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ._discovery import entry_points as entry_points
from ._discovery import load_plugin_file as load_plugin_file
from ._discovery import resolve_plugin_class as resolve_plugin_class
from ._host import BackgroundJob as BackgroundJob
from ._host import BackgroundJobs as BackgroundJobs
from ._host import PluginHost as PluginHost
from ._lifecycle import ALLOWED_TRANSITIONS as ALLOWED_TRANSITIONS
from ._lifecycle import PluginLifecycle as PluginLifecycle
from ._lifecycle import PluginState as PluginState
from ._manager import PluginManager as PluginManager
from ._ordering import topological_order as topological_order
from ._records import LoadedPlugin as LoadedPlugin
from ._records import PluginStatus as PluginStatus
