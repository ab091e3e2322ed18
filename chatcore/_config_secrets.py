"""Masking secrets for display: ``chatcore config show`` and error messages.

Secrets come from the environment and are never printed: a key whose last word
names a secret is shown as ``***``, and so is the password in a URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Judged on the last word of a key, so `api_key` and `access_token` are masked while
# `max_tokens` and `key_prefix` (not secrets) stay readable.
_SECRET_WORD_RE = re.compile(r"(key|token|secret|password|passwd|auth|authorization|credentials?)$")
_WORD_SPLIT_RE = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: str) -> bool:
    """Whether a setting of this name holds a secret (``api_key``, ``authToken``)."""
    words = [w for w in _WORD_SPLIT_RE.split(key) if w]
    return bool(words) and _SECRET_WORD_RE.search(words[-1].lower()) is not None


def mask_url(value: str) -> str:
    """``value`` with the password of its URL user part replaced by ``***``."""
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return value
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def mask(value: Any) -> Any:
    """A copy of JSON-like data with secret values and URL passwords masked."""
    if isinstance(value, dict):
        return {
            k: MASK if is_secret_key(str(k)) and _present(v) else mask(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return value


def _present(value: Any) -> bool:
    """True unless the value is None or empty (an unset secret is shown as unset)."""
    return value is not None and value != "" and value != {} and value != []
