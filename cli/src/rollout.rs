//! `runway rollout …` and `runway agents`: talking to the coordinator.
//!
//! - `view`: rollouts, events and agents as text and JSON.

pub(crate) mod databases;
pub(crate) mod plan_view;
pub(crate) mod view;

use std::path::PathBuf;
use std::time::Duration;

use runway_identity::signature::{DeployClaim, Operation};
use runway_proto::v1::{
    ApproveRolloutRequest, CancelRolloutRequest, DeploySignature, ForgetAgentRequest, GetRolloutRequest,
    ListAgentsRequest, ListRolloutsRequest, PlanRolloutRequest, PlanVerdict, RejectRolloutRequest,
    RollbackRolloutRequest, Rollout, RolloutState, StartRolloutRequest, WatchRolloutRequest,
};
use runway_telemetry::TraceParent;

use crate::exit::Exit;
use crate::output::{Failure, Output, Reporter};
use crate::remote::{CallError, Remote};
use tracing::Instrument;

/// How often a watch may lose its stream (each time resuming from the last
/// event seen) before it gives up.
const MAX_RECONNECTS: u32 = 100;
/// Pause before resuming a lost watch.
const RECONNECT_PAUSE: Duration = Duration::from_millis(300);

/// `runway rollout <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Start a rollout of a migrations folder to an environment.
    ///
    /// Packs the folder (every migration.sql and migration_lock.toml) into a
    /// bundle named by its SHA-256 digest, checks it, and asks the leader to
    /// run the default plan: preflight, maintenance on, backup, migrate,
    /// restart, maintenance off. Where the environment requires approvals,
    /// the rollout waits after preflight (state awaiting_approval) until
    /// other operators approve it (`runway rollout approve`); --watch keeps
    /// following it while it waits.
    Start(StartArgs),
    /// Show what a rollout would do, without changing anything.
    ///
    /// Sends the rollout's own preflight to every host of the environment
    /// (through the leader, outside any rollout; nothing is saved) and
    /// prints the steps and hosts that would run, each host's answer, the
    /// pending migrations, the lint findings with table sizes, the downtime
    /// class, the disk check, whether maintenance mode is needed, what the
    /// environment's policies say (staging first, maintenance, webhooks),
    /// and the verdict. Preflight changes nothing on a host: the DB agent writes and
    /// removes a probe file in its backup dir, and every agent journals the
    /// command.
    ///
    /// Exit: 0 safe (runs without maintenance mode, nothing refused); 7
    /// needs maintenance mode; 2 the danger gate would refuse (Danger
    /// findings not accepted with --allow-danger, as `rollout start` exits,
    /// or a policy would refuse: `requires` not met, `maintenance = "never"`
    /// with a plan that needs maintenance mode);
    /// 8 deploy would refuse (an unresolved failed migration, a schema
    /// without _prisma_migrations); 1 a host's preflight failed or it did
    /// not answer; 3 no coordinator.
    Plan {
        /// Environment to plan for, e.g. staging.
        #[arg(long = "env")]
        environment: String,
        /// The Prisma migrations folder.
        #[arg(long, default_value = "prisma/migrations")]
        migrations: PathBuf,
        /// Accept the Danger lint findings of this rule (repeatable), as
        /// `rollout start --allow-danger` would.
        #[arg(long = "allow-danger", value_name = "RULE")]
        allow_danger: Vec<String>,
    },
    /// Follow a rollout's events until it ends (survives coordinator
    /// failover); the exit code is its outcome.
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
    /// Approve a rollout that awaits approval (needs the approve role in
    /// its environment; not for the operator who started it). Once enough
    /// operators approved, it runs on. Approving twice counts once.
    Approve {
        /// Rollout id.
        id: String,
        /// A note recorded with the approval and in the audit log.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a rollout that awaits approval: it ends cancelled, nothing
    /// was changed (maintenance mode was never turned on).
    Reject {
        /// Rollout id.
        id: String,
        /// Why, for the operator who started it and the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Roll an ended rollout back: maintenance mode on, the database put
    /// back, the app hosts' previous version, maintenance mode off.
    ///
    /// The database is put back the runbook's way: by migration (the proven
    /// downs of the migrations the rollout applied, proven again against the
    /// live schema first) when every one has a proven down, which keeps
    /// every row written since; else by restoring the backup it took, which
    /// loses every write since the backup. `--restore` forces the restore.
    ///
    /// Refused (exit 2, nothing changed) without --yes, for a rollout that
    /// still runs or was refused, or, by restore, one that took no backup
    /// or whose backup is no longer kept on the DB host. With --watch, exits 1 once rolled back (the
    /// rollout's outcome stays a failure), 1 if the rollback itself failed.
    Rollback {
        /// Rollout id.
        id: String,
        /// Confirm the rollback. Without it, nothing is sent: it says which
        /// way it would roll back and what each way would lose.
        #[arg(long)]
        yes: bool,
        /// Roll back by restoring the rollout's backup even when its
        /// migrations have proven downs: every write since the backup is lost.
        #[arg(long)]
        restore: bool,
        /// Follow the rollback until it ends.
        #[arg(long)]
        watch: bool,
        /// When another rollout, rollback, restore or verify holds the
        /// environment (one change at a time), wait for it instead of being
        /// refused (exit 2).
        #[arg(long)]
        queue: bool,
    },
}

/// Signs what rollout `rollout_id` changes in the database with the
/// operator's key (see `runway_identity::signature`); nothing to sign with
/// in insecure mode.
fn sign(
    remote: &Remote,
    environment: &str,
    bundle: &runway_proto::v1::Bundle,
    (allow_danger, rollout_id): (&[String], &str),
) -> Result<Option<DeploySignature>, Failure> {
    let Some(credentials) = remote.credentials() else {
        return Ok(None);
    };
    let signed_at = chrono::Utc::now().timestamp();
    let claim = DeployClaim::new(environment, &bundle.digest, allow_danger, rollout_id, signed_at);
    let signature = runway_identity::signature::sign(credentials.key_pem(), &claim.message())
        .map_err(|e| Failure::invalid(format!("cannot sign the rollout with --key: {e}")))?;
    Ok(Some(DeploySignature { certificate: credentials.certificate().to_vec(), signature, signed_at }))
}

/// Runs one `runway rollout` command against the leader.
pub async fn run(remote: &Remote, output: Output, command: RolloutCommand) -> Result<Exit, Failure> {
    match command {
        RolloutCommand::Start(args) => start(remote, output, args).await,
        RolloutCommand::Plan { environment, migrations, allow_danger } => {
            plan(remote, output, environment, &migrations, allow_danger).await
        }
        RolloutCommand::Watch { id, from_seq } => watch_rollout(remote, output, &id, from_seq).await,
        RolloutCommand::List { environment } => list(remote, output, environment).await,
        RolloutCommand::Show { id } => {
            let rollout = get(remote, &id).await?;
            output.result(view::rollout_text(&rollout), &view::rollout_json(&rollout));
            Ok(Exit::Success)
        }
        RolloutCommand::Cancel { id } => {
            let request = CancelRolloutRequest { rollout_id: id.clone(), requested_by: operator() };
            remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.cancel_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await?;
            output.note(format!("cancel requested: rollout {id} stops after its current step"));
            Ok(Exit::Success)
        }
        RolloutCommand::Approve { id, comment } => {
            let request = ApproveRolloutRequest { rollout_id: id, comment, operator: operator() };
            let rollout = remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.approve_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await?;
            output.note(view::decided_line(&rollout, false));
            output.json_line(&view::rollout_json(&rollout));
            Ok(Exit::Success)
        }
        RolloutCommand::Reject { id, reason } => {
            let request = RejectRolloutRequest { rollout_id: id, reason, operator: operator() };
            let rollout = remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.reject_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await?;
            output.note(view::decided_line(&rollout, true));
            output.json_line(&view::rollout_json(&rollout));
            Ok(Exit::Success)
        }
        RolloutCommand::Rollback { id, yes, restore, watch, queue } => {
            rollback(remote, output, &id, Rollback { yes, restore, watch, queue }).await
        }
    }
}

/// The flags of `rollout start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Environment to roll out to, e.g. staging.
    #[arg(long = "env")]
    pub environment: String,
    /// The Prisma migrations folder.
    #[arg(long, default_value = "prisma/migrations")]
    pub migrations: PathBuf,
    /// App version handed to the app hosts' restart hook (RUNWAY_APP_VERSION).
    #[arg(long, default_value = "")]
    pub app_version: String,
    /// Follow the rollout until it ends; the exit code is its outcome.
    #[arg(long)]
    pub watch: bool,
    /// Accept the Danger lint findings of this rule for this rollout
    /// (repeatable), e.g. `--allow-danger drop-column`. Without it, a
    /// Danger finding stops the rollout in preflight, before anything
    /// changes (exit 2); the refusal names each finding and the rule.
    #[arg(long = "allow-danger", value_name = "RULE")]
    pub allow_danger: Vec<String>,
    /// Start although the environment's `requires` (staging first:
    /// the same bundle must have succeeded in another environment,
    /// soaked, and not been rolled back) is not met. Needs the approve
    /// role in the environment besides deploy; recorded in the audit
    /// log. Without it such a rollout is refused (exit 2).
    #[arg(long)]
    pub override_requires: bool,
    /// Leave this known agent out of the rollout (repeatable): without
    /// it, a rollout refuses to start while an agent the environment is
    /// known to have is away (exit 3). Recorded in the rollout and the
    /// audit log. `runway agents forget` removes a host for good.
    #[arg(long = "skip-host", value_name = "NAME")]
    pub skip_hosts: Vec<String>,
    /// When another rollout, rollback, restore or verify holds the
    /// environment (one change at a time), wait for it instead of being
    /// refused (exit 2).
    #[arg(long)]
    pub queue: bool,
}

