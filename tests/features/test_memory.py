"""The memory feature through the real engine: token budget, background summary, facts.

A recording backend (configured as ``test_memory:RecordingBackend``, as a user
would name a plugin class) keeps every context it receives, so the tests assert
on exactly what a model would have been sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore import ChatContext, Chunk, ConfigError, Message, open_engine
from chatcore.messages import Role
from chatcore.plugin import BaseBackendProvider, PluginConfig, PluginMetadata, PluginType
from features._tokens import _raw_cost, _raw_cost_ascii, context_tokens, estimate_tokens
from features.memory import (
    FACTS_PREFIX,
    SUMMARY_PREFIX,
    SUMMARY_PURPOSE,
    Memory,
    MemoryStore,
    parse_command,
)

WriteConfig = Callable[..., Path]

CONTEXTS: list[ChatContext] = []
"""Chat requests the recording backend received, in order."""
SUMMARIES: list[ChatContext] = []
"""Summary requests (``metadata["purpose"] == SUMMARY_PURPOSE``) it received."""
GATE: dict[str, trio.Event] = {}
"""When set, summary requests wait for ``GATE["summary"]`` (one job in flight)."""

SYSTEM = "You are a careful assistant who answers in plain English."
REPLY = (
    "Here is a considered answer that restates the question, weighs a few options "
    "and ends with a short recommendation you can act on today."
)


class RecordingBackend(BaseBackendProvider):
    """Records each context; answers chat turns with REPLY and summaries with SUMMARY-n."""

    metadata = PluginMetadata(name="recording", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        if context.metadata.get("purpose") == SUMMARY_PURPOSE:
            SUMMARIES.append(context)
            if "summary" in GATE:
                await GATE["summary"].wait()
            text = f"SUMMARY-{len(SUMMARIES)} of the talk so far."
        else:
            CONTEXTS.append(context)
            text = REPLY
        yield Chunk(text=text, index=0, done=True)


@pytest.fixture(autouse=True)
def _reset_recordings() -> None:
    CONTEXTS.clear()
    SUMMARIES.clear()
    GATE.clear()


def memory_config(write_config: WriteConfig, **memory: Any) -> Path:
    lines = [
        'default_backend = "recorder"',
        f'system_prompt = "{SYSTEM}"',
        "[backends.recorder]",
        'plugin = "test_memory:RecordingBackend"',
        "[[plugins]]",
        'plugin = "memory"',
        "[plugins.config]",
    ]
    for key, value in memory.items():
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{key} = {text}")
    return write_config("\n".join(lines).replace("'", '"') + "\n")


def long_message(turn: int, words: int = 110) -> str:
    filler = " ".join(f"detail{turn}x{i}" if i % 9 == 0 else "context" for i in range(words))
    return f"Turn {turn}: please consider this question about gardening. {filler}"


def budget_of(max_context_tokens: int, reserve_reply_tokens: int) -> int:
    return max_context_tokens - reserve_reply_tokens


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds; the ceiling fails the test instead of hanging."""
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.002)


# --- the token budget ----------------------------------------------------------------------
async def test_fifty_long_turns_stay_within_budget_keeping_system_prompt_and_newest_turns(
    write_config: WriteConfig,
) -> None:
    config = memory_config(write_config, max_context_tokens=1000, reserve_reply_tokens=200)
    budget = budget_of(1000, 200)
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        sent: list[str] = []
        for turn in range(50):
            text = long_message(turn)
            reply = await conversation.send(text)
            sent.append(text)
            context = CONTEXTS[-1]
            assert context_tokens(context) <= budget, turn
            assert context.system == SYSTEM
            assert context.messages[-1].role is Role.USER
            assert context.messages[-1].content == text
            contents = [m.content for m in context.messages]
            if turn > 0:
                # The newest earlier turn (question and answer) is always kept.
                assert sent[-2] in contents
                assert contents[-2] == REPLY
            info = reply.metadata["memory"]
            assert info["kept"] + info["dropped"] == 2 * turn
        # Long turns cannot all fit: most of the conversation fell out of the window.
        assert info["dropped"] > 80
        assert sent[0] not in [m.content for m in CONTEXTS[-1].messages]


