//! The `flashsync` command line against a real (throwaway) Postgres: `run`
//! holds the store, the other commands reach it through the admin socket; once
//! `run` stops (SIGTERM), they open the store directly.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flashsync_source_pg::testkit;

const BIN: &str = env!("CARGO_BIN_EXE_flashsync");

fn flashsync(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("--config").arg(config).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_status_stop_resume_dump_and_clean_shutdown() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(
                "CREATE TABLE users (id bigint PRIMARY KEY, name text);
                 INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100) g;",
            )
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_TEST_PG_URL"
[[views]]
name = "users_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.users"
[[views]]
name = "users_copy"
persistence = "materialized"
origin = "postgres:main"
upstream = "public.users"
"#,
    )
    .unwrap();
    let c = &db.conninfo;
    let url = format!(
        "host={} port={} user={} dbname={} sslmode=disable{}",
        c.host,
        c.port,
        c.user,
        c.dbname,
        c.password.as_ref().map(|p| format!(" password={}", p.expose())).unwrap_or_default()
    );
    // Before the first run, status already lists the configured views.
    let (ok, out, err) = flashsync(&config, &["status"]);
    assert!(ok && out.contains("public.users_live") && out.contains("public.users_copy"), "{out} {err}");
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_TEST_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("data/admin/flashsync.sock");
    wait("the admin socket", Duration::from_secs(30), || socket.exists());
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600, "owner-only socket");
    assert_eq!(std::fs::metadata(socket.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    // The mirror's rows are owner-only too: the store directory is 0700.
    assert_eq!(std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode() & 0o777, 0o700);

    wait("both views up", Duration::from_secs(30), || {
        let (ok, out, _) = flashsync(&config, &["status", "--json"]);
        ok && out.contains("\"running\"") && out.contains("\"synced\"")
    });
    let (ok, out, err) = flashsync(&config, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("public.users_live") && out.contains("running"), "{out}");

    rt.block_on(async { db.client().await.batch_execute("INSERT INTO users VALUES (1000, 'new')").await.unwrap() });
    wait("the insert to arrive", Duration::from_secs(30), || {
        flashsync(&config, &["dump", "public.users_live"]).1.contains("1000\tnew")
    });

    let (ok, out, _) = flashsync(&config, &["stop", "public.users_live"]);
    assert!(ok && out.contains("stopped: public.users_live"), "{out}");
    let (_, out, _) = flashsync(&config, &["status", "public.users_live", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0]["enabled"], false);
    assert_eq!(v[0]["state"], "idle");
    let (ok, out, _) = flashsync(&config, &["resume", "public.users_live"]);
    assert!(ok && out.contains("running (realtime):    public.users_live"), "{out}");
    let (ok, out, _) = flashsync(&config, &["dump", "public.users_copy", "--json", "--limit", "2"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2);
    assert!(out.lines().next().unwrap().contains("\"name\":\"u1\""), "{out}");
    let (ok, _, err) = flashsync(&config, &["sync", "bad selector."]);
    assert!(!ok && err.contains("error:"), "{err}");
    // A selector that matches nothing is an error for stop and forget (a
    // typo must not look like success), and nothing is touched.
    for verb in ["stop", "forget"] {
        let (ok, out, err) = flashsync(&config, &[verb, "public.no_such_view"]);
        assert!(!ok && err.contains("no views match"), "{verb}: {out} {err}");
    }

    // SIGTERM: a clean shutdown.
    rustix_kill(run.id());
    let status = run.wait().unwrap();
    assert!(status.success(), "run exits cleanly on SIGTERM");
    assert!(!socket.exists(), "the socket is removed");

    // Without `run`, commands open the store directly.
    let (ok, out, err) = flashsync(&config, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("public.users_copy"), "{out}");
    let (ok, out, _) = flashsync(&config, &["dump", "public.users_live"]);
    assert!(ok && out.contains("1000\tnew"), "{out}");

    // A reader that stops early (`flashsync dump … | head -1`) ends the dump
    // quietly: no panic, success.
    for extra in [&[][..], &["--json"][..]] {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["dump", "public.users_live"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "dump {extra:?} into a closed pipe: {:?}: {err}",
            out.status
        );
        // Its log (a warning goes to the piped stderr) carries no colour codes.
        assert!(!err.contains('\u{1b}'), "escape codes in a log that is not a terminal: {err:?}");
    }
    // SIGHUP (the terminal went away) stops `run` cleanly too: exit 0, no
    // stale socket.
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_TEST_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("data/admin/flashsync.sock");
    wait("the admin socket again", Duration::from_secs(30), || socket.exists());
    wait("the views up again", Duration::from_secs(30), || {
        let (ok, out, _) = flashsync(&config, &["status", "--json"]);
        ok && out.contains("\"running\"")
    });
    signal(run.id(), "-HUP");
    let status = run.wait().unwrap();
    assert!(status.success(), "run exits cleanly on SIGHUP: {status:?}");
    assert!(!socket.exists(), "the socket is removed after SIGHUP");
}

fn rustix_kill(pid: u32) {
    signal(pid, "-TERM");
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill").arg(which).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}