/// `rollout start`: packs and signs the bundle, asks the leader to start
/// it (waiting for the environment with `--queue`), and follows it with
/// `--watch`.
async fn start(remote: &Remote, output: Output, flags: StartArgs) -> Result<Exit, Failure> {
    let StartArgs {
        environment,
        migrations,
        app_version,
        watch,
        allow_danger,
        override_requires,
        skip_hosts,
        queue,
    } = flags;
    let bundle = runway_engine::migrate::source::read_folder(&migrations)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    // Chosen here so the signature binds it: one signature, one rollout.
    let rollout_id = runway_proto::new_rollout_id();
    let signature = sign(remote, &environment, &bundle, (&allow_danger, &rollout_id))?;
    // The rollout's trace starts here when this CLI sends spans.
    let span = tracing::info_span!(
        "rollout start",
        "deployment.environment.name" = %environment,
        "runway.rollout.id" = tracing::field::Empty,
    );
    let request = StartRolloutRequest {
        environment,
        bundle: Some(bundle),
        app_version,
        allow_danger,
        started_by: operator(),
        signature,
        traceparent: TraceParent::of(&span).map(|t| t.to_string()).unwrap_or_default(),
        override_requires,
        skip_hosts,
        rollout_id,
    };
    let rollout = remote
        .call_queued(
            queue,
            |note| eprintln!("{note}"),
            |mut c| {
                let r = request.clone();
                async move { c.start_rollout(r).await.map(|r| r.into_inner()) }
            },
        )
        .instrument(span.clone())
        .await?;
    span.record("runway.rollout.id", rollout.id.as_str());
    drop(span);
    output.note(view::started_line(&rollout));
    if watch {
        // With --watch, stdout carries the events only.
        watch_rollout(remote, output, &rollout.id, 1).await
    } else {
        output.json_line(&view::rollout_json(&rollout));
        Ok(Exit::Success)
    }
}

