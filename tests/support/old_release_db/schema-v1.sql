-- chatcore 0.1.0 after m001_initial
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
INSERT INTO [_migrations] VALUES ('m001_initial', '2026-12-03T15:23:25.735032+00:00');
