"""The in-memory vector matrix: same ranking as before, and it notices every writer."""

from __future__ import annotations

import heapq
import random
import sqlite3
from pathlib import Path

import pytest
from test_rag_index import hash_vector

from chatcore.store import Store
from features._rag_index import RagIndex, decode_vector, encode_vector

MODEL = "hash:test"
TOPICS = [
    "solar panels on the roof need cleaning twice a year",
    "the automobile registration office opens at nine",
    "tortoises hibernate through the winter in a cool box",
    "a car wash uses soft brushes and warm water",
    "bananas ripen faster next to apples",
    "install the widget with apt-get on linux",
    "refunds are paid within thirty days",
    "vehicle insurance covers theft and fire",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "rag.db"
    Store(path).close()
    RagIndex(path).close()  # the rag migration set makes its tables
    return path


def write_docs(index: RagIndex, folder: Path, texts: dict[str, str]) -> None:
    """Ingest each text as a file and give every chunk without a vector its hash vector."""
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)
        index.ingest_file(folder / name, chunk_chars=1200, overlap_chars=200)
    missing = index.chunks_to_embed(MODEL, 10_000)
    index.set_embeddings(MODEL, [(chunk_id, hash_vector(text)) for chunk_id, text in missing])


def found(index: RagIndex, query: str, limit: int = 10) -> list[str]:
    hits = index.search_vector(hash_vector(query), model=MODEL, limit=limit)
    return [Path(h.path).name for h in hits]


def pure_python_ranking(db: Path, query: list[float], limit: int) -> list[tuple[int, float]]:
    """The ranking as the previous implementation computed it: one dot product per row."""
    unit = decode_vector(encode_vector(query))
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, embedding FROM chunks WHERE embed_model = ? AND embedding IS NOT NULL",
            [MODEL],
        ).fetchall()
    scored = (
        (sum(a * b for a, b in zip(unit, decode_vector(blob), strict=True)), chunk_id)
        for chunk_id, blob in rows
        if len(blob) == len(unit) * 4
    )
    best = heapq.nlargest(limit, ((s, i) for s, i in scored if s > 0.0))
    return [(chunk_id, similarity) for similarity, chunk_id in best]


def test_the_matrix_ranks_exactly_as_the_pure_python_cosine_did(db: Path, tmp_path: Path) -> None:
    rng = random.Random(5)
    texts = {f"doc{n:02d}.txt": f"{TOPICS[n % len(TOPICS)]} number {n}" for n in range(60)}
    with RagIndex(db) as index:
        write_docs(index, tmp_path / "docs", texts)
        # Random 384-dim vectors: no two similarities tie, so the order is fully defined.
        ids = [row[0] for row in index._rows("SELECT id FROM chunks ORDER BY id")]
        vectors = [(i, [rng.gauss(0, 1) for _ in range(384)]) for i in ids]
        index.set_embeddings(MODEL, vectors)
        queries = [[rng.gauss(0, 1) for _ in range(384)] for _ in range(10)]
        queries.append(vectors[7][1])  # a stored vector finds itself first
        for query in queries:
            for limit in (1, 5, 100):
                expected = pure_python_ranking(db, query, limit)
                hits = index.search_vector(query, model=MODEL, limit=limit)
                assert [h.chunk_id for h in hits] == [chunk_id for chunk_id, _ in expected]
                assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
        assert index.search_vector(vectors[7][1], model=MODEL, limit=1)[0].chunk_id == ids[7]


def test_equal_similarities_rank_the_newer_chunk_first_as_before(db: Path, tmp_path: Path) -> None:
    with RagIndex(db) as index:
        write_docs(index, tmp_path, {f"same{n}.txt": f"copy {n}" for n in range(6)})
        ids = [row[0] for row in index._rows("SELECT id FROM chunks ORDER BY id")]
        index.set_embeddings(MODEL, [(i, [1.0, 0.0, 0.0]) for i in ids])
        for limit in (1, 3, 6):
            hits = index.search_vector([2.0, 0.0, 0.0], model=MODEL, limit=limit)
            assert [h.chunk_id for h in hits] == sorted(ids, reverse=True)[:limit]
            expected = pure_python_ranking(db, [2.0, 0.0, 0.0], limit)
            assert [h.chunk_id for h in hits] == [chunk_id for chunk_id, _ in expected]


