"""The wire format between the engine and a plugin's child process: JSON lines.

Messages, contexts, chunks, results, hook failures and plugin status rows cross
as tagged JSON objects (``{"$t": "message", ...}``) and come back as the same
types; anything else must be plain JSON. Every turn sends the same history
again, so each side caches the JSON of the messages it sent and the objects it
decoded.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from .._plugins._records import PluginStatus
from ..hooks import HookFailure, HookType
from ..messages import ChatContext, Chunk, Message, Usage
from ..result import PluginResult

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CHILD_METHODS",
    "encode_answer",
    "encode_request",
    "from_wire",
    "plain",
    "to_wire",
    "wire_json",
]

CHILD_METHODS = frozenset(
    {"process_message", "process_reply", "process_chunk", "enrich", "handle", "health"}
)
"""Methods the child will call on the plugin (besides ``hook:<method>`` for ``@hook``s)."""
_NEWLINE = b"\n"

_TAG = "$t"


def to_wire(value: Any) -> Any:
    """``value`` as JSON-able data; messages, contexts, chunks and results keep their type.

    Raises:
        TypeError: a value JSON cannot carry (name and type in the message).
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Message):
        return {
            _TAG: "message",
            "id": value.id,
            "role": value.role.value,
            "content": value.content,
            "created_at": value.created_at.isoformat(),
            "model": value.model,
            "tokens_in": value.tokens_in,
            "tokens_out": value.tokens_out,
            "status": value.status.value,
            "metadata": plain(value.metadata),
        }
    if isinstance(value, ChatContext):
        return {
            _TAG: "context",
            "conversation_id": value.conversation_id,
            "messages": [to_wire(m) for m in value.messages],
            "backend": value.backend,
            "model": value.model,
            "temperature": value.temperature,
            "max_tokens": value.max_tokens,
            "stream": value.stream,
            "system": value.system,
            "metadata": plain(value.metadata),
        }
    if isinstance(value, Chunk):
        usage = value.usage
        return {
            _TAG: "chunk",
            "text": value.text,
            "index": value.index,
            "done": value.done,
            "usage": None if usage is None else [usage.tokens_in, usage.tokens_out],
            "model": value.model,
        }
    if isinstance(value, PluginResult):
        return {
            _TAG: "result",
            "success": value.success,
            "data": to_wire(value.data),
            "error": value.error,
            "execution_time_ms": value.execution_time_ms,
            "metadata": plain(value.metadata),
            "reply": to_wire(value.reply),
        }
    if isinstance(value, HookFailure):
        return {
            _TAG: "hook_failure",
            "name": value.name,
            "hook_type": value.hook_type.value,
            "error": value.error,
            "timed_out": value.timed_out,
        }
    if isinstance(value, PluginStatus):
        return {_TAG: "plugin_status", **plain(value.as_dict())}
    return plain(value)


