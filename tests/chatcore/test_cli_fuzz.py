"""Fuzzing `chatcore ask` in process: whatever comes in, an exit code and never a traceback.

Random bytes on stdin (not UTF-8, NULs, control characters), empty and huge input,
and odd option values: every run ends with 0, 1, 2 or 130, prints no traceback, and
leaves a database that passes SQLite's integrity check.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.cli import cli

HUGE = b"x" * 300_000  # over max_message_chars
OPTIONS = st.lists(
    st.one_of(
        st.just(["--json"]),
        st.just(["--raw"]),
        st.just(["-c"]),
        st.tuples(st.just("--backend"), st.sampled_from(["echo", "nope", "", "ECHO"])).map(list),
        st.tuples(st.just("--model"), st.text(max_size=20)).map(list),
        st.tuples(st.just("--system"), st.text(max_size=200)).map(list),
        st.tuples(st.just("--conversation"), st.sampled_from(["", "0", "ffffff", "zz"])).map(list),
        st.just(["--no-such-option"]),
    ),
    max_size=4,
).map(lambda groups: [arg for group in groups for arg in group])
STDIN = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"\n", b"\r\n", b"\x00", b"caf\xe9", HUGE, "héllo\n".encode()]),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
ARGUMENT = st.one_of(st.none(), st.text(max_size=50))


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(options=OPTIONS, stdin=STDIN, argument=ARGUMENT)
def test_ask_ends_with_an_exit_code_never_a_traceback(
    data_dir: Path, options: list[str], stdin: bytes, argument: str | None
) -> None:
    args = ["ask", *options]
    if argument is not None:
        args.append(argument)
    result = CliRunner().invoke(cli, args, input=stdin)
    assert result.exit_code in (0, 1, 2, 130), (args, stdin[:80], result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        stdin[:80],
        repr(result.exception),
    )
    assert "Traceback" not in result.output
    database = data_dir / "chatcore.db"
    if database.exists():
        with sqlite3.connect(database) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
