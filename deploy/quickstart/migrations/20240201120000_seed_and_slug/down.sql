-- Undoes the schema change of migration.sql only. The rows it seeded are
-- data, like any row written since: they stay.

-- AlterTable
ALTER TABLE "Post" DROP COLUMN "slug";
