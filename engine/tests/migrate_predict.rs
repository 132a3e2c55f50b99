//! `predict` on a real PostgreSQL: for each kind of statement that fails on
//! existing rows, a database with offending rows makes it report WillFail
//! with the exact count (and running the statement proves it fails); the
//! same bundle on clean data reports nothing (and the statement runs).
//!
//! Each test starts a cluster of its own.

mod common;

use std::time::Duration;

use runway_engine::migrate::predict::{Certainty, DataFinding, DataReport, PredictConfig, predict};
use runway_proto::bundle::MigrationFile;

/// A value stored in a non-key column of offending rows: it must never
/// reach `examples` or `message`.
const SENTINEL: &str = "secret-sentinel@example.com";

fn migration(name: &str, sql: &str) -> MigrationFile {
    MigrationFile { name: name.into(), sql: sql.into(), down: None }
}

async fn run(url: &str, bundle: &[MigrationFile]) -> DataReport {
    run_with(url, bundle, &PredictConfig::default()).await
}

async fn run_with(url: &str, bundle: &[MigrationFile], config: &PredictConfig) -> DataReport {
    let pending: Vec<&MigrationFile> = bundle.iter().collect();
    predict(url, &pending, config).await.expect("predict")
}

/// The report's only finding.
fn only(report: &DataReport) -> &DataFinding {
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    &report.findings[0]
}

/// Asserts a WillFail finding's place and count.
fn assert_will_fail(
    f: &DataFinding,
    kind: &str,
    migration: &str,
    line: usize,
    table: &str,
    columns: &[&str],
    count: i64,
) {
    assert_eq!(f.certainty, Certainty::WillFail, "{f:#?}");
    assert_eq!(f.kind, kind, "{f:#?}");
    assert_eq!(f.migration, migration, "{f:#?}");
    assert_eq!(f.line, line, "{f:#?}");
    assert_eq!(f.table, table, "{f:#?}");
    assert_eq!(f.columns, columns, "{f:#?}");
    assert_eq!(f.count, Some(count), "{f:#?}");
    assert!(f.message.contains("will fail"), "{f:#?}");
}

/// Runs a migration's SQL in one transaction and returns the error it fails with.
fn fails(pg: &common::Cluster, sql: &str) -> String {
    match pg.try_psql("app", sql) {
        Ok(out) => panic!("the statement did not fail: {sql}\n{out}"),
        Err(e) => e,
    }
}

fn app() -> (common::Cluster, String) {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    (pg, url)
}

const USERS: &str = "CREATE TABLE \"User\" (\"id\" SERIAL PRIMARY KEY, \"email\" TEXT, \"name\" TEXT);";

#[tokio::test]
async fn set_not_null_over_nulls_will_fail() {
    let (pg, url) = app();
    pg.psql("app", USERS);
    pg.psql(
        "app",
        &format!(
            "INSERT INTO \"User\" (email, name) VALUES ('a@example.com', 'A'), (NULL, '{SENTINEL}'), ('b@example.com', 'B'), \
             (NULL, 'C'), (NULL, 'D')"
        ),
    );
    let sql = "-- AlterTable\n\nALTER TABLE \"User\" ALTER COLUMN \"email\" SET NOT NULL;\n";
    let bundle = [migration("20240101000000_email_required", sql)];

    let report = run(&url, &bundle).await;
    let f = only(&report);
    assert_will_fail(f, "not-null", "20240101000000_email_required", 3, "User", &["email"], 3);
    assert_eq!(f.examples, ["id=2", "id=4", "id=5"]);
    assert_eq!(f.message, "SET NOT NULL on User.email will fail: 3 row(s) have NULL");
    assert_eq!(f.query, "SELECT \"id\", \"email\" FROM \"User\" WHERE \"email\" IS NULL");
    assert_eq!(pg.psql("app", &f.query).lines().count(), 3, "the operator's query lists the rows");
    assert!(report.will_fail());
    assert!(report.checks >= 2, "{report:?}");
    assert!(fails(&pg, sql).contains("contains null values"));

    pg.psql("app", "UPDATE \"User\" SET email = 'x' || id WHERE email IS NULL");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(!report.will_fail());
    pg.psql("app", sql);
}