def test_a_write_from_another_connection_is_noticed(db: Path, tmp_path: Path) -> None:
    with RagIndex(db) as reader, RagIndex(db) as writer:
        write_docs(writer, tmp_path / "a", {"cars.txt": "automobile car vehicle"})
        assert found(reader, "vehicle") == ["cars.txt"]

        write_docs(writer, tmp_path / "b", {"trucks.txt": "vehicle vehicle lorry"})
        assert sorted(found(reader, "vehicle")) == ["cars.txt", "trucks.txt"]

        writer.remove(str(tmp_path / "a" / "cars.txt"))
        assert found(reader, "vehicle") == ["trucks.txt"]


def test_a_replaced_document_with_the_same_chunk_ids_is_seen_anew(db: Path, tmp_path: Path) -> None:
    # The changed file gets the ids its old chunks had (SQLite reuses the highest
    # rowid) and as many chunks: a count or max(id) check would keep stale vectors.
    with RagIndex(db) as reader, RagIndex(db) as writer:
        write_docs(writer, tmp_path, {"a.txt": "bananas ripen", "b.txt": "solar panels"})
        assert found(reader, "solar panels") == ["b.txt"]
        before = {
            h.chunk_id for h in reader.search_vector(hash_vector("x solar"), model=MODEL, limit=5)
        }
        write_docs(writer, tmp_path, {"b.txt": "tortoises hibernate"})
        assert found(reader, "solar panels") == []
        hits = reader.search_vector(hash_vector("tortoises"), model=MODEL, limit=5)
        assert [Path(h.path).name for h in hits] == ["b.txt"]
        assert {h.chunk_id for h in hits} == before


def test_the_matrix_is_kept_while_nothing_changes_and_other_tables_do_not_count(
    db: Path, tmp_path: Path
) -> None:
    with RagIndex(db) as index:
        write_docs(index, tmp_path, {"cars.txt": "automobile car vehicle"})
        found(index, "car")
        loaded = index._vectors
        found(index, "vehicle")
        assert index._vectors is loaded
        # The engine writes other tables of the same file all the time: no reload for that.
        with Store(db) as store:
            store.kv_set("elsewhere", "key", {"value": 1})
        found(index, "automobile")
        assert index._vectors is loaded
        (chunk_id,) = [h.chunk_id for h in index.search_bm25("automobile", limit=5)]
        index.set_embeddings(MODEL, [(chunk_id, hash_vector("bananas"))])
        assert found(index, "bananas") == ["cars.txt"]
        assert index._vectors is not loaded


def test_a_database_without_the_generation_counter_still_notices_writes(
    db: Path, tmp_path: Path
) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE rag_state")
        for name in ("insert", "delete", "update"):
            conn.execute(f"DROP TRIGGER chunks_generation_{name}")
    with RagIndex(db) as reader, RagIndex(db) as writer:
        write_docs(reader, tmp_path / "a", {"cars.txt": "automobile car vehicle"})
        assert found(reader, "vehicle") == ["cars.txt"]
        write_docs(writer, tmp_path / "b", {"trucks.txt": "vehicle lorry"})
        assert sorted(found(reader, "vehicle")) == ["cars.txt", "trucks.txt"]
        reader.remove(str(tmp_path / "b" / "trucks.txt"))
        assert found(reader, "vehicle") == ["cars.txt"]


def test_vectors_of_another_width_or_model_are_left_out(db: Path, tmp_path: Path) -> None:
    with RagIndex(db) as index:
        write_docs(index, tmp_path, {"cars.txt": "automobile car", "fruit.txt": "bananas"})
        (fruit,) = [d for d in index.list_documents() if d.path.endswith("fruit.txt")]
        chunk_id = index._rows("SELECT id FROM chunks WHERE document_id = ?", [fruit.id])[0][0]
        index.set_embeddings(MODEL, [(chunk_id, [1.0, 0.0, 0.0])])
        assert found(index, "bananas automobile") == ["cars.txt"]
        assert index.search_vector([1.0, 0.0, 0.0], model=MODEL, limit=5)[0].chunk_id == chunk_id
        assert index.search_vector([1.0, 0.0, 0.0], model="other:model", limit=5) == []
        assert index.search_vector([], model=MODEL, limit=5) == []
