//! What the benchmarks in `benches/` share.

/// The process arguments without the `--bench` flag that `cargo bench`
/// passes to every bench target (ours are plain `main`s, `harness = false`).
pub fn args() -> impl Iterator<Item = String> {
    std::env::args().filter(|a| a != "--bench")
}

/// `--rounds N` (default `default`), the only argument of the benchmarks
/// that compare two installations; exits 2 with `usage` on anything else.
pub fn rounds_arg(default: usize, usage: &str) -> usize {
    let mut rounds = default;
    let mut args = args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).expect("--rounds N")
            }
            _ => {
                eprintln!("usage: {usage} [--rounds N]   (N ≥ 1, default {default})");
                std::process::exit(2);
            }
        }
    }
    rounds
}

/// Runs the same rollouts on two installations in alternation, `rounds`
/// times after one warm-up round (each round adds one migration, as a
/// release would), and returns each one's median wall time of `runway
/// rollout start --watch`, in ms. The order alternates so neither always
/// runs on a warmer machine. Each installation comes with its name and
/// any extra arguments its CLI runs get.
pub fn side_by_side(clusters: [(&str, &crate::cluster::Cluster, &[&str]); 2], rounds: usize) -> [f64; 2] {
    use crate::fixtures::{SHOP, rollout_start_args, write_migrations};
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut history: Vec<(String, String)> =
        SHOP.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
    for round in 0..=rounds {
        if round > 0 {
            history.push((
                format!("20250101{round:06}_round"),
                format!("CREATE TABLE \"Round{round}\" (\"id\" SERIAL PRIMARY KEY, \"note\" TEXT);\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = history.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (mode, cluster, extra) = clusters[i];
            let migrations = cluster.path().join(format!("round-{round}"));
            write_migrations(&migrations, &refs);
            let version = format!("v{}", round + 2);
            let mut args = rollout_start_args(&migrations, &version);
            args.extend(extra);
            let started = std::time::Instant::now();
            let out = cluster.runway(&args);
            let took = started.elapsed().as_secs_f64() * 1000.0;
            assert!(out.status.success(), "{mode} round {round}: {}", String::from_utf8_lossy(&out.stderr));
            // Round 0 applies the whole history and warms both up: not counted.
            if round > 0 {
                times[i].push(took);
                eprintln!("round {round:>2} {mode:>14}: {took:>7.0} ms");
            }
        }
    }
    times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

/// The median of `values` (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `1.03 GiB`, or `157 MiB` below a GiB.
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// A new database `name` of the throwaway cluster `pg`, filled by
/// `pgbench -i -s scale` (scale 70 ≈ 1 GB): its URL.
pub fn pgbench_database(
    pg: &crate::postgres::Postgres,
    name: &str,
    pg_bin_dir: &std::path::Path,
    scale: u32,
) -> Result<String, String> {
    let url = pg.create_database(name);
    eprintln!("filling a throwaway database with pgbench -i -s {scale} …");
    let started = std::time::Instant::now();
    let status = std::process::Command::new(pg_bin_dir.join("pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string(), &url])
        .status()
        .map_err(|e| format!("starting pgbench: {e}"))?;
    if !status.success() {
        return Err(format!("pgbench -i failed: {status}"));
    }
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
    Ok(url)
}