#[tokio::test]
async fn add_column_not_null_without_default_will_fail_on_a_table_with_rows() {
    let (pg, url) = app();
    pg.psql("app", USERS);
    pg.psql("app", "INSERT INTO \"User\" (email) SELECT 'u' || g FROM generate_series(1, 4) g");
    let sql = "ALTER TABLE \"User\" ADD COLUMN \"age\" INTEGER NOT NULL;\n";
    let with_default = "ALTER TABLE \"User\" ADD COLUMN \"plan\" TEXT NOT NULL DEFAULT 'free';\n";
    let bundle = [migration("1_age", sql), migration("2_plan", with_default)];

    let report = run(&url, &bundle).await;
    let f = only(&report);
    assert_will_fail(f, "add-column-not-null", "1_age", 1, "User", &["age"], 4);
    assert_eq!(f.examples.len(), 4, "{f:#?}");
    assert!(fails(&pg, sql).contains("contains null values"));

    pg.psql("app", "DELETE FROM \"User\"");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", &format!("{sql}{with_default}"));
}

#[tokio::test]
async fn unique_index_over_duplicates_honours_expressions_predicates_and_nulls() {
    let (pg, url) = app();
    pg.psql("app", "CREATE TABLE \"User\" (\"id\" SERIAL PRIMARY KEY, \"email\" TEXT, \"deletedAt\" TIMESTAMP, \"code\" TEXT)");
    pg.psql(
        "app",
        &format!(
            "INSERT INTO \"User\" (email, \"deletedAt\", code) VALUES \
             ('a@example.com', NULL, 'c1'), ('A@example.com', NULL, 'c2'), \
             ('{SENTINEL}', NULL, NULL), ('{SENTINEL}', NULL, NULL), ('{SENTINEL}', NULL, 'c3'), \
             ('gone@example.com', now(), 'c4'), ('gone@example.com', now(), 'c5'), \
             (NULL, NULL, 'c6'), (NULL, NULL, 'c7')"
        ),
    );
    // Two groups among live rows (a/A, the sentinel three times); deleted
    // rows are outside the predicate; NULLs are distinct.
    let index = "CREATE UNIQUE INDEX \"User_email_key\" ON \"User\" (lower(\"email\")) WHERE \"deletedAt\" IS NULL;\n";
    // Two NULL codes are one group when NULLs are not distinct.
    let constraint =
        "ALTER TABLE \"User\" ADD CONSTRAINT \"User_code_key\" UNIQUE NULLS NOT DISTINCT (\"code\");\n";
    let bundle = [migration("1_email", index), migration("2_code", &format!("-- codes\n{constraint}"))];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_will_fail(f, "unique", "1_email", 1, "User", &["lower(email)"], 2);
    let mut examples = f.examples.clone();
    examples.sort();
    assert_eq!(examples, ["id=1", "id=2", "id=3", "id=4", "id=5"]);
    assert_will_fail(&report.findings[1], "unique", "2_code", 2, "User", &["code"], 1);
    assert_eq!(report.findings[1].examples, ["id=3", "id=4"]);
    assert!(fails(&pg, index).contains("could not create unique index"));
    assert!(fails(&pg, constraint).contains("could not create unique index"));

    pg.psql("app", "UPDATE \"User\" SET email = 'u' || id || '@example.com', code = CASE WHEN id = 3 THEN NULL ELSE 'k' || id END");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", &format!("{index}{constraint}"));
}

#[tokio::test]
async fn primary_key_over_nulls_and_duplicates_names_rows_by_ctid() {
    let (pg, url) = app();
    pg.psql("app", "CREATE TABLE \"Legacy\" (\"tenant\" INT, \"id\" INT, \"note\" TEXT)");
    pg.psql("app", "INSERT INTO \"Legacy\" VALUES (1, 7, 'a'), (1, 7, 'b'), (1, NULL, 'c'), (2, 7, 'd')");
    let sql = "ALTER TABLE \"Legacy\" ADD PRIMARY KEY (\"tenant\", \"id\");\n";
    let bundle = [migration("1_pk", sql)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let nulls = &report.findings[0];
    assert_will_fail(nulls, "primary-key", "1_pk", 1, "Legacy", &["tenant", "id"], 1);
    assert!(nulls.message.contains("1 row(s) have NULL in tenant, id"), "{nulls:#?}");
    assert_eq!(nulls.examples, ["ctid=(0,3)"]);
    let duplicates = &report.findings[1];
    assert_will_fail(duplicates, "primary-key", "1_pk", 1, "Legacy", &["tenant", "id"], 1);
    let mut examples = duplicates.examples.clone();
    examples.sort();
    assert_eq!(examples, ["ctid=(0,1)", "ctid=(0,2)"]);
    let error = fails(&pg, sql);
    assert!(
        error.contains("contains null values") || error.contains("could not create unique index"),
        "{error}"
    );

    pg.psql("app", "DELETE FROM \"Legacy\" WHERE note IN ('b', 'c')");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", sql);
}

const POSTS: &str = "CREATE TABLE \"User\" (\"id\" INT PRIMARY KEY, \"email\" TEXT);\n\
    CREATE TABLE \"Post\" (\"id\" INT PRIMARY KEY, \"authorId\" INT, \"title\" TEXT);\n\
    INSERT INTO \"User\" VALUES (1, 'a@example.com'), (2, 'b@example.com');\n\
    INSERT INTO \"Post\" VALUES (10, 1, 'ok'), (11, 3, 'orphan'), (12, 4, 'orphan'), (13, NULL, 'no author'), (14, 9, 'orphan');";

const ADD_FK: &str = "ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") \
    REFERENCES \"User\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE;\n";

