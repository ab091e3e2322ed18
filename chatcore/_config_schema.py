"""Walking the settings models: which model sits at a key, and what each key means.

Error messages use :func:`model_at` to list the keys allowed where an unknown one
was written; ``chatcore config show --docs`` uses :func:`collect_docs`.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""What a backend or plugin instance name may contain."""

NAME_HINT = "use only letters, digits, '_', '.' and '-'"
""":data:`NAME_PATTERN` in words, for error messages."""

PLUGIN_OPTIONS_DOC = (
    "Any other key is plugin-specific (host, base_url, api_key, ...) and is passed to the "
    "plugin; one with a settings_model (the built-in backends) rejects keys it doesn't know."
)


def unwrap_optional(tp: Any) -> Any:
    """``X`` for ``X | None`` and ``Annotated[X, ...]``; any other type as it is."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    if get_origin(tp) is Annotated:
        return get_args(tp)[0]
    return tp


def is_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class (a TOML table with known keys)."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the table at ``loc`` below ``root``, if it is one."""
    tp: Any = root
    for part in loc:
        tp = unwrap_optional(tp)
        if is_model(tp):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = unwrap_optional(tp)
    return tp if is_model(tp) else None


def collect_docs(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Map each dotted key below ``model`` to its field docstring, tables depth first."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        out[key] = info.description or ""
        tp = unwrap_optional(info.annotation)
        origin = get_origin(tp)
        if is_model(tp):
            out.update(collect_docs(tp, f"{key}."))
        elif origin is dict and is_model(get_args(tp)[1]):
            inner = get_args(tp)[1]
            out.update(collect_docs(inner, f"{key}.<name>."))
            if inner.model_config.get("extra") == "allow":
                out[f"{key}.<name>.<other>"] = PLUGIN_OPTIONS_DOC
        elif origin is list and is_model(get_args(tp)[0]):
            out.update(collect_docs(get_args(tp)[0], f"{key}[]."))
    return out
