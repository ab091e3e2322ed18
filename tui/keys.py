"""Which ``[tui.keys]`` entries can't work: the message box gets those keys first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding, BindingsMap
from textual.keys import key_to_character

from tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from textual.binding import BindingType
    from textual.dom import DOMNode

__all__ = ["unusable_keys"]


def unusable_keys(
    keymap: Mapping[str, str], behind_prompt: Iterable[BindingType]
) -> dict[str, str]:
    """Entries of ``keymap`` (action id → keys) that the message box would swallow, each
    with a one-line warning; ``behind_prompt`` are the bindings it sits in front of.

    While the message box has focus, which is most of the time, it gets keys first:
    what it types (letters), sends and breaks lines with (enter, shift+enter) and
    edits with (ctrl+a, ctrl+k...) never reach the app's and the chat's own
    bindings, unless they are priority bindings, which in turn would make a letter
    impossible to type. Such an action keeps its default key.
    """
    editing = _keys_of(PromptInput)
    bindings = {b.id: b for b in behind_prompt if isinstance(b, Binding) and b.id}
    refused: dict[str, str] = {}
    for binding_id, keys in sorted(keymap.items()):
        binding = bindings.get(binding_id)
        if binding is None:
            continue
        stays = f"so {binding_id} stays on {binding.key.split(',')[0]}"
        for key in sorted(_keys_of(keys)):
            character = key_to_character(key)
            if character is not None and character.isprintable():
                typed = "box, you couldn't type it any more" if binding.priority else "box instead"
                reason = f"{key} is typed into the message {typed}, {stays}; "
                reason += "pick a key with ctrl, alt or a function key."
            elif key in PromptInput.OWN_KEYS and not binding.priority:
                reason = (
                    f"the message box {PromptInput.OWN_KEYS[key]} with {key} and gets it "
                    f"first while you type, {stays}; pick another key."
                )
            elif key in editing and not binding.priority:
                reason = (
                    f"the message box edits with {key} and gets it first while you "
                    f"type, {stays}; pick another key."
                )
            else:
                continue
            refused[binding_id] = f"[tui.keys] {binding_id} = {keys!r}: {reason}"
            break
    return refused


def _keys_of(source: type[DOMNode] | str) -> set[str]:
    """The keys a widget class binds (its bases' too), or those a keymap value names,
    spelled the way Textual stores them."""
    if isinstance(source, str):
        return {b.key for b in Binding.make_bindings([Binding(source, "noop")])}
    keys: set[str] = set()
    for cls in source.__mro__:
        keys.update(BindingsMap(cls.__dict__.get("BINDINGS", [])).key_to_bindings)
    return keys
