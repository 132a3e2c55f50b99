//! Must-show 3: the lint parses every statement of every fixture, and each
//! known dangerous statement yields exactly its rule; with a database it
//! adds table sizes and a downtime class.

mod common;

use runway_engine::migrate::lint::{self, DowntimeClass, Severity};
use runway_engine::migrate::source::read_folder;
use runway_engine::migrate::{self, MigrateConfig};
use runway_engine::progress::Progress;
use runway_proto::bundle::{self, MigrationFile};

use common::fixtures::{DANGER_SETUP, DANGEROUS, quirks};

/// The dangerous statements, one per line from line 2. Line 1 sets
/// `lock_timeout` so that `missing-lock-timeout` (a rule over the whole
/// file, tested on its own below) stays out of the per-statement counts.
fn dangerous_file() -> (String, Vec<usize>) {
    let mut sql =
        String::from("SET lock_timeout = '2s'; -- statements known to be dangerous, one per line\n");
    let mut lines = Vec::new();
    for (i, (stmt, _)) in DANGEROUS.iter().enumerate() {
        lines.push(i + 2);
        sql.push_str(stmt);
        sql.push('\n');
    }
    (sql, lines)
}

#[test]
fn parses_every_statement_of_every_fixture() {
    let dir = quirks();
    let migrations = bundle::migrations(&read_folder(dir.path()).unwrap()).unwrap();
    let report = lint::lint_files(&migrations.iter().collect::<Vec<_>>());
    assert!(report.parse_errors.is_empty(), "{:?}", report.parse_errors);
    // init 3, functions 5, concurrent 1, mixed 7, explicit tx 4, crlf 2, enum 2, odd 1, v2 1.
    assert_eq!(report.statements, 3 + 5 + 1 + 7 + 4 + 2 + 2 + 1 + 1);

    let (sql, _) = dangerous_file();
    let file = MigrationFile { name: "danger".into(), sql, down: None };
    let report = lint::lint_files(&[&file]);
    assert!(report.parse_errors.is_empty(), "{:?}", report.parse_errors);
    assert_eq!(report.statements, DANGEROUS.len() + 1);
}

#[test]
fn each_dangerous_statement_yields_exactly_its_rule() {
    let (sql, lines) = dangerous_file();
    let file = MigrationFile { name: "danger".into(), sql, down: None };
    let report = lint::lint_files(&[&file]);
    for ((stmt, expected), line) in DANGEROUS.iter().zip(lines) {
        let mut got: Vec<&str> = report.findings.iter().filter(|f| f.line == line).map(|f| f.rule).collect();
        got.sort();
        let mut want = expected.to_vec();
        want.sort();
        assert_eq!(got, want, "line {line}: {stmt}");
    }
    let total: usize = DANGEROUS.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(report.findings.len(), total);
    for f in &report.findings {
        assert!(!f.lock.is_empty() && !f.message.is_empty(), "{f:?}");
        assert_eq!(f.migration, "danger");
    }
    let drop = report.findings.iter().find(|f| f.rule == "drop-column").unwrap();
    assert_eq!((drop.severity, drop.lock), (Severity::Danger, "ACCESS EXCLUSIVE"));
    assert_eq!(report.verdict(), lint::Verdict::Dangerous);
    assert_eq!(report.downtime.class, DowntimeClass::Unknown);
}

#[test]
fn reports_statements_that_do_not_parse_with_their_line() {
    let file =
        MigrationFile { name: "bad".into(), sql: "SELECT 1;\nCREATE TABEL x (id int);\n".into(), down: None };
    let report = lint::lint_files(&[&file]);
    assert_eq!(report.parse_errors.len(), 1);
    assert_eq!((report.parse_errors[0].migration.as_str(), report.parse_errors[0].line), ("bad", 2));
}