async def test_five_hundred_turns_at_2000_tokens_stay_within_budget_and_carry_the_summary(
    write_config: WriteConfig,
) -> None:
    # The acceptance case. Summaries are written in the background while
    # the conversation goes on, so no turn waits for one.
    config = memory_config(write_config, max_context_tokens=2000)
    budget = budget_of(2000, 512)
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        for turn in range(500):
            await conversation.send(long_message(turn, words=40))
    assert len(CONTEXTS) == 500
    with_summary = []
    for turn, context in enumerate(CONTEXTS):
        assert context_tokens(context) <= budget, turn
        assert context.system == SYSTEM
        assert context.messages[-1].content == long_message(turn, words=40)
        if turn:
            assert context.messages[-3].content == long_message(turn - 1, words=40)
        first = context.messages[0]
        with_summary.append(first.role is Role.SYSTEM and first.content.startswith(SUMMARY_PREFIX))
    # Once a summary exists, every later turn carries it.
    start = with_summary.index(True)
    assert all(with_summary[start:])
    assert start < 50
    # Refreshed only when more than 6 dropped messages are uncovered: at most one call
    # per 7 of the ~1,000 messages that fall out, not one per turn.
    assert 2 <= len(SUMMARIES) <= 1000 / 7 + 1


async def test_a_message_larger_than_the_budget_is_still_sent_alone(
    write_config: WriteConfig,
) -> None:
    config = memory_config(write_config, max_context_tokens=300, reserve_reply_tokens=100)
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        await conversation.send("a short first question")
        huge = long_message(1, words=400)
        reply = await conversation.send(huge)
        assert [m.content for m in CONTEXTS[-1].messages] == [huge]
        assert reply.metadata["memory"]["over_budget"] is True


async def test_bad_memory_settings_name_the_key(write_config: WriteConfig) -> None:
    config = memory_config(write_config, max_context_tokens="lots")
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.max_context_tokens"):
        async with open_engine(config, backend="recorder"):
            pass
    config = memory_config(write_config, max_context_tokens=500, reserve_reply_tokens=500)
    with pytest.raises(ConfigError, match=r"reserve_reply_tokens \(500\) must be less"):
        async with open_engine(config, backend="recorder"):
            pass


# --- the running summary -------------------------------------------------------------------


def stored_summary(engine: Any, conversation_id: str) -> dict[str, Any] | None:
    value = engine.store.kv_get("memory", f"summary:{conversation_id}")
    assert value is None or isinstance(value, dict)
    return value


async def test_summary_is_made_in_the_background_stored_reused_and_refreshed_when_stale(
    write_config: WriteConfig,
) -> None:
    config = memory_config(
        write_config, max_context_tokens=700, reserve_reply_tokens=100, summary_refresh_messages=4
    )
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        statuses: list[dict[str, Any]] = []
        for turn in range(24):
            reply = await conversation.send(long_message(turn, words=60))
            info = dict(reply.metadata["memory"])
            statuses.append(info)
            if info.get("summary_job") == "scheduled":
                calls = len(SUMMARIES)
                await wait_for(
                    lambda calls=calls: (
                        (s := stored_summary(engine, conversation.id)) is not None
                        and s["summary"].startswith(f"SUMMARY-{calls} ")
                    )
                )
                # Stored is not yet finished: the job ends just after its last write.
                memory = engine.plugins.get_plugin("memory")
                with trio.fail_after(10):
                    while (await memory.health())["summary_jobs"]:
                        await trio.sleep(0.002)
            if turn >= 1 and statuses[-2].get("summary") in ("used", "stale"):
                # Whatever was stored before this turn is what the model saw.
                first = CONTEXTS[-1].messages[0]
                assert first.role is Role.SYSTEM
                assert first.content.startswith(SUMMARY_PREFIX + "SUMMARY-")

        scheduled = [i for i, s in enumerate(statuses) if s.get("summary_job") == "scheduled"]
        first_drop = next(i for i, s in enumerate(statuses) if s["dropped"])
        # The first drop has no summary yet: the turn goes on without waiting for one.
        assert statuses[first_drop]["summary"] == "pending"
        assert scheduled[0] == first_drop
        # One backend call per scheduled job: reused turns cost no summary call.
        assert len(SUMMARIES) == len(scheduled) >= 2
        reused = [s for s in statuses if s.get("summary") == "used"]
        assert len(reused) >= 4
        for info in statuses:
            if info.get("summary") in ("used", "stale"):
                uncovered = info["dropped"] - info["summarized"]
                assert (info["summary"] == "stale") == (uncovered > 4)
                assert (info.get("summary_job") == "scheduled") == (info["summary"] == "stale")
        # A refresh folds the previous summary into the new one.
        assert "SUMMARY-1 of the talk so far." in SUMMARIES[1].messages[0].content

        stored = stored_summary(engine, conversation.id)
        assert stored is not None
        assert set(stored) == {"summary", "covers_until_message_id", "updated_at"}
        history = await conversation.messages()
        ids = [m.id for m in history]
        covered = ids.index(stored["covers_until_message_id"]) + 1
        assert covered == statuses[scheduled[-1]]["dropped"]
        # The summary request carries the dropped messages themselves.
        assert history[covered - 1].content in SUMMARIES[-1].messages[0].content


