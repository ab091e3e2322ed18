"""chatcore's message processors: content filter, PII redactor, normalizer.

Each is a plugin loaded by its short name (``plugin = "content_filter"``); the
classes are exported for scripts that build an engine's plugins by hand.
"""

from .content_filter import ContentFilter as ContentFilter
from .normalizer import Normalizer as Normalizer
from .pii_redactor import PIIRedactor as PIIRedactor
from .pii_redactor import redact_with as redact_with

__all__ = ["ContentFilter", "Normalizer", "PIIRedactor", "redact_with"]
