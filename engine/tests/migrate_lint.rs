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

fn dangerous_file() -> (String, Vec<usize>) {
    let mut sql = String::from("-- statements known to be dangerous, one per line\n");
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
    assert_eq!(report.statements, DANGEROUS.len());
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
    assert_eq!(rules, [("alter-column-type", 1), ("rename-column", 2)]);
    let orders = report.tables.iter().find(|t| t.table == "orders").expect("orders measured");
    assert_eq!(orders.estimated_rows, Some(20000));
    assert!(orders.total_bytes > 500_000, "{orders:?}");
    assert_eq!(report.downtime.class, DowntimeClass::Small);
    assert!(
        report.downtime.reason.contains("alter-column-type") && report.downtime.reason.contains("orders"),
        "{}",
        report.downtime.reason
    );

    let plan =
        migrate::plan(&url, &migrations, &runway_tests::postgres::pg_bin().join("pg_dump")).await.unwrap();
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
    let plan =
        migrate::plan(&url, &migrations, &runway_tests::postgres::pg_bin().join("pg_dump")).await.unwrap();
    assert_eq!(plan.pending, ["2_index"]);
    assert!(plan.safe_without_maintenance, "{:?}", plan.reasons);
    assert_eq!(plan.lint.downtime.class, DowntimeClass::Small);
}
