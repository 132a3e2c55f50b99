//! `runway rollout …` and `runway agents`: talking to the coordinator.

use std::path::PathBuf;
use std::time::Duration;

use runway_proto::v1::{
    CancelRolloutRequest, GetRolloutRequest, ListAgentsRequest, ListRolloutsRequest, Rollout, RolloutState,
    StartRolloutRequest, WatchRolloutRequest,
};
use tonic::Code;

use crate::exit;
use crate::remote::{CallError, Remote};
use crate::render::{self, EventPrinter, Format};

/// `runway rollout <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Start a rollout of a migrations folder to an environment.
    ///
    /// Packs the folder (every migration.sql and migration_lock.toml) into a
    /// bundle named by its SHA-256 digest, checks it, and asks the leader to
    /// run the default plan: preflight, maintenance on, backup, migrate,
    /// restart, maintenance off.
    Start {
        /// Environment to roll out to, e.g. staging.
        #[arg(long = "env")]
        environment: String,
        /// The Prisma migrations folder.
        #[arg(long, default_value = "prisma/migrations")]
        migrations: PathBuf,
        /// App version handed to the app hosts' restart hook (RUNWAY_APP_VERSION).
        #[arg(long, default_value = "")]
        app_version: String,
        /// Follow the rollout until it ends; the exit code is its outcome.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a rollout's events until it ends (survives coordinator failover).
    Watch {
        /// Rollout id.
        id: String,
        /// First event sequence number to show.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
    },
    /// List rollouts, oldest first.
    List {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Show one rollout and its steps.
    Show {
        /// Rollout id.
        id: String,
    },
    /// Stop a rollout after its current step; maintenance mode is turned off again.
    Cancel {
        /// Rollout id.
        id: String,
    },
}

/// Prints an error and returns the matching exit code.
pub fn fail(error: &CallError) -> i32 {
    eprintln!("error: {error}");
    match error {
        CallError::Unreachable(_) => exit::UNREACHABLE,
        CallError::Status(s)
            if matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound) =>
        {
            exit::INVALID
        }
        CallError::Status(_) => exit::FAILED,
    }
}

pub async fn run(remote: &Remote, format: Format, command: RolloutCommand) -> i32 {
    match command {
        RolloutCommand::Start { environment, migrations, app_version, watch } => {
            let bundle = match runway_engine::migrate::source::read_folder(&migrations) {
                Ok(bundle) => bundle,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::INVALID;
                }
            };
            let request = StartRolloutRequest { environment, bundle: Some(bundle), app_version };
            let rollout = match remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.start_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await
            {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match format {
                Format::Json if !watch => println!("{}", render::rollout_json(&rollout)),
                Format::Json => {}
                Format::Text => eprintln!(
                    "rollout {} started: bundle {} to {}",
                    rollout.id,
                    &rollout.bundle_digest[..12.min(rollout.bundle_digest.len())],
                    rollout.environment
                ),
            }
            if watch { watch_rollout(remote, format, &rollout.id, 1).await } else { exit::OK }
        }
        RolloutCommand::Watch { id, from_seq } => watch_rollout(remote, format, &id, from_seq).await,
        RolloutCommand::List { environment } => {
            let request = ListRolloutsRequest { environment: environment.unwrap_or_default() };
            match remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.list_rollouts(r).await.map(|r| r.into_inner()) }
                })
                .await
            {
                Ok(list) => {
                    for r in &list.rollouts {
                        match format {
                            Format::Json => println!("{}", render::rollout_json(r)),
                            Format::Text => println!(
                                "{:<18} {:<12} {:<10} {}  {}",
                                r.id,
                                r.environment,
                                render::state_name(r.state),
                                &r.bundle_digest[..12.min(r.bundle_digest.len())],
                                r.error
                            ),
                        }
                    }
                    exit::OK
                }
                Err(e) => fail(&e),
            }
        }
        RolloutCommand::Show { id } => match get(remote, &id).await {
            Ok(r) => {
                match format {
                    Format::Json => println!("{}", render::rollout_json(&r)),
                    Format::Text => render::print_rollout(&r),
                }
                exit::OK
            }
            Err(e) => fail(&e),
        },
        RolloutCommand::Cancel { id } => {
            let request = CancelRolloutRequest { rollout_id: id.clone() };
            match remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.cancel_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await
            {
                Ok(_) => {
                    eprintln!("cancel requested: rollout {id} stops after its current step");
                    exit::OK
                }
                Err(e) => fail(&e),
            }
        }
    }
}

