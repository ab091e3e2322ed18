"""The RAG index in the engine's SQLite file: documents, chunks, FTS5 and vectors.

Blocking calls on one connection of its own (WAL, busy timeout), safe to call
from worker threads one at a time. The tables are the ``rag`` migration set
(``_rag_schema.py``), applied whenever the index opens a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import threading
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlite_utils import Database

from chatcore.errors import ChatcoreError
from chatcore.messages import new_id
from chatcore.plugin import connect_database, write_transaction

from ._ingest import FORMATS, ChunkDraft, IngestError, chunk_blocks, parse_bytes
from ._rag_schema import RAG_MIGRATIONS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from contextlib import AbstractContextManager

    from numpy.typing import NDArray

__all__ = [
    "INDEX_VERSION",
    "RRF_K",
    "DocumentInfo",
    "Hit",
    "IngestOutcome",
    "RagError",
    "RagIndex",
    "decode_vector",
    "encode_vector",
    "fts_query",
    "reciprocal_rank_fusion",
]

INDEX_VERSION = 1
"""Bumped when parsing or chunking changes, so unchanged files are chunked again."""
RRF_K = 60
"""The k of reciprocal rank fusion: 1 / (k + rank); 60 as in Cormack et al. (2009)."""
INSERT_BATCH = 256
"""Chunks inserted per executemany: a large file's chunks are never all in memory."""
MAX_QUERY_TOKENS = 32
_PREFIX_MIN = 4

# Words that match nearly every chunk; dropped from a query unless nothing else is left.
_STOPWORDS = frozenset(
    " ".join(
        [
            "a an and are as at be but by can could did do does for from had has have how i if",
            "in into is it its me my no not of on or our should so than that the their them",
            "then there these they this to was we were what when where which who whom why will",
            "with would you your",
        ]
    ).split()
)
_TOKEN = re.compile(r"\w+")
K = TypeVar("K")


class RagError(ChatcoreError):
    """RAG cannot do what was asked (tables missing, an embedder that cannot embed...)."""


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with its document and score (higher is better)."""

    chunk_id: int
    document_id: str
    path: str
    title: str
    ordinal: int
    heading: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """One indexed document, as `rag list` shows it."""

    id: str
    path: str
    title: str
    sha256: str
    size: int
    added_at: str
    chunks: int
    embedded: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "title": self.title,
            "size": self.size,
            "added_at": self.added_at,
            "chunks": self.chunks,
            "embedded": self.embedded,
        }


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What adding one file did: ``added``, ``updated`` or ``unchanged``."""

    path: Path
    status: str
    document_id: str
    chunks: int


