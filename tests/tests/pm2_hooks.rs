//! The shipped pm2 hooks (`deploy/hooks/pm2/hook.sh`) do the runbook's
//! deploy for real: a tiny Node app in a local git repository with two
//! tagged versions runs under a real pm2 (from the npm registry;
//! `deploy/install-deps.sh` installs it); an app agent whose hooks are the
//! shipped script rolls out `v2` (maintenance mode on through
//! `pm2 restart --update-env`, `git checkout`, `npm ci`, the build script,
//! `pm2 reload`, maintenance off) and `runway rollout rollback` brings `v1`
//! back the same way.
//!
//! The app prints `start version=… built=… maintenance=…` each time it
//! starts (pm2 keeps that in its out log), so the test sees every restart
//! and what it ran: the code of the tag (`version`), the build's output
//! (`built`, written by the tag's build script) and the maintenance flag.
//!
//! Real etcd, PostgreSQL, a coordinator, a DB agent, an app agent, git, node
//! and pm2 as processes. pm2 runs with a `PM2_HOME` in the test's temp dir
//! and its daemon is killed at the end, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use runway_tests::cluster::{AppHooks, Cluster, Options, http_get};
use runway_tests::fixtures::SHOP;
use runway_tests::process::{free_port, in_ci, kill_pid, wait_until, workspace_root};
use runway_tests::watch::json_lines;

/// The app's name in pm2.
const APP: &str = "api";

