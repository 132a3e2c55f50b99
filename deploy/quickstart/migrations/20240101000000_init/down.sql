-- Undoes migration.sql: the table goes with its primary key, the unique
-- index on "email" and the "User_id_seq" sequence of its SERIAL column.

-- DropTable
DROP TABLE "User";