#[tokio::test]
async fn foreign_key_over_orphans_will_fail_match_simple_and_full() {
    let (pg, url) = app();
    pg.psql("app", POSTS);
    pg.psql(
        "app",
        "CREATE TABLE \"Org\" (\"a\" INT, \"b\" INT, PRIMARY KEY (\"a\", \"b\"));\n\
         INSERT INTO \"Org\" VALUES (1, 1);\n\
         CREATE TABLE \"Member\" (\"id\" INT PRIMARY KEY, \"a\" INT, \"b\" INT);\n\
         INSERT INTO \"Member\" VALUES (1, 1, 1), (2, 1, NULL), (3, NULL, NULL), (4, 2, 2)",
    );
    let full = "ALTER TABLE \"Member\" ADD CONSTRAINT \"Member_org_fkey\" FOREIGN KEY (\"a\", \"b\") REFERENCES \"Org\" MATCH FULL;\n";
    let simple = "ALTER TABLE \"Member\" ADD CONSTRAINT \"Member_org2_fkey\" FOREIGN KEY (\"a\", \"b\") REFERENCES \"Org\" (\"a\", \"b\");\n";
    let bundle = [migration("1_fk", ADD_FK), migration("2_full", full), migration("3_simple", simple)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 3, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_will_fail(f, "foreign-key", "1_fk", 1, "Post", &["authorId"], 3);
    assert_eq!(f.examples, ["id=11", "id=12", "id=14"]);
    assert!(f.message.contains("3 row(s) have no matching row in User"), "{f:#?}");
    // MATCH FULL: (1, NULL) is mixed and (2, 2) has no parent; (NULL, NULL) passes.
    assert_will_fail(&report.findings[1], "foreign-key", "2_full", 1, "Member", &["a", "b"], 2);
    assert_eq!(report.findings[1].examples, ["id=2", "id=4"]);
    // MATCH SIMPLE: any NULL passes; only (2, 2).
    assert_will_fail(&report.findings[2], "foreign-key", "3_simple", 1, "Member", &["a", "b"], 1);
    assert!(fails(&pg, ADD_FK).contains("violates foreign key constraint"));
    assert!(fails(&pg, full).contains("violates foreign key constraint"));
    assert!(fails(&pg, simple).contains("violates foreign key constraint"));

    pg.psql(
        "app",
        "UPDATE \"Post\" SET \"authorId\" = 2 WHERE id > 10; DELETE FROM \"Member\" WHERE id IN (2, 4)",
    );
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", &format!("{ADD_FK}{full}{simple}"));
}

/// More offending rows than the merged scan lists (it counts instead),
/// and a parent bigger than `work_mem` (its join spills to disk): both
/// stay exact.
#[tokio::test]
async fn many_offending_rows_and_a_parent_bigger_than_work_mem_are_still_counted_exactly() {
    let (pg, url) = app();
    pg.psql(
        "app",
        "ALTER DATABASE app SET work_mem = '64kB';\n\
         CREATE TABLE \"Team\" (\"id\" INT PRIMARY KEY);\n\
         INSERT INTO \"Team\" SELECT g FROM generate_series(1, 20000) AS g;\n\
         CREATE TABLE \"Player\" (\"id\" INT PRIMARY KEY, \"teamId\" INT, \"nick\" TEXT);\n\
         INSERT INTO \"Player\" SELECT g, 1 + g % 20000, CASE WHEN g <= 11000 THEN NULL ELSE 'n' END \
           FROM generate_series(1, 12000) AS g;\n\
         UPDATE \"Player\" SET \"teamId\" = 30000 + id WHERE id IN (11500, 11700);\n\
         ANALYZE",
    );
    let sql = "ALTER TABLE \"Player\" ALTER COLUMN \"nick\" SET NOT NULL;\n\
               ALTER TABLE \"Player\" ADD CONSTRAINT \"Player_teamId_fkey\" FOREIGN KEY (\"teamId\") REFERENCES \"Team\"(\"id\");\n";
    let bundle = [migration("1_player", sql)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    assert_will_fail(&report.findings[0], "not-null", "1_player", 1, "Player", &["nick"], 11_000);
    assert_eq!(report.findings[0].examples.len(), 5, "{:#?}", report.findings[0]);
    assert_will_fail(&report.findings[1], "foreign-key", "1_player", 2, "Player", &["teamId"], 2);
    assert_eq!(report.findings[1].examples, ["id=11500", "id=11700"]);
    // The key, the listing scan (both statements, the parent joined), the
    // count past it, and at most the foreign key's examples (its rows may
    // come after the listing's end).
    assert!((3..=4).contains(&report.checks), "{report:#?}");
    assert!(fails(&pg, sql).contains("contains null values"));
}

#[tokio::test]
async fn check_constraint_counts_false_rows_and_shares_a_scan_with_not_null() {
    let (pg, url) = app();
    pg.psql("app", "CREATE TABLE \"Order\" (\"id\" INT PRIMARY KEY, \"total\" INT, \"code\" TEXT)");
    pg.psql(
        "app",
        "INSERT INTO \"Order\" VALUES (1, 5, 'a'), (2, -1, 'b'), (3, 0, NULL), (4, NULL, 'd'), (5, 9, NULL)",
    );
    let sql = "ALTER TABLE \"Order\" ADD CONSTRAINT \"Order_total_positive\" CHECK (\"total\" > 0);\n\
               ALTER TABLE \"Order\" ALTER COLUMN \"code\" SET NOT NULL;\n";
    let bundle = [migration("1_order", sql)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_will_fail(f, "check", "1_order", 1, "Order", &["total"], 2);
    assert_eq!(f.examples, ["id=2", "id=3"]);
    assert_eq!(
        f.message,
        "ADD CONSTRAINT Order_total_positive CHECK (total > 0) on Order will fail: 2 row(s) violate it"
    );
    assert_will_fail(&report.findings[1], "not-null", "1_order", 2, "Order", &["code"], 2);
    // One lookup of the key, then one scan for both counts and their
    // examples.
    assert_eq!(report.checks, 2, "{report:#?}");
    assert!(fails(&pg, sql).contains("is violated by some row"));

    pg.psql("app", "UPDATE \"Order\" SET total = 1, code = 'c' WHERE total <= 0 OR code IS NULL");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", sql);
}

#[tokio::test]
async fn type_changes_count_rows_that_do_not_convert() {
    let (pg, url) = app();
    pg.psql(
        "app",
        "CREATE TABLE \"Product\" (\"id\" INT PRIMARY KEY, \"code\" TEXT, \"name\" VARCHAR(255) NOT NULL)",
    );
    pg.psql(
        "app",
        &format!(
            "INSERT INTO \"Product\" VALUES (1, '12', 'short'), (2, '{SENTINEL}', 'abcdefghij'), (3, NULL, 'abcde   '), \
             (4, ' 7 ', 'abcdefg'), (5, '9999999999', 'ok')"
        ),
    );
    // The slow path: 'secret…' and 9999999999 (out of range) do not convert.
    let using =
        "ALTER TABLE \"Product\" ALTER COLUMN \"code\" SET DATA TYPE INTEGER USING (\"code\"::INTEGER);\n";
    // The fast path: an explicit cast would truncate; the ALTER fails on
    // two names longer than 5 (trailing spaces do not count).
    let shrink = "ALTER TABLE \"Product\" ALTER COLUMN \"name\" SET DATA TYPE VARCHAR(5);\n";
    // No USING and no assignment cast from text to integer: fails whatever the data.
    let no_using = "ALTER TABLE \"Product\" ALTER COLUMN \"code\" TYPE INTEGER;\n";
    let bundle = [migration("1_code", using), migration("2_name", shrink)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_will_fail(f, "cast", "1_code", 1, "Product", &["code"], 2);
    assert_eq!(f.examples, ["id=2", "id=5"]);
    assert!(f.query.contains("CREATE FUNCTION pg_temp.runway_converts"), "{}", f.query);
    let listed = pg.psql("app", &f.query);
    assert_eq!(listed.lines().filter(|l| l.contains('|')).count(), 2, "{listed}");
    let f = &report.findings[1];
    assert_will_fail(f, "cast", "2_name", 1, "Product", &["name"], 2);
    assert_eq!(f.examples, ["id=2", "id=4"]);
    assert!(fails(&pg, using).contains("invalid input syntax for type integer"));
    assert!(fails(&pg, shrink).contains("value too long"));

    let report = run(&url, &[migration("3_no_using", no_using)]).await;
    let f = only(&report);
    assert_eq!((f.certainty, f.kind.as_str(), f.count), (Certainty::WillFail, "cast", None), "{f:#?}");
    assert!(f.message.contains("no assignment cast"), "{f:#?}");
    assert!(fails(&pg, no_using).contains("cannot be cast automatically"));

    pg.psql("app", "UPDATE \"Product\" SET code = id::text, name = left(name, 5)");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", &format!("{using}{shrink}"));
}

/// A Prisma enum change removing a value.
const ENUM_CHANGE: &str = "/*\n  Warnings:\n\n  - The values [GUEST] on the enum `Role` will be removed.\n*/\n\
    -- AlterEnum\nBEGIN;\n\
    ALTER TYPE \"Role\" RENAME TO \"Role_old\";\n\
    CREATE TYPE \"Role\" AS ENUM ('USER', 'ADMIN');\n\
    ALTER TABLE \"User\" ALTER COLUMN \"role\" DROP DEFAULT;\n\
    ALTER TABLE \"User\" ALTER COLUMN \"role\" TYPE \"Role\" USING (\"role\"::text::\"Role\");\n\
    DROP TYPE \"Role_old\";\n\
    ALTER TABLE \"User\" ALTER COLUMN \"role\" SET DEFAULT 'USER';\n\
    COMMIT;\n";

#[tokio::test]
async fn enum_change_counts_values_that_are_not_new_labels() {
    let (pg, url) = app();
    pg.psql(
        "app",
        "CREATE TYPE \"Role\" AS ENUM ('USER', 'ADMIN', 'GUEST');\n\
         CREATE TABLE \"User\" (\"id\" INT PRIMARY KEY, \"role\" \"Role\" DEFAULT 'USER');\n\
         INSERT INTO \"User\" VALUES (1, 'USER'), (2, 'GUEST'), (3, 'ADMIN'), (4, NULL), (5, 'GUEST')",
    );
    let bundle = [migration("20240105000000_drop_guest", ENUM_CHANGE)];

    let report = run(&url, &bundle).await;
    let f = only(&report);
    assert_will_fail(f, "enum-value", "20240105000000_drop_guest", 11, "User", &["role"], 2);
    assert_eq!(f.examples, ["id=2", "id=5"]);
    assert!(f.message.contains("not a label of Role ('USER', 'ADMIN')"), "{f:#?}");
    assert!(fails(&pg, ENUM_CHANGE).contains("invalid input value for enum"));

    pg.psql("app", "UPDATE \"User\" SET role = 'USER' WHERE role = 'GUEST'");
    let report = run(&url, &bundle).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", ENUM_CHANGE);

    // A text column converted to a live enum: its labels come from the catalog.
    pg.psql(
        "app",
        "CREATE TABLE \"Ticket\" (\"id\" INT PRIMARY KEY, \"role\" TEXT);\n\
         INSERT INTO \"Ticket\" VALUES (1, 'USER'), (2, 'user'), (3, NULL)",
    );
    let sql = "ALTER TABLE \"Ticket\" ALTER COLUMN \"role\" TYPE \"Role\" USING (\"role\"::\"Role\");\n";
    let report = run(&url, &[migration("20240106000000_ticket_role", sql)]).await;
    let f = only(&report);
    assert_will_fail(f, "enum-value", "20240106000000_ticket_role", 1, "Ticket", &["role"], 1);
    assert_eq!(f.examples, ["id=2"]);
    assert!(fails(&pg, sql).contains("invalid input value for enum"));
}

#[tokio::test]
async fn columns_added_by_the_bundle_hold_their_defaults() {
    let (pg, url) = app();
    pg.psql("app", USERS);
    pg.psql(
        "app",
        "CREATE TABLE \"Team\" (\"id\" INT PRIMARY KEY); INSERT INTO \"User\" (email) VALUES ('a'), ('b')",
    );
    let slug = "ALTER TABLE \"User\" ADD COLUMN \"slug\" TEXT NOT NULL DEFAULT 'x';\n";
    let slug_key = "CREATE UNIQUE INDEX \"User_slug_key\" ON \"User\"(\"slug\");\n";
    let team = "ALTER TABLE \"User\" ADD COLUMN \"teamId\" INTEGER;\n";
    let team_refs = "ALTER TABLE \"User\" ADD CONSTRAINT \"User_teamId_fkey\" FOREIGN KEY (\"teamId\") REFERENCES \"Team\"(\"id\");\n\
                     CREATE UNIQUE INDEX \"User_teamId_key\" ON \"User\"(\"teamId\");\n";
    let score = "ALTER TABLE \"User\" ADD COLUMN \"score\" INTEGER DEFAULT 0 CHECK (\"score\" > 0);\n";
    let team_required = "ALTER TABLE \"User\" ALTER COLUMN \"teamId\" SET NOT NULL;\n";
    let sql = format!("{slug}{slug_key}{team}{team_refs}{score}{team_required}");

    let report = run(&url, &[migration("1_columns", &sql)]).await;
    let kinds: Vec<(&str, usize, Option<i64>)> =
        report.findings.iter().map(|f| (f.kind.as_str(), f.line, f.count)).collect();
    // The default 'x' twice is one duplicate group; every new score is 0;
    // every new teamId is NULL (so its foreign key and unique index pass).
    assert_eq!(
        kinds,
        [("unique", 2, Some(1)), ("check", 6, Some(2)), ("not-null", 7, Some(2))],
        "{:#?}",
        report.findings
    );
    assert!(report.findings.iter().all(|f| f.certainty == Certainty::WillFail), "{:#?}", report.findings);
    assert!(fails(&pg, &format!("{slug}{slug_key}")).contains("could not create unique index"));
    assert!(fails(&pg, score).contains("is violated by some row"));
    assert!(fails(&pg, &format!("{team}{team_required}")).contains("contains null values"));
    pg.psql("app", &format!("BEGIN; {team}{team_refs} ROLLBACK;"));
}

#[tokio::test]
async fn prisma_schema_parameter_sets_where_unqualified_tables_are() {
    let (pg, _) = app();
    pg.psql("app", &format!("CREATE SCHEMA tenant; SET search_path TO tenant; {USERS} INSERT INTO \"User\" (email) VALUES (NULL)"));
    let url = format!("{}?schema=tenant", pg.url("app"));
    let sql = "ALTER TABLE \"User\" ALTER COLUMN \"email\" SET NOT NULL;\n";
    let report = run(&url, &[migration("1_email", sql)]).await;
    let f = only(&report);
    assert_will_fail(f, "not-null", "1_email", 1, "User", &["email"], 1);
    assert_eq!(f.examples, ["id=1"]);
    assert!(fails(&pg, &format!("SET search_path TO tenant; {sql}")).contains("contains null values"));
}

#[tokio::test]
async fn sql_that_does_not_parse_will_fail_at_its_line() {
    let (_pg, url) = app();
    let bundle = [
        migration("1_ok", "SELECT 1;\n"),
        migration("2_broken", "-- oops\nSELECT 1;\nALTER TABLE \"User\" ADD COLUMN;\n"),
    ];

    let report = run(&url, &bundle).await;
    let f = only(&report);
    assert_eq!(
        (f.certainty, f.kind.as_str(), f.migration.as_str(), f.line),
        (Certainty::WillFail, "does-not-parse", "2_broken", 3)
    );
    assert!(f.message.contains("syntax error"), "{f:#?}");
    assert_eq!(f.count, None);
}

#[tokio::test]
async fn a_bundle_that_fixes_its_rows_first_may_fail_but_does_not_refuse() {
    let (pg, url) = app();
    pg.psql("app", POSTS);
    pg.psql("app", "UPDATE \"User\" SET email = NULL WHERE id = 2");
    let backfill = "UPDATE \"User\" SET \"email\" = 'user' || \"id\" || '@example.com' WHERE \"email\" IS NULL;\n\
                    ALTER TABLE \"User\" ALTER COLUMN \"email\" SET NOT NULL;\n";
    let orphans =
        format!("DELETE FROM \"Post\" WHERE \"authorId\" NOT IN (SELECT \"id\" FROM \"User\");\n{ADD_FK}");
    let bundle = [migration("1_backfill", backfill), migration("2_orphans", &orphans)];

    let report = run(&url, &bundle).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    for (f, kind, count) in [(&report.findings[0], "not-null", 1), (&report.findings[1], "foreign-key", 3)] {
        assert_eq!(
            (f.certainty, f.kind.as_str(), f.count),
            (Certainty::MayFail, kind, Some(count)),
            "{f:#?}"
        );
        assert!(f.message.contains("may fail") && f.message.contains("line 1 of"), "{f:#?}");
    }
    assert!(!report.will_fail(), "{report:#?}");
    // And indeed the bundle runs.
    pg.psql("app", &format!("{backfill}{orphans}"));
}

#[tokio::test]
async fn a_not_valid_foreign_key_is_not_checked_until_validated() {
    let (pg, url) = app();
    pg.psql("app", POSTS);
    let not_valid = "ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\") NOT VALID;\n";
    let validate = "ALTER TABLE \"Post\" VALIDATE CONSTRAINT \"Post_authorId_fkey\";\n";

    let report = run(&url, &[migration("1_not_valid", not_valid)]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    let bundle = [migration("1_not_valid", not_valid), migration("2_validate", &format!("\n{validate}"))];
    let report = run(&url, &bundle).await;
    assert_will_fail(only(&report), "foreign-key", "2_validate", 2, "Post", &["authorId"], 3);

    // Added live, validated by the bundle: the definition comes from the catalog.
    pg.psql("app", not_valid);
    let report = run(&url, &[migration("3_validate", validate)]).await;
    let f = only(&report);
    assert_will_fail(f, "foreign-key", "3_validate", 1, "Post", &["authorId"], 3);
    assert!(f.message.starts_with("VALIDATE CONSTRAINT Post_authorId_fkey"), "{f:#?}");
    assert!(fails(&pg, validate).contains("violates foreign key constraint"));
}

#[tokio::test]
async fn tables_created_by_the_bundle_have_no_rows_to_check() {
    let (pg, url) = app();
    pg.psql("app", USERS);
    pg.psql("app", "INSERT INTO \"User\" (email) VALUES ('a'), ('a')");
    let sql = "CREATE TABLE \"Tag\" (\"id\" INT, \"name\" TEXT);\n\
               CREATE UNIQUE INDEX \"Tag_name_key\" ON \"Tag\"(\"name\");\n\
               ALTER TABLE \"Tag\" ADD COLUMN \"slug\" TEXT NOT NULL;\n\
               DROP TABLE \"User\";\nCREATE TABLE \"User\" (\"id\" INT, \"email\" TEXT);\n\
               CREATE UNIQUE INDEX \"User_email_key\" ON \"User\"(\"email\");\n";
    let report = run(&url, &[migration("1_tags", sql)]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    pg.psql("app", sql);
}

#[tokio::test]
async fn if_not_exists_over_live_objects_changes_nothing() {
    let (pg, url) = app();
    pg.psql("app", USERS);
    pg.psql("app", "CREATE UNIQUE INDEX \"User_id_key\" ON \"User\"(\"id\"); INSERT INTO \"User\" (email) VALUES ('a'), ('a')");
    let noops = "CREATE TABLE IF NOT EXISTS \"User\" (\"id\" INT);\n\
                 CREATE UNIQUE INDEX IF NOT EXISTS \"User_id_key\" ON \"User\"(\"email\");\n\
                 ALTER TABLE \"User\" ADD COLUMN IF NOT EXISTS \"email\" TEXT NOT NULL;\n";
    let index = "CREATE UNIQUE INDEX \"User_email_key\" ON \"User\"(\"email\");\n";
    let report = run(&url, &[migration("1_idempotent", &format!("{noops}{index}"))]).await;
    assert_will_fail(only(&report), "unique", "1_idempotent", 4, "User", &["email"], 1);
    pg.psql("app", noops);
    assert!(fails(&pg, index).contains("could not create unique index"));
}

#[tokio::test]
async fn examples_and_messages_hold_primary_keys_only() {
    let (pg, url) = app();
    pg.psql(
        "app",
        "CREATE TABLE \"Account\" (\"id\" INT PRIMARY KEY, \"email\" TEXT, \"age\" TEXT, \"nick\" TEXT)",
    );
    pg.psql(
        "app",
        &format!(
            "INSERT INTO \"Account\" VALUES (1, '{SENTINEL}', '{SENTINEL}', NULL), (2, '{SENTINEL}', '30', '{SENTINEL}'), \
             (3, 'ok@example.org', '41', 'n')"
        ),
    );
    let sql = "CREATE UNIQUE INDEX \"Account_email_key\" ON \"Account\"(\"email\");\n\
               ALTER TABLE \"Account\" ALTER COLUMN \"age\" TYPE INTEGER USING (\"age\"::integer);\n\
               ALTER TABLE \"Account\" ADD CONSTRAINT \"Account_email_org\" CHECK (\"email\" LIKE '%.org');\n\
               ALTER TABLE \"Account\" ALTER COLUMN \"nick\" SET NOT NULL;\n";
    let report = run(&url, &[migration("1_account", sql)]).await;
    let kinds: Vec<&str> = report.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["unique", "cast", "check", "not-null"], "{:#?}", report.findings);
    for f in &report.findings {
        assert_eq!(f.certainty, Certainty::WillFail, "{f:#?}");
        assert!(!f.examples.is_empty(), "{f:#?}");
        for text in f.examples.iter().chain([&f.message]) {
            assert!(!text.contains("secret-sentinel"), "a non-key value leaked: {text:?} in {f:#?}");
        }
        assert!(f.examples.iter().all(|e| e.starts_with("id=")), "{f:#?}");
    }
}

#[tokio::test]
async fn a_check_that_exceeds_its_timeout_is_unknown_never_passing() {
    let (pg, url) = app();
    pg.psql("app", "CREATE TABLE \"Event\" (\"id\" INT PRIMARY KEY, \"kind\" TEXT)");
    pg.psql(
        "app",
        "INSERT INTO \"Event\" SELECT g, CASE WHEN g % 2 = 0 THEN 'a' END FROM generate_series(1, 300000) g",
    );
    let bundle = [migration("1_kind", "ALTER TABLE \"Event\" ALTER COLUMN \"kind\" SET NOT NULL;\n")];

    let config = PredictConfig { statement_timeout: Duration::from_millis(1) };
    let report = run_with(&url, &bundle, &config).await;
    let f = only(&report);
    assert_eq!((f.certainty, f.kind.as_str(), f.count), (Certainty::Unknown, "not-null", None), "{f:#?}");
    assert!(f.message.contains("statement_timeout"), "{f:#?}");
    assert!(!report.will_fail());

    // With time to spare, the same check finds the NULLs.
    let report = run(&url, &bundle).await;
    assert_eq!(only(&report).count, Some(150000));
}

/// What cannot fail is not read: a unique key that contains a live unique
/// key's columns, and a widening type change. Proven with a timeout no
/// scan of the table meets: neither check is unknown.
#[tokio::test]
async fn keys_implied_by_a_live_unique_key_and_widening_casts_read_nothing() {
    let (pg, url) = app();
    pg.psql("app", "CREATE TABLE \"Event\" (\"id\" INT PRIMARY KEY, \"tenant\" INT, \"kind\" VARCHAR(20))");
    pg.psql("app", "INSERT INTO \"Event\" SELECT g, g % 7, 'a' FROM generate_series(1, 2000000) g");
    let bundle = [migration(
        "1_widen",
        "CREATE UNIQUE INDEX \"Event_id_tenant_key\" ON \"Event\" (\"id\", \"tenant\");\n\
         ALTER TABLE \"Event\" ALTER COLUMN \"id\" TYPE BIGINT;\n\
         ALTER TABLE \"Event\" ALTER COLUMN \"kind\" TYPE TEXT;\n",
    )];
    // Catalog lookups take a few ms; a scan of two million rows, far more.
    let config = PredictConfig { statement_timeout: Duration::from_millis(60) };
    let report = run_with(&url, &bundle, &config).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // The same timeout does catch a key that is not implied: it must scan.
    let scanned =
        [migration("1_tenant", "CREATE UNIQUE INDEX \"Event_tenant_key\" ON \"Event\" (\"tenant\");\n")];
    let report = run_with(&url, &scanned, &config).await;
    assert_eq!(only(&report).certainty, Certainty::Unknown, "{:#?}", report.findings);
    let report = run(&url, &scanned).await;
    assert_eq!((only(&report).certainty, only(&report).count), (Certainty::WillFail, Some(7)));
}
