"""The shape check every embedding answer goes through (``backends._common``)."""

from __future__ import annotations

from typing import Any

import pytest

from backends._common import checked_embeddings, one_line
from chatcore.errors import BackendError

WHERE: dict[str, str] = {
    "backend": "local",
    "url": "http://127.0.0.1:8080/v1",
    "model": "emb",
    "key": "embedding_model",
}


def test_flat_vectors_of_one_length_come_back_as_floats() -> None:
    assert checked_embeddings([[1, 2], (0.5, 3)], ["a", "b"], **WHERE) == [[1.0, 2.0], [0.5, 3.0]]


@pytest.mark.parametrize(
    ("vectors", "problem"),
    [
        ([[1.0]], "1 vectors for 2 texts"),
        ([[1.0, 2.0], [1.0]], "vectors of different lengths (2 and 1 numbers)"),
        ([[1.0], []], "no vector for text 2"),
        ([[1.0], ["x"]], "a vector of something other than numbers for text 2"),
        ([[1.0], [[1.0], [2.0]]], "one vector per token (2 vectors for text 2)"),
    ],
)
def test_a_wrong_shape_is_one_line_naming_the_model(vectors: list[Any], problem: str) -> None:
    with pytest.raises(BackendError) as info:
        checked_embeddings(vectors, ["a", "b"], **WHERE)
    assert str(info.value).startswith(
        f"local: the embedding model 'emb' at http://127.0.0.1:8080/v1 returned {problem}"
    )
    assert not info.value.retryable


def test_one_line_folds_line_breaks_and_blank_runs() -> None:
    assert one_line("a\n  b\r\n\tc  ") == "a b c"