async fn get(remote: &Remote, id: &str) -> Result<Rollout, CallError> {
    let request = GetRolloutRequest { rollout_id: id.to_owned() };
    remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.get_rollout(r).await.map(|r| r.into_inner()) }
        })
        .await
}

/// Follows a rollout to its end, reconnecting (to a new leader if need
/// be) from the last sequence number seen.
pub async fn watch_rollout(remote: &Remote, format: Format, id: &str, from_seq: u64) -> i32 {
    let printer = EventPrinter::new(format);
    let mut next = from_seq.max(1);
    let mut reconnects = 0u32;
    let final_state = loop {
        let request = WatchRolloutRequest { rollout_id: id.to_owned(), from_seq: next };
        let stream = remote
            .call(|mut c| {
                let r = request.clone();
                async move { c.watch_rollout(r).await.map(|r| r.into_inner()) }
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                printer.finish();
                return fail(&e);
            }
        };
        let mut ended = None;
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if event.seq < next {
                        continue;
                    }
                    next = event.seq + 1;
                    printer.event(&event);
                    if event.terminal {
                        ended = Some(event.rollout_state);
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    if format == Format::Text {
                        eprintln!(
                            "watch interrupted ({}); reconnecting from event #{next}",
                            status.message()
                        );
                    }
                    break;
                }
            }
        }
        if let Some(state) = ended {
            break state;
        }
        reconnects += 1;
        if reconnects > 100 {
            printer.finish();
            eprintln!(
                "error: lost the rollout's event stream too often; `runway rollout watch {id} --from-seq {next}` resumes"
            );
            return exit::UNREACHABLE;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    printer.finish();
    match RolloutState::try_from(final_state) {
        Ok(RolloutState::Succeeded) => {
            if format == Format::Text {
                eprintln!("rollout {id} succeeded");
            }
            exit::OK
        }
        Ok(RolloutState::Cancelled) => {
            if format == Format::Text {
                eprintln!("rollout {id} was cancelled");
            }
            exit::CANCELLED
        }
        _ => {
            if format == Format::Text {
                if let Ok(r) = get(remote, id).await {
                    eprintln!("rollout {id} failed: {}", r.error);
                } else {
                    eprintln!("rollout {id} failed");
                }
            }
            exit::FAILED
        }
    }
}

/// `runway agents`.
pub async fn agents(remote: &Remote, format: Format, environment: Option<String>) -> i32 {
    let request = ListAgentsRequest { environment: environment.unwrap_or_default() };
    match remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.list_agents(r).await.map(|r| r.into_inner()) }
        })
        .await
    {
        Ok(list) => {
            if format == Format::Text && list.agents.is_empty() {
                eprintln!("no agents connected");
            }
            for a in &list.agents {
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({
                            "name": a.name, "environment": a.environment, "roles": a.roles, "labels": a.labels,
                            "runway_version": a.runway_version, "app_version": a.app_version,
                            "connected_unix_ms": a.connected_unix_ms, "last_seen_unix_ms": a.last_seen_unix_ms,
                        })
                    ),
                    Format::Text => println!(
                        "{:<20} {:<12} {:<8} app {:<10} runway {}",
                        a.name,
                        a.environment,
                        a.roles.join(","),
                        if a.app_version.is_empty() { "-" } else { &a.app_version },
                        a.runway_version
                    ),
                }
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