/// `rollout plan`: what a rollout of the folder would do, without starting
/// one; the exit code is the plan's verdict.
async fn plan(
    remote: &Remote,
    output: Output,
    environment: String,
    migrations: &std::path::Path,
    allow_danger: Vec<String>,
) -> Result<Exit, Failure> {
    let bundle = runway_engine::migrate::source::read_folder(migrations)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let request = PlanRolloutRequest { environment, bundle: Some(bundle), allow_danger };
    let plan = remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.plan_rollout(r).await.map(|r| r.into_inner()) }
        })
        .await?;
    let exit = Exit::from(PlanVerdict::try_from(plan.verdict).unwrap_or(PlanVerdict::Unspecified));
    output.result(view::rollout_plan_text(&plan), &view::rollout_plan_json(&plan, exit));
    Ok(exit)
}

/// `rollout list`: the rollouts, of one environment or all.
async fn list(remote: &Remote, output: Output, environment: Option<String>) -> Result<Exit, Failure> {
    let request = ListRolloutsRequest { environment: environment.unwrap_or_default() };
    let list = remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.list_rollouts(r).await.map(|r| r.into_inner()) }
        })
        .await?;
    if output.is_json() {
        list.rollouts.iter().for_each(|r| output.json_line(&view::rollout_json(r)));
    } else if list.rollouts.is_empty() {
        output.note("no rollouts");
    } else {
        output.text(view::rollouts_table(&list.rollouts));
    }
    Ok(Exit::Success)
}