# --------------------------------------------------------------------------- pure helpers


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any word of ``text``; None when it has no words.

    Each word is quoted, so nothing the user types (quotes, ``*``, ``AND``,
    ``NEAR``, column filters) is read as FTS syntax.
    """
    tokens = list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))
    content = [t for t in tokens if t not in _STOPWORDS] or tokens
    if not content:
        return None
    return " OR ".join(f'"{t}"' for t in content[:MAX_QUERY_TOKENS])


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], *, k: int = RRF_K
) -> list[tuple[K, float]]:
    """Fuse ranked lists: each item scores the sum of 1 / (k + rank) over the lists (rank from 1).

    Returns items best first; ties keep the order in which items were first seen.
    """
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))


def encode_vector(vector: Sequence[float]) -> bytes:
    """Unit-length float32 little-endian bytes (so cosine is a dot product)."""
    norm = math.sqrt(sum(x * x for x in vector))
    values = array("f", (x / norm for x in vector) if norm else vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def decode_vector(blob: bytes) -> array[float]:
    values = array("f")
    values.frombytes(blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass(frozen=True, slots=True)
class _Vectors:
    """Every stored vector of one model and width, as one matrix (a row per chunk id)."""

    generation: object
    ids: NDArray[np.int64]
    matrix: NDArray[np.float32]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- the index


class RagIndex:
    """Documents and chunks in the engine's database, searched by BM25 and by vectors."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        conn = connect_database(self.path)
        self._conn = conn
        self.db = Database(conn, execute_plugins=False)
        try:
            RAG_MIGRATIONS.apply(self.db)
        except BaseException:
            conn.close()
            raise
        tables = set(self.db.table_names())
        # A database from before the generation counter: changes are noticed through
        # data_version (other connections) and _writes (this one) instead, less precisely.
        self._has_generation = "rag_state" in tables
        self._writes = 0
        self._vectors: _Vectors | None = None
        self._vectors_key: tuple[str, int] | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RagIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- writing

    def ingest_file(
        self, path: Path, *, chunk_chars: int, overlap_chars: int, force: bool = False
    ) -> IngestOutcome:
        """Add or refresh one file; an unchanged file (same bytes, same chunking) is left alone.

        A changed file's chunks are replaced in one transaction.

        The file's text is held once; its chunks are cut lazily and inserted in
        batches inside the transaction, so a large file never exists as a list of
        chunks.

        Raises:
            IngestError: the file is unreadable or a corrupt PDF; ``NotText`` (a
                subclass) when it is binary or not UTF-8.
        """
        resolved = Path(path).resolve()
        fmt = FORMATS.get(resolved.suffix.lower())
        if fmt is None:
            raise IngestError(f"unsupported file type {resolved.suffix or '(none)'!r}")
        try:
            data = resolved.read_bytes()
        except OSError as exc:
            raise IngestError(exc.strerror or str(exc)) from None
        sha256 = hashlib.sha256(data).hexdigest()
        metadata = {
            "format": fmt,
            "chunk_chars": chunk_chars,
            "overlap_chars": overlap_chars,
            "index_version": INDEX_VERSION,
        }
        existing = self._rows(
            "SELECT id, sha256, metadata FROM documents WHERE path = ?", [str(resolved)]
        )
        if existing and not force:
            doc_id, old_sha, old_meta = existing[0]
            if old_sha == sha256 and json.loads(old_meta) == metadata:
                rows = self._rows("SELECT COUNT(*) FROM chunks WHERE document_id = ?", [doc_id])
                return IngestOutcome(resolved, "unchanged", doc_id, int(rows[0][0]))
        size = len(data)
        # Decoded eagerly, so a binary or undecodable file fails before any write, and
        # the bytes can go: from here on only the text is held.
        parsed = parse_bytes(data, format=fmt, name=resolved.name)
        del data
        drafts = chunk_blocks(parsed.blocks, chunk_chars=chunk_chars, overlap_chars=overlap_chars)
        with self._lock, self._transaction():
            conn = self._conn
            if existing:
                doc_id = existing[0][0]
                conn.execute("DELETE FROM chunks WHERE document_id = ?", [doc_id])
                conn.execute(
                    "UPDATE documents SET sha256 = ?, size = ?, added_at = ?, metadata = ? "
                    "WHERE id = ?",
                    [sha256, size, _now(), json.dumps(metadata), doc_id],
                )
            else:
                doc_id = new_id()
                conn.execute(
                    "INSERT INTO documents (id, path, title, sha256, size, added_at, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        doc_id,
                        str(resolved),
                        parsed.title,
                        sha256,
                        size,
                        _now(),
                        json.dumps(metadata),
                    ],
                )
            self._writes += 1
            count = self._insert_chunks(doc_id, drafts)
            # The title is final only once every block was read (a first heading may be late).
            conn.execute("UPDATE documents SET title = ? WHERE id = ?", [parsed.title, doc_id])
        return IngestOutcome(resolved, "updated" if existing else "added", doc_id, count)

    def _insert_chunks(self, document_id: str, drafts: Iterable[ChunkDraft]) -> int:
        count = 0
        batch: list[tuple[str, int, str | None, str]] = []
        for ordinal, draft in enumerate(drafts):
            batch.append((document_id, ordinal, draft.heading or None, draft.text))
            count += 1
            if len(batch) >= INSERT_BATCH:
                self._conn.executemany(_INSERT_CHUNK, batch)
                batch.clear()
        if batch:
            self._conn.executemany(_INSERT_CHUNK, batch)
        return count

    def _transaction(self) -> AbstractContextManager[None]:
        return write_transaction(self._conn)

    def remove(self, key: str) -> list[DocumentInfo]:
        """Remove documents by id (or a unique prefix of 4+ chars), file path, or folder path.

        Returns the documents removed ([] when nothing matched).
        """
        matches = self._match(key)
        if matches:
            with self._lock, self._transaction():
                self._writes += 1
                for doc in matches:
                    self._conn.execute("DELETE FROM chunks WHERE document_id = ?", [doc.id])
                    self._conn.execute("DELETE FROM documents WHERE id = ?", [doc.id])
        return matches

    def _match(self, key: str) -> list[DocumentInfo]:
        by_id = self.list_documents(where="d.id = ?", params=[key])
        if by_id:
            return by_id
        resolved = str(Path(key).expanduser().resolve())
        by_path = self.list_documents(where="d.path = ?", params=[resolved])
        if by_path:
            return by_path
        folder = resolved.rstrip("/") + "/"
        under = self.list_documents(where="substr(d.path, 1, ?) = ?", params=[len(folder), folder])
        if under:
            return under
        if len(key) >= _PREFIX_MIN:
            prefixed = self.list_documents(where="substr(d.id, 1, ?) = ?", params=[len(key), key])
            if len(prefixed) == 1:
                return prefixed
        return []

    # ---------------------------------------------------------------- embeddings

    def chunks_to_embed(self, model: str, limit: int) -> list[tuple[int, str]]:
        """Chunks with no vector from ``model`` yet: ``(chunk id, text to embed)``."""
        rows = self._rows(
            "SELECT id, heading, text FROM chunks "
            "WHERE embedding IS NULL OR embed_model IS NOT ? ORDER BY id LIMIT ?",
            [model, limit],
        )
        return [(row[0], embedding_text(row[1], row[2])) for row in rows]

    def count_to_embed(self, model: str) -> int:
        rows = self._rows(
            "SELECT COUNT(*) FROM chunks WHERE embedding IS NULL OR embed_model IS NOT ?", [model]
        )
        return int(rows[0][0])

    def set_embeddings(self, model: str, vectors: Iterable[tuple[int, Sequence[float]]]) -> int:
        """Store one vector per chunk id (normalised float32); returns how many were stored."""
        rows = [(encode_vector(vector), model, chunk_id) for chunk_id, vector in vectors]
        with self._lock, self._transaction():
            self._writes += 1
            self._conn.executemany(
                "UPDATE chunks SET embedding = ?, embed_model = ? WHERE id = ?", rows
            )
        return len(rows)

    # ---------------------------------------------------------------- reading

    def list_documents(self, *, where: str = "1", params: Sequence[Any] = ()) -> list[DocumentInfo]:
        """Documents with their chunk counts, by path."""
        rows = self._rows(
            "SELECT d.id, d.path, d.title, d.sha256, d.size, d.added_at, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id), "
            "(SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id "
            "AND c.embedding IS NOT NULL) "
            f"FROM documents d WHERE {where} ORDER BY d.path",
            params,
        )
        return [DocumentInfo(*row) for row in rows]

    def chunk_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM chunks")[0][0])

    def search_bm25(self, query: str, *, limit: int, min_score: float = 0.0) -> list[Hit]:
        """Chunks matching any word of ``query`` scoring above ``min_score``, best first.

        The score is ``-bm25()`` (SQLite's BM25 is negative, lower is better).
        """
        match = fts_query(query)
        if match is None or limit <= 0:
            return []
        # Rank inside FTS5 first and join only the top rows: joining every match
        # before the sort costs a lookup per matching chunk.
        rows = self._rows(
            f"SELECT {_HIT_COLUMNS}, -top.rank_score AS score FROM ("
            "SELECT rowid, bm25(chunks_fts) AS rank_score FROM chunks_fts "
            "WHERE chunks_fts MATCH ? ORDER BY rank_score LIMIT ?) AS top "
            "JOIN chunks c ON c.id = top.rowid JOIN documents d ON d.id = c.document_id "
            "ORDER BY top.rank_score",
            [match, limit],
        )
        return [hit for hit in map(_hit, rows) if hit.score > min_score]

    def search_vector(
        self, vector: Sequence[float], *, model: str, limit: int, min_similarity: float = 0.0
    ) -> list[Hit]:
        """Chunks embedded by ``model`` with cosine above ``min_similarity``, most similar first.

        One matrix-vector product over the cached vectors; ties go to the higher chunk id.
        """
        if limit <= 0 or not len(vector):
            return []
        query = np.frombuffer(encode_vector(vector), dtype="<f4")
        with self._lock:
            vectors = self._current_vectors(model, len(query))
        if not len(vectors.ids):
            return []
        similarities = vectors.matrix @ query
        count = len(similarities)
        # Everything at least as similar as the limit-th best: ties at the cut are all
        # kept, so which of them win is decided by the sort below, not by chance.
        cut = np.partition(similarities, count - limit)[count - limit] if limit < count else -2.0
        top = np.flatnonzero((similarities >= cut) & (similarities > min_similarity))
        # lexsort: the last key is the primary one.
        top = top[np.lexsort((-vectors.ids[top], -similarities[top]))][:limit]
        ranked = [(int(vectors.ids[i]), float(similarities[i])) for i in top]
        found = self.hits_by_id([chunk_id for chunk_id, _ in ranked])
        return [_with_score(found[chunk_id], sim) for chunk_id, sim in ranked if chunk_id in found]

    def _generation(self) -> object:
        """A value that changes whenever chunks or vectors change, whoever wrote them."""
        if self._has_generation:
            row = self._conn.execute(
                "SELECT value FROM rag_state WHERE key = 'generation'"
            ).fetchone()
            return int(row[0]) if row else None
        (data_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return (int(data_version), self._writes)

    def _current_vectors(self, model: str, dims: int) -> _Vectors:
        """The cached matrix for ``model`` and ``dims``, reloaded only when the index changed.

        Call with ``self._lock`` held. Vectors of another width come from another
        model setup and are not comparable: they are left out.
        """
        key = (model, dims)
        cached = self._vectors
        if (
            cached is not None
            and self._vectors_key == key
            and cached.generation == self._generation()
        ):
            return cached
        self._conn.execute("BEGIN")  # one snapshot: the generation and the rows agree
        try:
            generation = self._generation()
            rows = self._conn.execute(
                "SELECT id, embedding FROM chunks WHERE embed_model = ? "
                "AND length(embedding) = ? ORDER BY id",
                [model, dims * 4],
            ).fetchall()
        finally:
            self._conn.execute("COMMIT")
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4")
        del rows
        loaded = _Vectors(
            generation,
            ids,
            matrix.reshape(len(ids), dims).astype(np.float32, copy=False),
        )
        self._vectors, self._vectors_key = loaded, key
        return loaded

    def hits_by_id(self, chunk_ids: Sequence[int]) -> dict[int, Hit]:
        """The chunks of these ids (score 0), keyed by id."""
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = self._rows(
            f"SELECT {_HIT_COLUMNS}, 0.0 FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"WHERE c.id IN ({marks})",
            list(chunk_ids),
        )
        return {hit.chunk_id: hit for hit in map(_hit, rows)}

    def search_hybrid(
        self,
        query: str,
        vector: Sequence[float],
        *,
        model: str,
        limit: int,
        min_score: float = 0.0,
        min_similarity: float = 0.0,
        k: int = RRF_K,
    ) -> list[Hit]:
        """BM25 and cosine rankings fused by reciprocal rank fusion; score is the fused score."""
        pool = max(limit * 5, 20)
        lexical = self.search_bm25(query, limit=pool, min_score=min_score)
        semantic = self.search_vector(
            vector, model=model, limit=pool, min_similarity=min_similarity
        )
        by_id = {hit.chunk_id: hit for hit in [*semantic, *lexical]}
        fused = reciprocal_rank_fusion(
            [[h.chunk_id for h in lexical], [h.chunk_id for h in semantic]], k=k
        )
        return [_with_score(by_id[chunk_id], score) for chunk_id, score in fused[:limit]]


def embedding_text(heading: str | None, text: str) -> str:
    """What is embedded for a chunk: its heading path gives the text its context."""
    return f"{heading}\n{text}" if heading else text


_INSERT_CHUNK = "INSERT INTO chunks (document_id, ordinal, heading, text) VALUES (?, ?, ?, ?)"
_HIT_COLUMNS = "c.id, c.document_id, d.path, d.title, c.ordinal, c.heading, c.text"


def _hit(row: Sequence[Any]) -> Hit:
    return Hit(
        chunk_id=row[0],
        document_id=row[1],
        path=row[2],
        title=row[3],
        ordinal=row[4],
        heading=row[5] or "",
        text=row[6],
        score=float(row[7]),
    )


def _with_score(hit: Hit, score: float) -> Hit:
    return Hit(
        hit.chunk_id,
        hit.document_id,
        hit.path,
        hit.title,
        hit.ordinal,
        hit.heading,
        hit.text,
        float(score),
    )
