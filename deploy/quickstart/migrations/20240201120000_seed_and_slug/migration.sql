-- Seed a few rows so the backup and row counts have something to show.
INSERT INTO "User" ("email", "name") VALUES
    ('ada@example.com', 'Ada'),
    ('grace@example.com', 'Grace');
INSERT INTO "Post" ("title", "authorId") SELECT 'Hello from ' || "name", "id" FROM "User";

-- AlterTable
ALTER TABLE "Post" ADD COLUMN "slug" TEXT;
UPDATE "Post" SET "slug" = lower(replace("title", ' ', '-')) WHERE "slug" IS NULL;