/// The app at both tags: `VERSION` is in the code, the build writes
/// package.json's version to `build.txt`, and `MAINTENANCE_MODE=true`
/// turns every page but `/health` into a 503.
const SERVER_JS: &str = r#"const http = require("http");
const fs = require("fs");
const path = require("path");
const VERSION = "@VERSION@";
let built = "none";
try {
  built = fs.readFileSync(path.join(__dirname, "build.txt"), "utf8").trim();
} catch {}
const maintenance = process.env.MAINTENANCE_MODE === "true";
console.log(`start version=${VERSION} built=${built} maintenance=${maintenance}`);
http
  .createServer((req, res) => {
    if (req.url === "/health") {
      return res.end(`ok version=${VERSION} built=${built} maintenance=${maintenance}\n`);
    }
    if (maintenance) {
      res.statusCode = 503;
      return res.end("down for maintenance\n");
    }
    res.end(`hello from ${VERSION}\n`);
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
"#;

const BUILD_JS: &str =
    "require(\"fs\").writeFileSync(\"build.txt\", require(\"./package.json\").version + \"\\n\");\n";

fn package_json(version: &str) -> String {
    format!(
        "{{\n  \"name\": \"api\",\n  \"version\": \"{version}\",\n  \"private\": true,\n  \
         \"scripts\": {{ \"build\": \"node build.js\" }}\n}}\n"
    )
}

/// npm's lockfile for an app without dependencies: `npm ci` runs, offline.
fn package_lock(version: &str) -> String {
    format!(
        "{{\n  \"name\": \"api\",\n  \"version\": \"{version}\",\n  \"lockfileVersion\": 3,\n  \"requires\": true,\n  \
         \"packages\": {{\n    \"\": {{\n      \"name\": \"api\",\n      \"version\": \"{version}\"\n    }}\n  }}\n}}\n"
    )
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// pm2: on PATH, or where `deploy/install-deps.sh` puts it.
fn find_pm2() -> Option<PathBuf> {
    which("pm2").or_else(|| {
        let local = workspace_root().join("target/tools/npm/bin/pm2");
        local.is_file().then_some(local)
    })
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A pm2 daemon of the test's own (`PM2_HOME` in its temp dir), killed
/// with `pm2 kill` on drop; its PID file is the fallback.
struct Pm2 {
    bin: PathBuf,
    home: PathBuf,
    /// PATH for pm2, node, npm and git: also the hooks' PATH.
    path: String,
    /// HOME of every command (git, npm): a dir of the test's.
    user_home: PathBuf,
}

impl Pm2 {
    /// A command with a cleared environment: PATH, HOME, PM2_HOME only.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.user_home)
            .env("PM2_HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(&self.bin).args(args).arg("--no-color").output().expect("run pm2");
        assert!(out.status.success(), "pm2 {} failed: {}", args.join(" "), text(&out));
        out
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's own log and the app's error log (beside PM2_HOME).
            for log in [self.home.join("pm2.log"), self.home.with_file_name("api-error.log")] {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> =
                    text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                eprintln!("----- last lines of {} -----\n{}", log.display(), tail.join("\n"));
            }
        }
        let _ = self.command(&self.bin).args(["kill", "--no-color"]).output();
        // `pm2 kill` removes the PID file once its daemon is gone.
        if let Some(pid) =
            std::fs::read_to_string(self.home.join("pm2.pid")).ok().and_then(|s| s.trim().parse().ok())
        {
            kill_pid(pid);
        }
    }
}

/// `git` in `dir` with a fixed identity.
fn git(pm2: &Pm2, dir: &Path, args: &[&str]) {
    let out = pm2
        .command(Path::new("git"))
        .args(["-c", "user.name=runway test", "-c", "user.email=test@runway.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {} failed: {}", args.join(" "), text(&out));
}

/// The upstream repository: tags `v1` (no lockfile: nothing to install)
/// and `v2` (package-lock.json: `npm ci`), both with a build script.
fn make_upstream(pm2: &Pm2, dir: &Path) {
    std::fs::create_dir_all(dir).expect("create upstream dir");
    git(pm2, dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".gitignore"), "build.txt\nnode_modules/\n").expect("write .gitignore");
    std::fs::write(dir.join("build.js"), BUILD_JS).expect("write build.js");
    for (tag, version) in [("v1", "1.0.0"), ("v2", "2.0.0")] {
        std::fs::write(dir.join("server.js"), SERVER_JS.replace("@VERSION@", tag)).expect("write server.js");
        std::fs::write(dir.join("package.json"), package_json(version)).expect("write package.json");
        if tag == "v2" {
            std::fs::write(dir.join("package-lock.json"), package_lock(version)).expect("write lockfile");
        }
        git(pm2, dir, &["add", "-A"]);
        git(pm2, dir, &["commit", "-q", "-m", &format!("api {tag}")]);
        git(pm2, dir, &["tag", tag]);
    }
}

/// Every `start …` line of the app's pm2 out log, without the prefix.
fn starts(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| l.strip_prefix("start ")).map(str::to_owned).collect()
}

/// The app version app-1 registered with.
fn registered_version(cluster: &Cluster) -> String {
    let out = cluster.runway(&["agents", "--output", "json"]);
    json_lines(&out.stdout)
        .into_iter()
        .find(|a| a["name"] == "app-1")
        .and_then(|a| a["app_version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("app-1 is not listed: {}", text(&out)))
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

#[test]
fn the_pm2_hooks_roll_a_node_app_out_to_a_tag_and_back() {
    let started = Instant::now();
    let Some(pm2_bin) = find_pm2() else {
        assert!(!in_ci(), "pm2 is missing; deploy/install-deps.sh installs it from the npm registry");
        eprintln!("skipping: pm2 is not installed (deploy/install-deps.sh installs it)");
        return;
    };
    let node = which("node").expect("node on PATH (pm2 needs it)");
    let git_bin = which("git").expect("git on PATH");
    let dir = tempfile::Builder::new().prefix("runway-pm2-").tempdir().expect("temp dir");
    let root = dir.path();
    let user_home = root.join("home");
    std::fs::create_dir_all(&user_home).expect("create home");
    let bin_dirs: Vec<&Path> =
        [&pm2_bin, &node, &git_bin].iter().map(|p| p.parent().expect("a bin dir")).collect();
    let mut path: Vec<String> = Vec::new();
    for dir in bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .chain(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from))
    {
        if !path.contains(&dir) {
            path.push(dir);
        }
    }
    let pm2 = Pm2 { bin: pm2_bin, home: root.join("pm2"), path: path.join(":"), user_home };

    // The app's repository and the host's checkout of it, at v1 and built.
    let upstream = root.join("upstream");
    let checkout = root.join("api");
    make_upstream(&pm2, &upstream);
    git(&pm2, root, &["clone", "-q", upstream.to_str().expect("UTF-8 path"), "api"]);
    git(&pm2, &checkout, &["checkout", "-q", "--detach", "v1"]);
    let build =
        pm2.command(Path::new("node")).arg("build.js").current_dir(&checkout).output().expect("run node");
    assert!(build.status.success(), "the v1 build failed: {}", text(&build));

    // Under pm2, as the team runs it: `pm2 start server.js --name api`.
    let port = free_port();
    let out_log = root.join("api-out.log");
    let started_pm2 = Instant::now();
    let server = checkout.join("server.js");
    let out = pm2
        .command(&pm2.bin)
        .args(["start", server.to_str().expect("UTF-8 path"), "--name", APP, "--no-color", "--output"])
        .arg(&out_log)
        .arg("--error")
        .arg(root.join("api-error.log"))
        .env("PORT", port.to_string())
        .current_dir(&checkout)
        .output()
        .expect("run pm2 start");
    assert!(out.status.success(), "pm2 start failed: {}", text(&out));
    let health =
        || http_get("127.0.0.1", port, "/health").filter(|(code, _)| *code == 200).map(|(_, body)| body);
    let body = wait_until("the app to answer under pm2", Duration::from_secs(20), health);
    assert!(body.contains("version=v1 built=1.0.0 maintenance=false"), "{body}");
    eprintln!("pm2 daemon and app up in {:?}", started_pm2.elapsed());

    // An app agent whose hooks are the shipped script, configured as
    // deploy/hooks/pm2/agent-app.toml shows.
    let hook = workspace_root().join("deploy/hooks/pm2/hook.sh");
    let argv = |action: &str| vec![hook.display().to_string(), action.to_owned()];
    let health_url = format!("http://127.0.0.1:{port}/health");
    let hook_env_pairs = [
        ("PATH", pm2.path.clone()),
        ("HOME", pm2.user_home.display().to_string()),
        ("PM2_HOME", pm2.home.display().to_string()),
        ("HOOK_PM2_APP", APP.to_owned()),
        ("HOOK_APP_DIR", checkout.display().to_string()),
        ("HOOK_HEALTH_URL", health_url.clone()),
        ("HOOK_HEALTH_TIMEOUT", "20".to_owned()),
        ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
        ("NPM_CONFIG_UPDATE_NOTIFIER", "false".to_owned()),
    ];
    let hook_env =
        hook_env_pairs.iter().map(|(k, v)| format!("{k} = {}", toml_str(v))).collect::<Vec<_>>().join(", ");
    let hooks = AppHooks {
        maintenance_on: argv("maintenance-on"),
        maintenance_off: argv("maintenance-off"),
        restart: argv("deploy"),
        health_url,
        app_toml: format!(
            "version_command = [{}, \"version\"]\nhook_env = {{ {hook_env} }}",
            toml_str(&hook.display().to_string())
        ),
    };
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        app_hooks: Some(hooks),
        ..Options::default()
    });
    assert_eq!(registered_version(&cluster), "v1", "the agent did not take v1 from `hook.sh version`");
    let mut expected = vec!["version=v1 built=1.0.0 maintenance=false"];
    assert_eq!(starts(&out_log), expected);

    // Rollout to v2: maintenance on (a restart of v1), deploy (v2 checked
    // out, `npm ci`, built, reloaded), maintenance off (a restart of v2).
    let rollout_started = Instant::now();
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "the rollout to v2 failed: {}", text(&out));
    eprintln!("rollout to v2 in {:?}", rollout_started.elapsed());
    let id = events.first().and_then(|e| e["rollout_id"].as_str()).expect("a rollout id").to_owned();
    let body = health().expect("the app answers after the rollout");
    assert!(
        body.contains("version=v2 built=2.0.0 maintenance=false"),
        "after the rollout to v2 the app says {body}"
    );
    expected.extend([
        "version=v1 built=1.0.0 maintenance=true",
        "version=v2 built=2.0.0 maintenance=true",
        "version=v2 built=2.0.0 maintenance=false",
    ]);
    assert_eq!(starts(&out_log), expected, "the rollout's restarts");
    let said = text(&out);
    for needle in ["pm2 hook: checked out v2", "pm2 hook: npm ci", "pm2 hook: npm run build"] {
        assert!(said.contains(needle), "the rollout's events do not show {needle:?}: {said}");
    }
    assert_eq!(registered_version(&cluster), "v2");

    // Rollback: the version that ran before the rollout comes back the
    // same way (v1 has no lockfile: nothing to install).
    let rollback_started = Instant::now();
    let back = cluster.runway(&["rollout", "rollback", &id, "--yes", "--watch", "--output", "json"]);
    eprintln!("rollback to v1 in {:?}", rollback_started.elapsed());
    let back_events = json_lines(&back.stdout);
    let last = back_events.last().unwrap_or_else(|| panic!("no events: {}", text(&back)));
    assert_eq!(last["rollout_state"], "rolled_back", "{}", text(&back));
    let body = health().expect("the app answers after the rollback");
    assert!(
        body.contains("version=v1 built=1.0.0 maintenance=false"),
        "after the rollback the app says {body}"
    );
    expected.extend([
        "version=v2 built=2.0.0 maintenance=true",
        "version=v1 built=1.0.0 maintenance=true",
        "version=v1 built=1.0.0 maintenance=false",
    ]);
    assert_eq!(starts(&out_log), expected, "the rollback's restarts");
    let said = text(&back);
    assert!(said.contains("pm2 hook: checked out v1"), "{said}");
    assert!(said.contains("pm2 hook: no dependencies to install"), "{said}");
    let page = http_get("127.0.0.1", port, "/").expect("the app answers /");
    assert_eq!(page, (200, "hello from v1\n".to_owned()), "maintenance mode is still on");
    assert_eq!(registered_version(&cluster), "v1");
    let described = pm2.run(&["jlist"]);
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("\"MAINTENANCE_MODE\":\"false\""), "pm2's env of the app: {described}");

    // Run as the agent runs it: a tag that does not exist fails with the
    // reason and touches nothing; maintenance off again restarts nothing.
    let run_hook = |action: &str, extra: &[(&str, &str)]| {
        Command::new(&hook)
            .arg(action)
            .env_clear()
            .envs(hook_env_pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .expect("run the pm2 hook")
    };
    let bad = run_hook("deploy", &[("RUNWAY_APP_VERSION", "v9")]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("version 'v9' is not a tag or commit of"), "{}", text(&bad));
    let again = run_hook("maintenance-off", &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("MAINTENANCE_MODE is already false for api"), "{}", text(&again));
    assert_eq!(starts(&out_log), expected, "a failed deploy or a repeated maintenance-off restarted the app");
    let body = health().expect("the app answers");
    assert!(body.contains("version=v1 built=1.0.0 maintenance=false"), "{body}");
    eprintln!("whole test in {:?}", started.elapsed());
}
