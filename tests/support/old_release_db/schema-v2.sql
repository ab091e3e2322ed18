-- chatcore 0.1.0 after m001_initial, m002_rag_and_memory
CREATE TABLE "_migrations" (
   "name" TEXT PRIMARY KEY,
   "applied_at" TEXT
);
CREATE TABLE "conversations" (
   "id" TEXT PRIMARY KEY,
   "title" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "updated_at" TEXT NOT NULL,
   "backend" TEXT,
   "model" TEXT,
   "system" TEXT,
   "metadata" TEXT NOT NULL DEFAULT '{}',
   "deleted_at" TEXT
);
CREATE INDEX "idx_conversations_updated_at"
    ON "conversations" ("updated_at");
CREATE TABLE "messages" (
   "id" TEXT PRIMARY KEY,
   "conversation_id" TEXT NOT NULL REFERENCES "conversations"("id") ON DELETE CASCADE,
   "seq" INTEGER NOT NULL,
   "role" TEXT NOT NULL,
   "content" TEXT NOT NULL,
   "status" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "model" TEXT,
   "tokens_in" INTEGER,
   "tokens_out" INTEGER,
   "metadata" TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX "idx_messages_conversation_id_seq"
    ON "messages" ("conversation_id", "seq");
CREATE TABLE "plugin_kv" (
   "namespace" TEXT,
   "key" TEXT,
   "value" TEXT,
   "updated_at" TEXT,
   PRIMARY KEY ("namespace", "key")
);
CREATE TABLE "sync_state" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
CREATE TABLE "documents" (
   "id" TEXT PRIMARY KEY,
   "path" TEXT NOT NULL,
   "title" TEXT NOT NULL,
   "sha256" TEXT NOT NULL,
   "size" INTEGER NOT NULL,
   "added_at" TEXT NOT NULL,
   "metadata" TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX "idx_documents_path"
    ON "documents" ("path");
CREATE TABLE "chunks" (
   "id" INTEGER PRIMARY KEY,
   "document_id" TEXT NOT NULL REFERENCES "documents"("id") ON DELETE CASCADE,
   "ordinal" INTEGER NOT NULL,
   "heading" TEXT,
   "text" TEXT NOT NULL,
   "embedding" BLOB,
   "embed_model" TEXT
);
CREATE UNIQUE INDEX "idx_chunks_document_id_ordinal"
    ON "chunks" ("document_id", "ordinal");
CREATE VIRTUAL TABLE "chunks_fts" USING FTS5 (
    "heading", "text",
    tokenize='porter',
    content="chunks"
);
CREATE TRIGGER "chunks_ai" AFTER INSERT ON "chunks" BEGIN
  INSERT INTO "chunks_fts" (rowid, "heading", "text") VALUES (new.rowid, new."heading", new."text");
END;
CREATE TRIGGER "chunks_ad" AFTER DELETE ON "chunks" BEGIN
  INSERT INTO "chunks_fts" ("chunks_fts", rowid, "heading", "text") VALUES('delete', old.rowid, old."heading", old."text");
END;
CREATE TRIGGER "chunks_au" AFTER UPDATE OF "heading", "text" ON "chunks" BEGIN
  INSERT INTO "chunks_fts" ("chunks_fts", rowid, "heading", "text") VALUES('delete', old.rowid, old."heading", old."text");
  INSERT INTO "chunks_fts" (rowid, "heading", "text") VALUES (new.rowid, new."heading", new."text");
END;
CREATE TABLE rag_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TRIGGER chunks_generation_insert AFTER INSERT ON chunks BEGIN UPDATE rag_state SET value = value + 1 WHERE key = 'generation'; END;
CREATE TRIGGER chunks_generation_delete AFTER DELETE ON chunks BEGIN UPDATE rag_state SET value = value + 1 WHERE key = 'generation'; END;
CREATE TRIGGER chunks_generation_update AFTER UPDATE OF embedding, embed_model, text, heading ON chunks BEGIN UPDATE rag_state SET value = value + 1 WHERE key = 'generation'; END;
CREATE TABLE "memories" (
   "id" TEXT PRIMARY KEY,
   "user" TEXT NOT NULL,
   "content" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "metadata" TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX "idx_memories_user_created_at"
    ON "memories" ("user", "created_at");
INSERT INTO [_migrations] VALUES ('m001_initial', '2026-12-03T15:23:25.739244+00:00');
INSERT INTO [_migrations] VALUES ('m002_rag_and_memory', '2026-12-03T15:23:25.742554+00:00');
INSERT INTO [rag_state] VALUES ('generation', 0);
