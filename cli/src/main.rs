//! `runway`: parse the command line, run the command, exit with its code
//! (see `runway --help` for the codes).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = runway_cli::parse();
    runway_cli::run(cli).await.into()
}