#[tokio::test]
async fn with_a_database_it_adds_sizes_downtime_and_plans() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("lint");
    pg.psql("lint", DANGER_SETUP);
    // Baseline the existing schema so that only the new migrations are pending.
    let dir = common::folder(&[
        ("0_existing/migration.sql", DANGER_SETUP.as_bytes()),
        ("1_risky/migration.sql", b"ALTER TABLE orders ALTER COLUMN total TYPE bigint;\nALTER TABLE orders RENAME COLUMN code TO sku;\n"),
    ]);
    let migrations = bundle::migrations(&read_folder(dir.path()).unwrap()).unwrap();
    migrate::resolve(
        &url,
        &migrations,
        &migrate::ResolveAction::Applied("0_existing".into()),
        &MigrateConfig::default(),
    )
    .await
    .unwrap();

    let report = migrate::lint(Some(&url), &migrations).await.unwrap();
    assert_eq!(report.migrations, ["1_risky"]);
    let rules: Vec<_> = report.findings.iter().map(|f| (f.rule, f.line)).collect();
    // No lock_timeout in the file: reported once, at the first statement that would queue.
    assert_eq!(rules, [("alter-column-type", 1), ("missing-lock-timeout", 1), ("rename-column", 2)]);
    let orders = report.tables.iter().find(|t| t.table == "orders").expect("orders measured");
    assert_eq!(orders.estimated_rows, Some(20000));
    assert!(orders.total_bytes > 500_000, "{orders:?}");
    assert_eq!(report.downtime.class, DowntimeClass::Small);
    assert!(
        report.downtime.reason.contains("alter-column-type") && report.downtime.reason.contains("orders"),
        "{}",
        report.downtime.reason
    );

    let plan = migrate::plan(
        &url,
        &migrations,
        migrate::PlanOptions {
            pg_dump: &runway_tests::postgres::pg_bin().join("pg_dump"),
            data: &Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(plan.pending, ["1_risky"]);
    assert!(!plan.safe_without_maintenance);
    assert!(plan.reasons.iter().any(|r| r.contains("rename-column")), "{:?}", plan.reasons);

    // Apply it; a concurrent index afterwards is safe without maintenance.
    migrate::deploy(&url, &migrations, &MigrateConfig::default(), &Progress::discard()).await.unwrap();
    let dir2 = common::folder(&[
        ("0_existing/migration.sql", DANGER_SETUP.as_bytes()),
        ("1_risky/migration.sql", b"ALTER TABLE orders ALTER COLUMN total TYPE bigint;\nALTER TABLE orders RENAME COLUMN code TO sku;\n"),
        ("2_index/migration.sql", b"CREATE INDEX CONCURRENTLY orders_sku_idx ON orders (sku);\n"),
    ]);
    let migrations = bundle::migrations(&read_folder(dir2.path()).unwrap()).unwrap();
    let plan = migrate::plan(
        &url,
        &migrations,
        migrate::PlanOptions {
            pg_dump: &runway_tests::postgres::pg_bin().join("pg_dump"),
            data: &Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(plan.pending, ["2_index"]);
    assert!(plan.safe_without_maintenance, "{:?}", plan.reasons);
    assert_eq!(plan.lint.downtime.class, DowntimeClass::Small);
}

// Rules that close the gaps to Squawk's (docs/src/reference/squawk-rules.md):
// each shown firing with its name and line, and quiet on the safe form.

/// Lints `sql` as the one migration `m`.
fn lint_sql(sql: &str) -> lint::LintReport {
    let file = MigrationFile { name: "m".into(), sql: sql.into(), down: None };
    let report = lint::lint_files(&[&file]);
    assert!(report.parse_errors.is_empty(), "{:?}", report.parse_errors);
    report
}

/// Where `rule` fired in `report`, with its severity.
fn found(report: &lint::LintReport, rule: &str) -> Vec<(usize, Severity)> {
    report.findings.iter().filter(|f| f.rule == rule).map(|f| (f.line, f.severity)).collect()
}

#[test]
fn concurrently_inside_the_files_own_transaction_block_is_a_certain_failure() {
    for stmt in [
        "CREATE INDEX CONCURRENTLY orders_code_idx ON orders (code);",
        "DROP INDEX CONCURRENTLY orders_idx;",
        "REINDEX INDEX CONCURRENTLY orders_idx;",
        "ALTER TABLE orders DETACH PARTITION orders_2020 CONCURRENTLY;",
    ] {
        let report = lint_sql(&format!("BEGIN;\n{stmt}\nCOMMIT;\n"));
        assert_eq!(found(&report, "concurrently-in-transaction"), [(2, Severity::Danger)], "{stmt}");
        let f = report.findings.iter().find(|f| f.rule == "concurrently-in-transaction").unwrap();
        assert!(f.message.contains("BEGIN on line 1"), "{}", f.message);
        assert_eq!(report.verdict(), lint::Verdict::Dangerous);
        // Outside BEGIN … COMMIT runway sends it alone, outside any transaction: fine.
        let clean = lint_sql(&format!("CREATE TABLE t (id int);\n{stmt}\nCREATE TABLE u (id int);\n"));
        assert!(found(&clean, "concurrently-in-transaction").is_empty(), "{stmt}: {:?}", clean.findings);
    }
    // Other statements PostgreSQL always refuses in a block get their own name.
    let report = lint_sql("BEGIN;\nVACUUM orders;\nCOMMIT;\n");
    assert_eq!(found(&report, "in-transaction-block"), [(2, Severity::Danger)]);
    assert!(found(&lint_sql("VACUUM orders;\n"), "in-transaction-block").is_empty());
    // Refused only on old servers or in some cases: not a certain failure.
    let report = lint_sql("BEGIN;\nALTER TYPE mood ADD VALUE 'meh';\nCALL p();\nCOMMIT;\n");
    assert!(report.findings.iter().all(|f| f.severity != Severity::Danger), "{:?}", report.findings);
}

#[test]
fn truncate_cascade_is_dangerous() {
    let report = lint_sql("SET lock_timeout = '2s';\nTRUNCATE audit CASCADE;\n");
    assert_eq!(found(&report, "truncate-cascade"), [(2, Severity::Danger)]);
    assert_eq!(found(&report, "truncate"), [(2, Severity::Danger)]);
    let clean = lint_sql("SET lock_timeout = '2s';\nTRUNCATE audit;\n");
    assert!(found(&clean, "truncate-cascade").is_empty());
}

#[test]
fn a_unique_or_primary_key_constraint_building_its_index_warns() {
    for stmt in [
        "ALTER TABLE orders ADD CONSTRAINT orders_code_key UNIQUE (code);",
        "ALTER TABLE orders ADD PRIMARY KEY (id);",
        "ALTER TABLE orders ADD COLUMN sku text UNIQUE;",
    ] {
        let report = lint_sql(&format!("SET lock_timeout = '2s';\n{stmt}\n"));
        let f: Vec<_> = report.findings.iter().filter(|f| f.rule == "constraint-builds-index").collect();
        assert_eq!(f.len(), 1, "{stmt}: {:?}", report.findings);
        assert_eq!((f[0].line, f[0].severity, f[0].lock), (2, Severity::Warning, "ACCESS EXCLUSIVE"));
        assert_eq!(f[0].work, lint::Work::IndexBuild, "sized like an index build when a database is given");
        assert!(f[0].message.contains("CREATE UNIQUE INDEX CONCURRENTLY"), "{}", f[0].message);
    }
    let clean = lint_sql(
        "SET lock_timeout = '2s';\nALTER TABLE orders ADD CONSTRAINT orders_code_key UNIQUE USING INDEX orders_code_idx;\n\
         CREATE TABLE fresh (id int);\nALTER TABLE fresh ADD PRIMARY KEY (id);\n",
    );
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn dropping_not_null_warns_that_old_readers_may_meet_nulls() {
    let report = lint_sql("SET lock_timeout = '2s';\nALTER TABLE users ALTER COLUMN email DROP NOT NULL;\n");
    assert_eq!(found(&report, "not-null-dropped"), [(2, Severity::Warning)]);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let clean =
        lint_sql("CREATE TABLE fresh (id int NOT NULL);\nALTER TABLE fresh ALTER COLUMN id DROP NOT NULL;\n");
    assert!(clean.findings.is_empty(), "a table nobody reads yet: {:?}", clean.findings);
}

#[test]
fn a_begin_inside_an_open_block_is_transaction_nesting() {
    let report = lint_sql(
        "BEGIN;\nCREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\nCREATE TABLE c (id int);\nCOMMIT;\n",
    );
    assert_eq!(found(&report, "transaction-nesting"), [(3, Severity::Warning)]);
    // The inner COMMIT really ends the block early: reported too.
    assert_eq!(found(&report, "commit-mid-file"), [(5, Severity::Info)]);
    // One block around the whole file: PostgreSQL turns runway's implicit
    // transaction into it, nothing changes.
    let clean = lint_sql("BEGIN;\nCREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCOMMIT;\n");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn a_commit_before_the_end_of_the_file_is_reported() {
    let report = lint_sql("CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);\n");
    assert_eq!(found(&report, "commit-mid-file"), [(2, Severity::Info)]);
    assert_eq!(report.verdict(), lint::Verdict::Clean, "information only");
    let clean = lint_sql("CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCOMMIT;\n");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn a_rollback_in_a_migration_is_reported() {
    let report = lint_sql("BEGIN;\nCREATE TABLE a (id int);\nROLLBACK;\n");
    assert_eq!(found(&report, "rollback-in-migration"), [(3, Severity::Warning)]);
    let clean = lint_sql("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn a_begin_never_committed_is_dangerous_because_deploy_refuses_the_file() {
    let report = lint_sql("CREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\n");
    assert_eq!(found(&report, "uncommitted-transaction"), [(2, Severity::Danger)]);
    let clean = lint_sql("CREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn a_blocking_lock_without_lock_timeout_is_reported_once_per_file() {
    let sql = "CREATE TABLE fresh (id int);\nALTER TABLE fresh ADD COLUMN x int;\n\
               ALTER TABLE orders ADD COLUMN note text;\nCREATE INDEX orders_note_idx ON orders (note);\n";
    let report = lint_sql(sql);
    assert_eq!(found(&report, "missing-lock-timeout"), [(3, Severity::Info)]);
    let f = report.findings.iter().find(|f| f.rule == "missing-lock-timeout").unwrap();
    assert_eq!((f.lock, f.table.as_deref()), ("ACCESS EXCLUSIVE", Some("orders")));
    assert!(f.message.contains("as do 1 later statement(s)"), "{}", f.message);
    assert!(
        f.message.contains("lock_timeout is set under [migrate]") && f.message.contains("SET lock_timeout"),
        "{}",
        f.message
    );
    assert_eq!(
        report.verdict(),
        lint::Verdict::Warnings,
        "the index's own warning; the timeout is information"
    );

    // Prisma's foreign key from a new table locks the existing one it references.
    let prisma = "CREATE TABLE \"Post\" (\"id\" SERIAL NOT NULL, \"authorId\" INTEGER NOT NULL);\n\
                  ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\");\n";
    let report = lint_sql(prisma);
    let f: Vec<_> = report.findings.iter().filter(|f| f.rule == "missing-lock-timeout").collect();
    assert_eq!(
        (f.len(), f[0].line, f[0].lock, f[0].table.as_deref()),
        (1, 2, "SHARE ROW EXCLUSIVE", Some("User"))
    );

    // A SET LOCAL ends with the transaction: a statement that runs alone starts another.
    let report = lint_sql(
        "SET LOCAL lock_timeout = '5s';\nCREATE INDEX CONCURRENTLY a ON orders (id);\nALTER TABLE orders ADD COLUMN y int;\n",
    );
    assert_eq!(found(&report, "missing-lock-timeout"), [(3, Severity::Info)]);
    // Zero means wait forever.
    assert_eq!(
        found(&lint_sql("SET lock_timeout = 0;\nDROP TABLE legacy;\n"), "missing-lock-timeout").len(),
        1
    );

    // Clean: the timeout is set first; or only new tables and weak locks.
    for clean in [
        format!("SET lock_timeout = '5s';\n{sql}"),
        "SET LOCAL lock_timeout TO '3s';\nALTER TABLE orders ADD COLUMN note text;\n".into(),
        "CREATE TABLE fresh (id int);\nCREATE INDEX fresh_idx ON fresh (id);\nCREATE INDEX CONCURRENTLY orders_code_idx ON orders (code);\n\
         ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;\nUPDATE orders SET code = 'x' WHERE id = 1;\n"
            .into(),
    ] {
        let report = lint_sql(&clean);
        assert!(found(&report, "missing-lock-timeout").is_empty(), "{clean}: {:?}", report.findings);
    }
}

#[test]
fn timestamp_without_time_zone_is_information() {
    let report = lint_sql(
        "CREATE TABLE \"Post\" (\"id\" SERIAL NOT NULL, \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         \"updatedAt\" timestamp without time zone);\n",
    );
    assert_eq!(found(&report, "prefer-timestamptz"), [(1, Severity::Info)]);
    let f = &report.findings[0];
    assert!(
        f.message.contains("createdAt, updatedAt") && f.message.contains("@db.Timestamptz"),
        "{}",
        f.message
    );
    assert_eq!(report.verdict(), lint::Verdict::Clean);
    let clean = lint_sql(
        "CREATE TABLE \"Post\" (\"id\" SERIAL NOT NULL, \"createdAt\" TIMESTAMPTZ(3) NOT NULL, \"at\" timestamp with time zone);\n",
    );
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn char_columns_are_information() {
    let report = lint_sql(
        "SET lock_timeout = '2s';\nALTER TABLE orders ADD COLUMN country char(2), ALTER COLUMN code TYPE character(8);\n",
    );
    assert_eq!(found(&report, "char-field"), [(2, Severity::Info)]);
    let f = report.findings.iter().find(|f| f.rule == "char-field").unwrap();
    assert!(f.message.contains("country, code"), "{}", f.message);
    let clean = lint_sql("CREATE TABLE t (country varchar(2), code text, flag \"char\");\n");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

#[test]
fn a_validated_domain_constraint_warns() {
    let report = lint_sql("ALTER DOMAIN positive ADD CONSTRAINT positive_check CHECK (VALUE > 0);\n");
    assert_eq!(found(&report, "alter-domain-add-constraint"), [(1, Severity::Warning)]);
    assert_eq!(report.findings[0].lock, "SHARE");
    let clean = lint_sql(
        "ALTER DOMAIN positive ADD CONSTRAINT positive_check CHECK (VALUE > 0) NOT VALID;\n\
         ALTER DOMAIN positive VALIDATE CONSTRAINT positive_check;\n",
    );
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
}

/// Loads migration files written as (folder, SQL).
fn migrations_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<MigrationFile>) {
    let files: Vec<(String, &[u8])> =
        files.iter().map(|(name, sql)| (format!("{name}/migration.sql"), sql.as_bytes())).collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    let dir = common::folder(&refs);
    let migrations = bundle::migrations(&read_folder(dir.path()).unwrap()).unwrap();
    (dir, migrations)
}

const ORDERS: &str = "CREATE TABLE orders (id int, code text);\n\
    INSERT INTO orders SELECT g, 'c' || g FROM generate_series(1, 20000) g;\nANALYZE orders;\n";

#[tokio::test]
async fn deploy_fails_where_the_lint_says_it_certainly_will() {
    let pg = common::Cluster::start_temp();
    let config = MigrateConfig::default();

    // CONCURRENTLY in the file's own block: the lint's Danger is deploy's failure.
    let url = pg.create_database("in_block");
    let cic = "BEGIN;\nCREATE INDEX CONCURRENTLY orders_code_idx ON orders (code);\nCOMMIT;\n";
    let (_dir, migrations) = migrations_of(&[("0_orders", ORDERS), ("1_index", cic)]);
    let report = lint::lint_files(&[&migrations[1]]);
    assert_eq!(found(&report, "concurrently-in-transaction"), [(2, Severity::Danger)]);
    let err = migrate::deploy(&url, &migrations, &config, &Progress::discard()).await.unwrap_err();
    match &err {
        migrate::MigrateError::Failed { name, code, error, database_changed, .. } => {
            assert_eq!((name.as_str(), code.as_str()), ("1_index", "25001"), "{err:?}");
            assert!(error.contains("cannot run inside a transaction block"), "{error}");
            assert!(*database_changed, "0_orders was applied first");
        }
        other => panic!("{other:?}"),
    }
    // Without BEGIN … COMMIT: no finding, and it deploys.
    let url = pg.create_database("alone");
    let (_dir, migrations) = clean_migrations_of(&[
        ("0_orders", ORDERS),
        ("1_index", "CREATE INDEX CONCURRENTLY orders_code_idx ON orders (code);\n"),
    ]);
    migrate::deploy(&url, &migrations, &config, &Progress::discard()).await.unwrap();

    // A BEGIN never committed: deploy refuses before applying anything.
    let url = pg.create_database("open");
    let open = "CREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\n";
    let (_dir, migrations) = migrations_of(&[("0_orders", ORDERS), ("1_open", open)]);
    assert_eq!(
        found(&lint::lint_files(&[&migrations[1]]), "uncommitted-transaction"),
        [(2, Severity::Danger)]
    );
    let err = migrate::deploy(&url, &migrations, &config, &Progress::discard()).await.unwrap_err();
    assert!(
        matches!(&err, migrate::MigrateError::Failed { name, line: Some(2), database_changed: false, .. } if name == "1_open"),
        "{err:?}"
    );
    assert_eq!(pg.psql("open", "SELECT count(*) FROM pg_class WHERE relname = 'orders'").trim(), "0");
}

/// [`migrations_of`] for files the lint finds no certain failure in.
fn clean_migrations_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<MigrationFile>) {
    let (dir, migrations) = migrations_of(files);
    let report = lint::lint_files(&migrations.iter().collect::<Vec<_>>());
    assert_eq!(report.max_severity().filter(|s| *s == Severity::Danger), None, "{:?}", report.findings);
    (dir, migrations)
}

#[tokio::test]
async fn transaction_control_in_a_file_behaves_as_the_lint_says() {
    let pg = common::Cluster::start_temp();
    let config = MigrateConfig::default();

    // ROLLBACK: the migration is recorded as applied, its table is not there.
    let url = pg.create_database("rollback");
    let rollback = "BEGIN;\nCREATE TABLE a (id int);\nROLLBACK;\n";
    let (_dir, migrations) = migrations_of(&[("1_rollback", rollback)]);
    assert_eq!(
        found(&lint::lint_files(&[&migrations[0]]), "rollback-in-migration"),
        [(3, Severity::Warning)]
    );
    let applied = migrate::deploy(&url, &migrations, &config, &Progress::discard()).await.unwrap();
    assert_eq!(applied.applied, ["1_rollback"]);
    assert_eq!(pg.psql("rollback", "SELECT count(*) FROM pg_class WHERE relname = 'a'").trim(), "0");

    // A nested BEGIN: the inner COMMIT ends the outer block, so a later
    // failure leaves the first part behind.
    let url = pg.create_database("nested");
    let nested = "BEGIN;\nCREATE TABLE a (id int);\nBEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n\
                  INSERT INTO nope VALUES (1);\nCOMMIT;\n";
    let (_dir, migrations) = migrations_of(&[("1_nested", nested)]);
    let report = lint::lint_files(&[&migrations[0]]);
    assert_eq!(found(&report, "transaction-nesting"), [(3, Severity::Warning)]);
    assert_eq!(found(&report, "commit-mid-file"), [(5, Severity::Info)]);
    let err = migrate::deploy(&url, &migrations, &config, &Progress::discard()).await.unwrap_err();
    assert!(matches!(&err, migrate::MigrateError::Failed { line: Some(6), .. }), "{err:?}");
    assert_eq!(pg.psql("nested", "SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b')").trim(), "2");
}

#[tokio::test]
async fn with_a_database_a_constraint_building_its_index_carries_the_build_estimate() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("unique");
    let (_dir, migrations) = migrations_of(&[("0_orders", ORDERS)]);
    migrate::deploy(&url, &migrations, &MigrateConfig::default(), &Progress::discard()).await.unwrap();
    let (_dir, migrations) = migrations_of(&[
        ("0_orders", ORDERS),
        (
            "1_unique",
            "SET lock_timeout = '2s';\nALTER TABLE orders ADD CONSTRAINT orders_code_key UNIQUE (code);\n",
        ),
    ]);
    let report = migrate::lint(Some(&url), &migrations).await.unwrap();
    assert_eq!(report.migrations, ["1_unique"]);
    let f: Vec<_> = report.findings.iter().map(|f| (f.rule, f.line, f.severity)).collect();
    assert_eq!(f, [("constraint-builds-index", 2, Severity::Warning)]);
    let seconds = report.findings[0].estimated_seconds.expect("sized with a database");
    assert!(seconds > 0.0, "{seconds}");
}