async def test_one_summary_job_per_conversation_and_the_turn_never_waits_for_it(
    write_config: WriteConfig,
) -> None:
    GATE["summary"] = trio.Event()
    config = memory_config(write_config, max_context_tokens=500, reserve_reply_tokens=100)
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        infos = []
        for turn in range(8):
            reply = await conversation.send(long_message(turn, words=60))
            infos.append(reply.metadata["memory"])
        jobs = [info.get("summary_job") for info in infos if info["dropped"]]
        assert jobs[0] == "scheduled"
        assert set(jobs[1:]) == {"running"}
        assert len(SUMMARIES) == 1
        assert stored_summary(engine, conversation.id) is None
        GATE["summary"].set()
        await wait_for(lambda: stored_summary(engine, conversation.id) is not None)
        reply = await conversation.send("and now?")
        assert CONTEXTS[-1].messages[0].content.startswith(SUMMARY_PREFIX + "SUMMARY-1")


async def test_the_summary_survives_a_restart(write_config: WriteConfig) -> None:
    config = memory_config(write_config, max_context_tokens=500, reserve_reply_tokens=100)
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        for turn in range(6):
            reply = await conversation.send(long_message(turn, words=60))
            if reply.metadata["memory"].get("summary_job") == "scheduled":
                await wait_for(lambda: stored_summary(engine, conversation.id) is not None)
        conversation_id = conversation.id
    summary_calls = len(SUMMARIES)
    async with open_engine(config, backend="recorder") as engine:
        reply = await engine.conversation(conversation_id).send("what did we cover?")
        assert CONTEXTS[-1].messages[0].content.startswith(SUMMARY_PREFIX + "SUMMARY-")
        assert reply.metadata["memory"]["summary"] in ("used", "stale")
    assert len(SUMMARIES) >= summary_calls


# --- long-term memory ----------------------------------------------------------------------


def facts_in(context: ChatContext) -> list[str]:
    return [
        m.content for m in context.messages if m.role is Role.SYSTEM and FACTS_PREFIX in m.content
    ]