/// The flags of `rollout rollback`.
struct Rollback {
    yes: bool,
    restore: bool,
    watch: bool,
    queue: bool,
}

/// `rollout rollback`: without `--yes` the coordinator only says which
/// way it would go and what each way loses (nothing changes; exit 2); with
/// it, the rollback starts (and is followed with `--watch`).
async fn rollback(remote: &Remote, output: Output, id: &str, flags: Rollback) -> Result<Exit, Failure> {
    let Rollback { yes, restore, watch, queue } = flags;
    // The DB agents act on the operator's signed rollback of this rollout,
    // in its environment; a preview changes nothing and needs none.
    let signature = match (yes, remote.credentials()) {
        (true, Some(_)) => {
            let rollout = remote
                .call(|mut c| {
                    let r = GetRolloutRequest { rollout_id: id.to_owned() };
                    async move { c.get_rollout(r).await.map(|r| r.into_inner()) }
                })
                .await?;
            crate::signing::operation(remote, Operation::Rollback, &rollout.environment, id)?
        }
        _ => None,
    };
    let request = RollbackRolloutRequest {
        rollout_id: id.to_owned(),
        confirmed: yes,
        requested_by: operator(),
        restore,
        preview: !yes,
        signature,
    };
    let answer = remote
        .call_queued(
            queue,
            |note| eprintln!("{note}"),
            |mut c| {
                let r = request.clone();
                async move { c.rollback_rollout(r).await.map(|r| r.into_inner()) }
            },
        )
        .await?;
    if !yes {
        output.result(view::rollback_preview_text(id, &answer), &view::rollback_preview_json(&answer));
        return Err(Failure::invalid(format!(
            "rolling back {id} needs --yes{}; nothing was changed",
            if answer.way == "migration" { " (--restore for the restore instead)" } else { "" }
        )));
    }
    output.note(format!(
        "rollback of rollout {id} by {} started ({}; events from #{}); `runway rollout watch {id} --from-seq {}` \
         follows it",
        answer.way, answer.why, answer.first_seq, answer.first_seq
    ));
    if watch {
        watch_rollout(remote, output, id, answer.first_seq).await
    } else {
        if let Some(rollout) = &answer.rollout {
            output.json_line(&view::rollout_json(rollout));
        }
        Ok(Exit::Success)
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
/// be) from the last sequence number seen. Text: the events are progress
/// on stderr; JSON: each event is one line on stdout, the last one terminal.
async fn watch_rollout(remote: &Remote, output: Output, id: &str, from_seq: u64) -> Result<Exit, Failure> {
    let progress = Reporter::stderr();
    let mut next = from_seq.max(1);
    let mut reconnects = 0u32;
    let final_state = loop {
        let request = WatchRolloutRequest { rollout_id: id.to_owned(), from_seq: next };
        let mut stream = remote
            .call(|mut c| {
                let r = request.clone();
                async move { c.watch_rollout(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        let mut ended = None;
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if event.seq < next {
                        continue;
                    }
                    next = event.seq + 1;
                    if output.is_json() {
                        output.json_line(&view::event_json(&event));
                    } else {
                        progress.step(&view::event_step(&event), &view::event_line(&event));
                    }
                    if event.terminal {
                        ended = Some(event.rollout_state);
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    if !output.is_json() {
                        progress.line(&format!(
                            "watch interrupted ({}); reconnecting from event #{next}",
                            status.message()
                        ));
                    }
                    break;
                }
            }
        }
        if let Some(state) = ended {
            break state;
        }
        reconnects += 1;
        if reconnects > MAX_RECONNECTS {
            return Err(Failure::new(
                Exit::Unreachable,
                format!(
                    "lost the rollout's event stream too often; `runway rollout watch {id} --from-seq {next}` resumes"
                ),
            ));
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    };
    progress.finish();
    // The terminal event already told a JSON reader how it ended.
    Ok(match RolloutState::try_from(final_state) {
        Ok(RolloutState::Succeeded) => {
            output.note(format!("rollout {id} succeeded"));
            Exit::Success
        }
        Ok(RolloutState::Cancelled) => {
            output.note(format!("rollout {id} was cancelled"));
            Exit::Cancelled
        }
        Ok(RolloutState::RolledBack) => {
            output.note(format!("rollout {id} was rolled back"));
            Exit::Failed
        }
        _ => match get(remote, id).await {
            // The live data makes a migration fail for certain: the same
            // verdict as `rollout plan`'s "deploy would refuse".
            Ok(r) if r.refused && r.plan.as_ref().is_some_and(|p| p.will_fail().next().is_some()) => {
                output.note(format!("rollout {id} was refused before anything changed: {}", r.error));
                Exit::Blocked
            }
            // Refused by a check before anything changed: bad input, not a failure.
            Ok(r) if r.refused => {
                output.note(format!("rollout {id} was refused before anything changed: {}", r.error));
                Exit::Invalid
            }
            Ok(r) => {
                output.note(format!("rollout {id} failed: {}", r.error));
                Exit::Failed
            }
            Err(_) => {
                output.note(format!("rollout {id} failed"));
                Exit::Failed
            }
        },
    })
}

/// Who the CLI says runs it: `user@host`. The coordinator records it only
/// in insecure mode (as `insecure:user@host`); with TLS it records the
/// operator name of the client certificate.
pub(crate) fn operator() -> String {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

/// `runway agents …`.
#[derive(clap::Subcommand, Debug)]
pub enum AgentsCommand {
    /// Remove an agent from its environment's inventory: a host retired
    /// for good, so rollouts no longer refuse to start while it is away.
    /// Refused while it is connected (exit 2). Needs the deploy role;
    /// recorded in the audit log. An agent that registers again is known
    /// again.
    Forget {
        /// The agent's name.
        name: String,
        /// Its environment.
        #[arg(long = "env")]
        environment: String,
    },
}

/// Runs one `runway agents` subcommand.
pub async fn agents_command(
    remote: &Remote,
    output: Output,
    command: AgentsCommand,
) -> Result<Exit, Failure> {
    match command {
        AgentsCommand::Forget { name, environment } => {
            let request = ForgetAgentRequest { environment, name, requested_by: operator() };
            let forgotten = remote
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.forget_agent(r).await.map(|r| r.into_inner()) }
                })
                .await?;
            let agent = forgotten.agent.unwrap_or_default();
            output.result(
                format!(
                    "forgot agent {} of {} ({})\n",
                    agent.name,
                    agent.environment,
                    agent.roles.join(", ")
                ),
                &view::agent_json(&agent),
            );
            Ok(Exit::Success)
        }
    }
}

/// `runway agents`.
pub async fn agents(remote: &Remote, output: Output, environment: Option<String>) -> Result<Exit, Failure> {
    let request = ListAgentsRequest { environment: environment.unwrap_or_default() };
    let list = remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.list_agents(r).await.map(|r| r.into_inner()) }
        })
        .await?;
    if output.is_json() {
        // Connected agents only: scripts wait for agents by these lines.
        list.agents.iter().for_each(|a| output.json_line(&view::agent_json(a)));
        return Ok(Exit::Success);
    }
    if list.agents.is_empty() {
        output.note("no agents connected");
    } else {
        output.text(view::agents_table(&list.agents));
    }
    if !list.away.is_empty() {
        output.note(format!(
            "known but away (a rollout of their environment refuses to start until they are back, \
             or --skip-host leaves them out): {}",
            list.away
                .iter()
                .map(|a| format!("{} ({})", a.name, a.environment))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Exit::Success)
}
