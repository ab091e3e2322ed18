"""RAG index: BM25 over FTS5, hostile queries, vectors, and hybrid retrieval with RRF.

``HashEmbedder`` and ``DownEmbedder`` are backends the engine and CLI tests
configure as ``test_rag_index:HashEmbedder``: deterministic stand-ins for an
embedding model.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import RAG_DOCS

from chatcore import ChatContext, Chunk
from chatcore.errors import BackendUnavailable
from chatcore.plugin import BaseBackendProvider, PluginMetadata, PluginType
from chatcore.store import Store
from features._rag_index import (
    RagIndex,
    decode_vector,
    encode_vector,
    fts_query,
    reciprocal_rank_fusion,
)
from features.rag import Embedder, RagSettings, embed_missing, resolve_embedder, retrieve

DOCS = RAG_DOCS
DIMS = 512
CONCEPTS = {"car": "vehicle", "automobile": "vehicle", "vehicle": "vehicle"}
"""Words the test embedder treats as one meaning: what BM25 cannot see."""


def hash_vector(text: str) -> list[float]:
    """Bag of words (synonyms folded into one concept), hashed into DIMS buckets."""
    vector = [0.0] * DIMS
    for token in re.findall(r"\w+", text.lower()):
        token = CONCEPTS.get(token, token)
        vector[int(hashlib.sha256(token.encode()).hexdigest(), 16) % DIMS] += 1.0
    return vector


class HashEmbedder(BaseBackendProvider):
    """A backend whose ``embed`` is deterministic bag-of-words hashing; chat echoes."""

    metadata = PluginMetadata(name="hash_embedder", plugin_type=PluginType.BACKEND_PROVIDER)
    calls: int = 0

    async def stream(self, context: ChatContext) -> Any:  # type: ignore[override]
        last = context.last_user_message
        yield Chunk(text=f"hash: {last.content if last else ''}", index=0, done=True)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        HashEmbedder.calls += 1
        return [hash_vector(text) for text in texts]


class DownEmbedder(HashEmbedder):
    """An embed backend that cannot be reached."""

    metadata = PluginMetadata(name="down_embedder", plugin_type=PluginType.BACKEND_PROVIDER)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise BackendUnavailable("cannot reach 127.0.0.1:9 (connection refused)", backend="down")


@pytest.fixture
def index(tmp_path: Path) -> Any:
    db = tmp_path / "rag.db"
    Store(db).close()
    with RagIndex(db) as opened:
        yield opened


def add_text(index: RagIndex, folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    index.ingest_file(path, chunk_chars=1200, overlap_chars=200)


def add_docs(index: RagIndex) -> None:
    for path in sorted(DOCS.rglob("*")):
        if path.suffix in {".md", ".rst", ".txt", ".html"} and not path.name.startswith("."):
            index.ingest_file(path, chunk_chars=1200, overlap_chars=200)


# --------------------------------------------------------------------------- BM25


def test_bm25_ranks_the_section_that_answers_first(index: RagIndex) -> None:
    add_docs(index)
    hits = index.search_bm25("how do I clean solar panels?", limit=3)
    assert (Path(hits[0].path).name, hits[0].heading) == ("solar.html", "Solar Panels > Cleaning")
    assert hits[0].score > 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    hits = index.search_bm25("apt-get zephyrwidget service", limit=3)
    assert hits[0].heading == "Widget Guide > Install > Linux"
    assert index.search_bm25("refund policy", limit=1)[0].path.endswith("faq.txt")
    assert index.search_bm25("quantum chromodynamics", limit=3) == []


def test_min_score_drops_weak_matches(index: RagIndex) -> None:
    add_docs(index)
    scores = [h.score for h in index.search_bm25("widget schedule", limit=10)]
    assert len(scores) >= 3
    cut = (scores[0] + scores[-1]) / 2
    kept = index.search_bm25("widget schedule", limit=10, min_score=cut)
    assert 0 < len(kept) < len(scores)
    assert all(h.score > cut for h in kept)


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced quote',
        "*",
        "solar*",
        "AND",
        "panels AND",
        "OR NOT",
        "NEAR(solar panels, 2)",
        "heading:solar",
        "text : panels",
        "^solar",
        "(((",
        "solar - panels",
        "a'b \" c",
        "",
        "   ",
        "🙂 emoji",
        "{text heading}: solar",
        "x" * 5000,
    ],
)
def test_queries_with_fts_syntax_never_raise(index: RagIndex, query: str) -> None:
    add_docs(index)
    hits = index.search_bm25(query, limit=5)
    if "solar" in query or "panels" in query:
        assert any("solar" in h.path for h in hits)


def test_fts_query_quotes_every_word_and_drops_stopwords() -> None:
    assert fts_query('how do I "install" * on Linux AND') == '"install" OR "linux"'
    assert fts_query("the and of") == '"the" OR "and" OR "of"'
    assert fts_query("*** \" ''") is None


# --------------------------------------------------------------------------- RRF and vectors


def test_reciprocal_rank_fusion_sums_one_over_k_plus_rank() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b"]
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    # k decides how much a top rank counts against agreement between lists.
    assert dict(reciprocal_rank_fusion([["x", "y"], ["y"]], k=1)) == pytest.approx(
        {"x": 1 / 2, "y": 1 / 3 + 1 / 2}
    )
    # Ties keep the order items were first seen.
    assert [i for i, _ in reciprocal_rank_fusion([["p"], ["q"]])] == ["p", "q"]
    assert reciprocal_rank_fusion([]) == []


def test_vectors_are_stored_as_unit_float32() -> None:
    blob = encode_vector([3.0, 4.0])
    assert len(blob) == 8
    assert list(decode_vector(blob)) == pytest.approx([0.6, 0.8])
    assert list(decode_vector(encode_vector([0.0, 0.0]))) == [0.0, 0.0]
    unit = decode_vector(encode_vector(hash_vector("a b")))
    assert math.isclose(sum(x * x for x in unit), 1.0, rel_tol=1e-6)


SYNONYM_DOCS = {
    "a.txt": "Automobile automobile automobile registration forms, fees, offices, stamps, queues.",
    "b.txt": "Car care: car wash, vehicle polish.",
    "c.txt": "Automobile car vehicle.",
    **{f"filler{n}.txt": f"Bananas number {n} are yellow and sweet." for n in range(5)},
}


@pytest.fixture
async def embedded(index: RagIndex, tmp_path: Path) -> tuple[RagIndex, Embedder]:
    for name, text in SYNONYM_DOCS.items():
        add_text(index, tmp_path, name, text)
    embedder = Embedder("hash", "hash:test", HashEmbedder())
    assert await embed_missing(index, embedder, batch_size=3) == len(SYNONYM_DOCS)
    return index, embedder


def names(hits: list[Any]) -> list[str]:
    return [Path(h.path).name for h in hits]


async def test_hybrid_fuses_bm25_and_cosine_rankings(
    embedded: tuple[RagIndex, Embedder],
) -> None:
    index, embedder = embedded
    query = hash_vector("automobile")
    # BM25 sees only the literal word; the vectors also see its synonyms.
    assert names(index.search_bm25("automobile", limit=10)) == ["a.txt", "c.txt"]
    semantic = index.search_vector(query, model="hash:test", limit=10, min_similarity=0.0)
    assert names(semantic) == ["c.txt", "b.txt", "a.txt"]  # bananas: similarity 0, left out
    assert semantic[0].score == pytest.approx(1.0)

    hybrid = index.search_hybrid("automobile", query, model="hash:test", limit=10)
    # c: 1/62 + 1/61 beats a: 1/61 + 1/63; b is found by its vector alone (1/62).
    assert names(hybrid) == ["c.txt", "a.txt", "b.txt"]
    assert [h.score for h in hybrid] == pytest.approx([1 / 62 + 1 / 61, 1 / 61 + 1 / 63, 1 / 62])

    settings = RagSettings(top_k=2)
    found = await retrieve(index, "automobile", settings=settings, embedder=embedder)
    assert names(found) == ["c.txt", "a.txt"]
    assert names(await retrieve(index, "automobile", settings=settings)) == ["a.txt", "c.txt"]


async def test_only_vectors_of_the_configured_model_are_compared(
    embedded: tuple[RagIndex, Embedder],
) -> None:
    index, _ = embedded
    query = hash_vector("automobile")
    assert index.search_vector(query, model="another:model", limit=5) == []
    # A query of another size is not comparable with the stored vectors either.
    assert index.search_vector(query[:10], model="hash:test", limit=5) == []
    assert index.count_to_embed("hash:test") == 0
    assert index.count_to_embed("another:model") == len(SYNONYM_DOCS)


async def test_embedding_does_not_touch_the_text_index(
    embedded: tuple[RagIndex, Embedder], tmp_path: Path
) -> None:
    index, embedder = embedded
    before = names(index.search_bm25("automobile", limit=10))
    add_text(index, tmp_path, "d.txt", "An automobile parade.")
    assert await embed_missing(index, embedder) == 1
    assert sorted(names(index.search_bm25("automobile", limit=10))) == sorted([*before, "d.txt"])
    assert index.list_documents(where="d.path LIKE ?", params=["%d.txt"])[0].embedded == 1
    # FTS5 checks its index against the chunks table and raises if they disagree.
    index.db.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('integrity-check')")


async def test_an_unreachable_embedder_is_reported_and_a_plain_backend_refused() -> None:
    down = Embedder("down", "down:x", DownEmbedder())
    with pytest.raises(Exception, match=r"embed backend 'down' failed: BackendUnavailable"):
        await down.embed(["hello"])

    class NoEmbed(BaseBackendProvider):
        metadata = PluginMetadata(name="plain", plugin_type=PluginType.BACKEND_PROVIDER)

        async def stream(self, context: ChatContext) -> Any:  # type: ignore[override]
            yield Chunk(text="", index=0, done=True)

    async def backend(name: str) -> Any:
        return NoEmbed()

    with pytest.raises(Exception, match=r"backend 'plain' \(NoEmbed\) cannot embed text"):
        await resolve_embedder("plain", backend)