async def test_remember_stores_the_fact_and_relevant_turns_get_it(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = memory_config(write_config, user="alice")
    async with open_engine(config, backend="recorder") as engine:
        conversation = engine.conversation()
        reply = await conversation.send("Remember that my dog is called Rex.")
        assert reply.content == "OK, I'll remember that my dog is called Rex."
        assert reply.metadata["answered_by"] == "memory"
        assert CONTEXTS == []  # answered without the backend

        with MemoryStore(data_dir / "chatcore.db") as store:
            assert [(m.user, m.content) for m in store.list(user="alice")] == [
                ("alice", "my dog is called Rex")
            ]
            assert store.list(user="default") == []

        await conversation.send("What should I feed my dogs?")
        assert facts_in(CONTEXTS[-1]) == [f"{FACTS_PREFIX}\n- my dog is called Rex"]
        assert CONTEXTS[-1].messages[-1].content == "What should I feed my dogs?"

        await conversation.send("What is the capital of France?")
        assert facts_in(CONTEXTS[-1]) == []

        reply = await conversation.send("forget that my dog is called Rex")
        assert reply.content == "OK, I've forgotten: my dog is called Rex."
        await conversation.send("What should I feed my dog?")
        assert facts_in(CONTEXTS[-1]) == []
        reply = await conversation.send("forget that my dog is called Rex")
        assert reply.content.startswith("I had nothing remembered about")


async def test_facts_are_per_user_and_at_most_max_memories(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(
        memory_config(write_config, user="bob", max_memories=2), backend="recorder"
    ) as engine:
        conversation = engine.conversation()
        for fact in ("my cat is Tom", "my cat likes fish", "my cat is grey", "I live in Oslo"):
            await conversation.send(f"remember: {fact}")
        await conversation.send("Tell me about my cat")
        (facts,) = facts_in(CONTEXTS[-1])
        assert facts.count("\n- ") == 2 and "Oslo" not in facts
    async with open_engine(memory_config(write_config, user="carol"), backend="recorder") as engine:
        await engine.conversation().send("Tell me about my cat")
        assert facts_in(CONTEXTS[-1]) == []


async def test_without_answer_directly_the_remember_turn_goes_to_the_backend(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(
        memory_config(write_config, answer_directly=False), backend="recorder"
    ) as engine:
        reply = await engine.conversation().send("remember that I take my tea without sugar")
        assert reply.content == REPLY
        # The fact is injected into the very turn that stored it.
        assert facts_in(CONTEXTS[-1]) == [f"{FACTS_PREFIX}\n- I take my tea without sugar"]
        assert reply.metadata["memory"]["remembered"]


# --- properties ----------------------------------------------------------------------------

KNOWN_CL100K_COUNTS = [
    # Counts of OpenAI's cl100k_base encoding (GPT-4), from tiktoken's published examples
    # and cl100k's rules (digits go in groups of at most three).
    ("tiktoken is great!", 6),
    ("2 + 2 = 4", 7),
    ("お誕生日おめでとう", 9),
    ("Hello world", 2),
    ("Hello, world!", 4),
    ("The quick brown fox jumps over the lazy dog.", 10),
    ("1234567890", 4),
]


@pytest.mark.parametrize(("text", "true_count"), KNOWN_CL100K_COUNTS)
def test_estimate_is_conservative_and_close_on_known_counts(text: str, true_count: int) -> None:
    estimate = estimate_tokens(text)
    assert true_count <= estimate <= 1.25 * true_count + 1


def test_estimate_orders_scripts_and_code_sensibly() -> None:
    english = "the weather is nice today and we will go for a walk"
    assert estimate_tokens("") == 0
    assert estimate_tokens(english) >= len(english.split())
    assert estimate_tokens("天气很好我们去散步吧今天") > estimate_tokens("abcdefghijkl")
    # A long prose paragraph lands between 2.5 and 5 characters per token.
    prose = " ".join([english] * 40)
    assert len(prose) / 5 <= estimate_tokens(prose) <= len(prose) / 2.5
    code = "def add(a, b):\n    return a + b\n" * 10
    assert estimate_tokens(code) >= len(code.split())


@given(st.text(max_size=200), st.text(max_size=200))
def test_estimate_is_monotonic_under_appending(first: str, second: str) -> None:
    assert estimate_tokens(first) <= estimate_tokens(first + second)
    assert estimate_tokens(first + second) >= len((first + second).split())


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=120))
def test_the_ascii_fast_path_counts_like_the_general_rules(text: str) -> None:
    assert _raw_cost_ascii(text) == pytest.approx(_raw_cost(text))


def test_commands_are_recognised_only_at_the_start() -> None:
    assert parse_command("Remember that my dog is called Rex.") == (
        "remember",
        "my dog is called Rex",
    )
    assert parse_command("please remember: I'm vegetarian") == ("remember", "I'm vegetarian")
    assert parse_command("FORGET that I live in Oslo!") == ("forget", "I live in Oslo")
    assert parse_command("Do you remember that song?") is None
    assert parse_command("remember that") is None
    assert parse_command("rememberthat x") is None


def _enrich(plugin: Memory, context: ChatContext) -> ChatContext:
    async def run() -> ChatContext:
        return (await plugin.enrich(context)).unwrap()

    return trio.run(run)


_turn_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=300
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(_turn_text, max_size=40),
    new=_turn_text,
    system=st.none() | _turn_text,
    max_context_tokens=st.integers(256, 2000),
    reserve=st.integers(0, 255),
)
def test_trimming_never_exceeds_the_budget_and_keeps_the_newest_user_message(
    history: list[str], new: str, system: str | None, max_context_tokens: int, reserve: int
) -> None:
    plugin = Memory()  # outside an engine: no store, no summaries, trimming only
    trio.run(
        plugin.initialize,
        PluginConfig(
            name="memory",
            config={"max_context_tokens": max_context_tokens, "reserve_reply_tokens": reserve},
        ),
    )
    messages = [
        Message(role=Role.USER if i % 2 == 0 else Role.ASSISTANT, content=text)
        for i, text in enumerate(history)
    ]
    newest = Message.user(new)
    context = ChatContext(conversation_id="c", messages=(*messages, newest), system=system)
    enriched = _enrich(plugin, context)

    assert enriched.messages[-1] is newest
    assert enriched.system == system
    kept = list(enriched.messages[:-1])
    # What is kept is the newest part of the history, in order.
    assert kept == messages[len(messages) - len(kept) :]
    mandatory = ChatContext(conversation_id="c", messages=(newest,), system=system)
    if context_tokens(mandatory) <= max_context_tokens - reserve:
        assert context_tokens(enriched) <= max_context_tokens - reserve
        assert "over_budget" not in enriched.metadata["memory"]
    else:
        assert kept == []
