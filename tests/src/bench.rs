//! What the benchmarks in `benches/` share.

/// The process arguments without the `--bench` flag that `cargo bench`
/// passes to every bench target (ours are plain `main`s, `harness = false`).
pub fn args() -> impl Iterator<Item = String> {
    std::env::args().filter(|a| a != "--bench")
}
