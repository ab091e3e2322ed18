"""Ids a person can type: `history list` shows short ids, every command taking an id accepts them.

UUIDv7 ids begin with their creation time, so conversations made on the same day share
their first eight or more characters; the short id is taken from the random last group.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chatcore.cli import cli
from chatcore.errors import AmbiguousConversationId, ConversationNotFound
from chatcore.messages import Message, new_id
from chatcore.store import DB_FILENAME, Store, TurnRecord

# Same millisecond, random tails that share their first five and seven characters.
TWIN_A = "01a24284-54ac-7000-8917-b586d5eda430"
TWIN_B = "01a24284-54ac-7001-9a1f-b586d1111111"
TWIN_C = "01a24284-54ac-7002-a000-b586d5e22222"
LONER = "01a24284-54ad-7000-b126-3f9c0a56ebdb"


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def write(store: Store, conversation_id: str, text: str) -> None:
    store.write_turns(
        [TurnRecord(conversation_id, (Message.user(text), Message.assistant(f"re: {text}")))]
    )


@pytest.fixture
def seeded(data_dir: Path) -> dict[str, str]:
    """The four conversations above, by title."""
    titles = {TWIN_A: "bees", TWIN_B: "tomatoes", TWIN_C: "compost", LONER: "sheds"}
    with Store(data_dir / DB_FILENAME) as store:
        for conversation_id, title in titles.items():
            write(store, conversation_id, title)
    return titles


def listed_short_ids() -> dict[str, str]:
    """id → what the `history list` table shows in its ID column."""
    rows = json.loads(invoke("history", "list", "--json").output)
    table = invoke("history", "list").output.splitlines()
    assert table[0].split()[0] == "ID"
    shown = [line.split()[0] for line in table[1:]]
    assert shown == [row["short_id"] for row in rows]
    return {row["id"]: row["short_id"] for row in rows}


def test_short_ids_are_the_shortest_unique_prefix_of_the_random_part(
    seeded: dict[str, str],
) -> None:
    assert listed_short_ids() == {
        TWIN_A: "b586d5ed",  # shares "b586d5e" with C
        TWIN_B: "b586d1",  # six at least, though "b586d1" is unique from its fifth
        TWIN_C: "b586d5e2",
        LONER: "3f9c0a",
    }


def test_short_ids_of_fresh_uuid7_ids_are_short_unique_and_not_the_timestamp(
    data_dir: Path,
) -> None:
    ids = [new_id() for _ in range(300)]  # all within a few milliseconds
    with Store(data_dir / DB_FILENAME) as store:
        store.write_turns([TurnRecord(i, (Message.user("hi"),)) for i in ids])
        short = store.short_ids(ids)
        assert len(set(short.values())) == len(ids)
        for conversation_id, shown in short.items():
            assert 6 <= len(shown) <= 8
            assert conversation_id[-12:].startswith(shown)
            assert store.resolve_conversation_id(shown) == conversation_id


def test_ids_that_are_not_uuids_show_a_prefix_of_the_whole_id(data_dir: Path) -> None:
    with Store(data_dir / DB_FILENAME) as store:
        for conversation_id in ("c", "notes-2024-05", "notes-2024-06", "b586d5"):
            write(store, conversation_id, conversation_id)
        write(store, TWIN_A, "bees")
        short = store.short_ids(["c", "notes-2024-05", "notes-2024-06", "b586d5", TWIN_A])
    assert short == {
        "c": "c",
        "notes-2024-05": "notes-2024-05",
        "notes-2024-06": "notes-2024-06",
        "b586d5": "b586d5",
        TWIN_A: "b586d5e",  # "b586d5" is another conversation's whole id
    }


def test_every_command_taking_an_id_accepts_the_listed_short_id(
    seeded: dict[str, str], tmp_path: Path
) -> None:
    short = listed_short_ids()
    shown = json.loads(invoke("history", "show", short[TWIN_A], "--json").output)
    assert shown["id"] == TWIN_A
    exported = json.loads(invoke("history", "export", short[TWIN_C], "--format", "json").output)
    assert exported["conversation"]["id"] == TWIN_C
    replayed = invoke("replay", short[LONER], "--json")
    assert replayed.exit_code == 0, replayed.output
    assert [t["reply_before"] for t in json.loads(replayed.output)] == ["re: sheds"]
    asked = json.loads(invoke("ask", "--conversation", short[TWIN_B], "more", "--json").output)
    assert asked["conversation_id"] == TWIN_B
    deleted = invoke("history", "delete", short[TWIN_B], "--yes")
    assert deleted.output == f"deleted {TWIN_B}  tomatoes\n"
    # A full-id prefix still works, as before.
    assert json.loads(invoke("history", "show", LONER[:13], "--json").output)["id"] == LONER


@pytest.mark.parametrize(
    "command",
    [
        ("history", "show"),
        ("history", "export"),
        ("history", "delete", "--yes"),
        ("ask", "hello", "--conversation"),
        ("replay",),
    ],
)
def test_an_ambiguous_prefix_is_an_error_listing_the_matches(
    seeded: dict[str, str], command: tuple[str, ...]
) -> None:
    result = CliRunner().invoke(cli, [*command, "b586d5"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith("error: conversation id 'b586d5' is ambiguous: it matches ")
    assert f"{TWIN_A} (bees)" in line and f"{TWIN_C} (compost)" in line
    assert TWIN_B not in line and "type more of it" in line
    # Nothing was deleted, asked or replayed on a guess.
    assert len(json.loads(invoke("history", "list", "--json").output)) == 4


def test_store_and_engine_raise_the_ambiguity_as_a_conversation_not_found(
    seeded: dict[str, str], data_dir: Path
) -> None:
    with Store(data_dir / DB_FILENAME) as store:
        with pytest.raises(AmbiguousConversationId, match=r"'01a24284' is ambiguous") as info:
            store.resolve_conversation_id("01a24284")
        assert isinstance(info.value, ConversationNotFound)
        assert set(info.value.matches) == {TWIN_A, TWIN_B, TWIN_C, LONER}
        assert store.resolve_conversation_id("b586d1") == TWIN_B
        assert store.resolve_conversation_id("3f9c") == LONER  # four characters will do
        assert store.resolve_conversation_id("ffffff") is None
        assert re.fullmatch(r"[0-9a-f]{6,}", store.short_ids([LONER])[LONER])