def plain(value: Any) -> Any:
    """Plain JSON data: mappings become objects, sequences lists, enums their values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "items"):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(
        f"{type(value).__name__} cannot cross the process boundary "
        "(metadata must be JSON: text, numbers, booleans, lists and mappings)"
    )


def from_wire(data: Any) -> Any:
    """The inverse of ``to_wire``."""
    if not isinstance(data, dict | list):
        return data
    if isinstance(data, list):
        return [from_wire(v) for v in data]
    tag = data.get(_TAG)
    if tag is None:
        return {k: from_wire(v) for k, v in data.items()}
    if tag == "message":
        return _decode_message(data)
    if tag == "context":
        return ChatContext(
            conversation_id=data["conversation_id"],
            messages=tuple(from_wire(m) for m in data["messages"]),
            backend=data["backend"],
            model=data["model"],
            temperature=data["temperature"],
            max_tokens=data["max_tokens"],
            stream=data["stream"],
            system=data["system"],
            metadata=from_wire(data["metadata"]),
        )
    if tag == "chunk":
        usage = data["usage"]
        return Chunk(
            text=data["text"],
            index=data["index"],
            done=data["done"],
            usage=None if usage is None else Usage(usage[0], usage[1]),
            model=data["model"],
        )
    if tag == "result":
        return PluginResult(
            success=data["success"],
            data=from_wire(data["data"]),
            error=data["error"],
            execution_time_ms=data["execution_time_ms"],
            metadata=from_wire(data["metadata"]),
            reply=from_wire(data["reply"]),
        )
    if tag == "hook_failure":
        return HookFailure(
            name=data["name"],
            hook_type=HookType(data["hook_type"]),
            error=data["error"],
            timed_out=data["timed_out"],
        )
    if tag == "plugin_status":
        known = {f.name for f in fields(PluginStatus)}
        return PluginStatus(**{k: v for k, v in data.items() if k in known})
    raise ValueError(f"unknown wire type {tag!r}")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def wire_json(obj: Any) -> bytes:
    """One protocol line: compact JSON and a newline."""
    return _dumps(obj).encode() + _NEWLINE


# Every turn sends the same history again, as the same (immutable) Message objects, so
# each side keeps the JSON of the messages it sent and the objects it decoded. Keyed by
# object identity, holding the object so its id can't be reused while cached.
_CACHE_LIMIT = 4096
_sent: dict[int, tuple[Message, str]] = {}
_received: dict[tuple[Any, ...], Message] = {}


def _message_json(message: Message) -> str:
    cached = _sent.get(id(message))
    if cached is not None and cached[0] is message:
        return cached[1]
    text = _dumps(to_wire(message))
    if len(_sent) >= _CACHE_LIMIT:
        _sent.clear()
    _sent[id(message)] = (message, text)
    return text


def _fragment(value: Any) -> str:
    """The JSON of ``to_wire(value)``, built from cached pieces where it can be."""
    if isinstance(value, Message):
        return _message_json(value)
    if isinstance(value, ChatContext):
        rest = to_wire(value.replace(messages=()))
        del rest["messages"]
        messages = ",".join([_message_json(m) for m in value.messages])
        return f'{{"messages":[{messages}],{_dumps(rest)[1:]}'
    if isinstance(value, PluginResult):
        head = {
            _TAG: "result",
            "success": value.success,
            "error": value.error,
            "execution_time_ms": value.execution_time_ms,
            "metadata": plain(value.metadata),
        }
        data, reply = _fragment(value.data), _fragment(value.reply)
        return f'{{"data":{data},"reply":{reply},{_dumps(head)[1:]}'
    return _dumps(to_wire(value))


def encode_request(call_id: int, method: str, args: Sequence[Any]) -> bytes:
    """The line that calls ``method(*args)`` in the child."""
    encoded = ",".join([_fragment(a) for a in args])
    return f'{{"id":{call_id},"method":{_dumps(method)},"args":[{encoded}]}}\n'.encode()


def encode_answer(call_id: Any, result: Any) -> bytes:
    """The line that answers call ``call_id`` with ``result``."""
    return f'{{"id":{_dumps(call_id)},"ok":true,"result":{_fragment(result)}}}\n'.encode()


def _decode_message(data: dict[str, Any]) -> Message:
    metadata = data["metadata"]
    key = None
    if not metadata:
        key = (
            data["id"],
            data["content"],
            data["created_at"],
            data["role"],
            data["status"],
            data["model"],
            data["tokens_in"],
            data["tokens_out"],
        )
        cached = _received.get(key)
        if cached is not None:
            return cached
    message = Message(
        role=data["role"],
        content=data["content"],
        id=data["id"],
        created_at=datetime.fromisoformat(data["created_at"]),
        model=data["model"],
        tokens_in=data["tokens_in"],
        tokens_out=data["tokens_out"],
        status=data["status"],
        metadata=from_wire(metadata),
    )
    if key is not None:
        if len(_received) >= _CACHE_LIMIT:
            _received.clear()
        _received[key] = message
    return message
