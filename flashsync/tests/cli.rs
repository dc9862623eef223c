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
    flashsync_env(config, args, &[])
}

fn flashsync_env(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("--config").arg(config).args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The test database's connection settings as a `url_env` value.
fn pg_url(db: &testkit::TestDb) -> String {
    let c = &db.conninfo;
    format!(
        "host={} port={} user={} dbname={} sslmode=disable{}",
        c.host,
        c.port,
        c.user,
        c.dbname,
        c.password.as_ref().map(|p| format!(" password={}", p.expose())).unwrap_or_default()
    )
}

/// A `flashsync` process a test started, killed and reaped when dropped
/// unless it has ended: a failing assertion must not leave `flashsync run`
/// behind, holding its store, its replication slot and its port.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `flashsync run` with the database URL in `env`, its log in `log`.
fn start_run(config: &std::path::Path, env: (&str, &str), log: &std::path::Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env(env.0, env.1)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .unwrap()
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
                "CREATE TABLE users (id bigint PRIMARY KEY, name text, f4 real, f8 double precision);
                 INSERT INTO users SELECT g, 'u' || g, 1.1, 3.4028234663852886e+38 FROM generate_series(1, 100) g;",
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
    let url = pg_url(&db);
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
        .map(Running)
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
        flashsync(&config, &["dump", "public.users_live"]).1.contains("1000,new")
    });

    let (ok, out, _) = flashsync(&config, &["stop", "public.users_live"]);
    assert!(ok && out.contains("stopped: public.users_live"), "{out}");
    let (_, out, _) = flashsync(&config, &["status", "public.users_live", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0]["process_running"], true, "{v}");
    assert_eq!(v[0]["enabled"], false);
    assert_eq!(v[0]["state"], "idle");
    // LSNs as Postgres writes them, times in ISO-8601 UTC.
    assert!(v[0]["last_seen_commit"].as_str().is_some_and(|l| l.contains('/')), "{v}");
    assert!(v[0]["updated_at"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{v}");
    let (ok, out, _) = flashsync(&config, &["resume", "public.users_live"]);
    assert!(ok && out.contains("running (realtime):    public.users_live"), "{out}");
    // A name without a namespace is in `public`.
    let (ok, out, err) = flashsync(&config, &["status", "users_live"]);
    assert!(ok && out.contains("public.users_live") && !out.contains("users_copy"), "{out} {err}");
    let (ok, out, _) = flashsync(&config, &["dump", "public.users_copy", "--json", "--limit", "2"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2);
    // Through the running process: columns in their order, a `real` as the
    // 32-bit float it is, a `double precision` to the last bit.
    let exact = r#"{"id":1,"name":"u1","f4":1.1,"f8":3.4028234663852886e+38}"#;
    assert_eq!(out.lines().next(), Some(exact), "{out}");
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

    // Without `run`, commands open the store directly, and status says
    // that nothing is syncing now.
    let (ok, out, err) = flashsync(&config, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("public.users_copy"), "{out}");
    assert!(out.contains("no `flashsync run` holds this store"), "{out}");
    let (_, out, _) = flashsync(&config, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0]["process_running"], false, "{v}");
    // A one-shot sync does not call a realtime view running: nothing keeps
    // it current once the command exits.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["sync", "users_live"])
        .env("CLI_TEST_PG_URL", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("copied (realtime)") && text.contains("not kept current") && !text.contains("running (realtime)"),
        "{text}"
    );
    let (ok, out, _) = flashsync(&config, &["dump", "public.users_live"]);
    assert!(ok && out.contains("1000,new"), "{out}");
    let (ok, out, _) = flashsync(&config, &["dump", "public.users_copy", "--json", "--limit", "1"]);
    assert!(ok && out.trim() == exact, "without a running process too: {out}");

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
    // SIGHUP reloads the config: a view added is defined and synced, a
    // view removed is stopped, and `run` goes on; SIGTERM then stops it.
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_TEST_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    let socket = dir.path().join("data/admin/flashsync.sock");
    wait("the admin socket again", Duration::from_secs(30), || socket.exists());
    wait("the views up again", Duration::from_secs(30), || {
        let (ok, out, _) = flashsync(&config, &["status", "--json"]);
        ok && out.contains("\"running\"")
    });
    let text = std::fs::read_to_string(&config).unwrap();
    let (kept, _) = text.split_once("[[views]]\nname = \"users_copy\"").unwrap();
    std::fs::write(
        &config,
        format!(
            "{kept}[[views]]\nname = \"ids_only\"\npersistence = \"materialized\"\norigin = \"postgres:main\"\n\
             upstream = \"public.users\"\ncolumns = [\"id\"]\n"
        ),
    )
    .unwrap();
    signal(run.id(), "-HUP");
    wait("the reloaded config to take effect", Duration::from_secs(30), || {
        let (_, out, _) = flashsync(&config, &["status", "--json"]);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(out.trim()) else { return false };
        let find = |name: &str| v.as_array().and_then(|a| a.iter().find(|r| r["name"] == name).cloned());
        find("ids_only").is_some_and(|r| r["state"] == "synced")
            && find("users_copy").is_some_and(|r| r["enabled"] == false)
    });
    assert!(run.try_wait().unwrap().is_none(), "run goes on after SIGHUP");
    let (ok, out, _) = flashsync(&config, &["dump", "public.ids_only", "--limit", "1"]);
    assert!(ok && out.starts_with("id\n"), "{out}");
    rustix_kill(run.id());
    let status = run.wait().unwrap();
    assert!(status.success(), "run exits cleanly on SIGTERM: {status:?}");
    assert!(!socket.exists(), "the socket is removed");
}

fn rustix_kill(pid: u32) {
    signal(pid, "-TERM");
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill").arg(which).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

/// `kill -9` of `run` while writers move rows in and out of a filtered,
/// projected view: after a restart the view is exact again without being
/// copied again (its copy and position survived together).
#[test]
fn partial_view_survives_kill_9_without_a_new_copy() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_partial_kill")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(
                "CREATE TABLE t (id bigint PRIMARY KEY, tenant int, note text);
                 INSERT INTO t SELECT g, g % 4, 'n' || g FROM generate_series(1, 2000) g;",
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
# Slots are per cluster, and the other test of this binary shares it.
slot = "cli_partial_kill"
publication = "cli_partial_kill"
[[views]]
name = "mine"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.t"
where = "tenant = 1"
columns = ["id", "tenant"]
"#,
    )
    .unwrap();
    let url = pg_url(&db);
    let start = |log: &str| start_run(&config, ("CLI_TEST_PG_URL", &url), &dir.path().join(log));
    let running = || {
        let (ok, out, _) = flashsync(&config, &["status", "--json"]);
        ok && out.contains("\"running\"")
    };
    // Status reaches `run` through its socket; before the socket exists it
    // would open the store itself, and a starting `run` must find it free.
    let socket = dir.path().join("data/admin/flashsync.sock");
    let mut run = start("run1.log");
    wait("the admin socket", Duration::from_secs(60), || socket.exists());
    wait("the view running", Duration::from_secs(60), running);

    // Writers move rows between tenants: in and out of the view.
    let (stop, commits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, commits, db) = (stop.clone(), commits.clone(), db.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let client = db.client().await;
                let mut x: u64 = 7;
                while !stop.load(Ordering::SeqCst) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let id = (x >> 33) % 2000 + 1;
                    let sql = format!(
                        "BEGIN; UPDATE t SET tenant = {} WHERE id = {id}; UPDATE t SET tenant = 1 WHERE id = {}; COMMIT",
                        (x >> 20) % 4,
                        (x >> 40) % 2000 + 1
                    );
                    client.batch_execute(&sql).await.unwrap();
                    commits.fetch_add(1, Ordering::SeqCst);
                    // A steady load, not a flood: the other tests of this
                    // binary share the machine and the cluster.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        })
    };
    let at_least = |n: u64| {
        let target = commits.load(Ordering::SeqCst) + n;
        wait("writer commits", Duration::from_secs(60), || commits.load(Ordering::SeqCst) >= target);
    };
    at_least(300);
    signal(run.id(), "-KILL");
    run.wait().unwrap();
    // A killed `run` leaves its socket behind; the next one replaces it.
    // Gone first, so its reappearance says the new `run` is up.
    let _ = std::fs::remove_file(&socket);
    at_least(100);
    let mut run = start("run2.log");
    wait("the admin socket again", Duration::from_secs(60), || socket.exists());
    wait("the view running again", Duration::from_secs(60), running);
    at_least(300);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let want: Vec<(i64, i64)> = rt.block_on(async {
        let rows = db.client().await.query("SELECT id, tenant FROM t WHERE tenant = 1 ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|r| (r.get::<_, i64>(0), i64::from(r.get::<_, i32>(1)))).collect()
    });
    let mut got = Vec::new();
    wait("the view to equal SELECT id, tenant FROM t WHERE tenant = 1", Duration::from_secs(60), || {
        let (ok, out, _) = flashsync(&config, &["dump", "public.mine", "--json"]);
        got = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Some((v["id"].as_i64()?, v["tenant"].as_i64()?)))
            .collect();
        got.sort();
        ok && got == want
    });
    let log = std::fs::read_to_string(dir.path().join("run2.log")).unwrap();
    assert!(!log.contains("copied public.t"), "the restart copied the view again:\n{log}");
    let first = std::fs::read_to_string(dir.path().join("run1.log")).unwrap();
    assert!(
        first.contains("copied public.t"),
        "the first run's copy is logged (so the check above can fail):\n{first}"
    );
    signal(run.id(), "-TERM");
    assert!(run.wait().unwrap().success());
}

/// `--log-format json`: every log line is one JSON object a collector can
/// parse, with its level and message; no colour codes.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        r#"store = "data"
[origins."postgres:main"]
url_env = "FLASHSYNC_TEST_SURELY_UNSET"
[[views]]
name = "users_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.users"
"#,
    )
    .unwrap();
    let (_, _, err) = flashsync(&config, &["--log-format", "json", "sync"]);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warning = lines.iter().find(|l| l["level"] == "WARN").unwrap_or_else(|| panic!("no warning logged: {err}"));
    let message = warning["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("FLASHSYNC_TEST_SURELY_UNSET"), "{warning}");
    assert!(!err.contains('\u{1b}'), "colour codes in JSON logs: {err}");
}

/// `store = "sqlite:…"`: the mirror is a SQLite database that `flashsync
/// query` (or any SQLite client) reads with SQL while `run` writes it.
#[test]
fn sqlite_store_is_queried_with_sql_while_run_writes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_sqlite")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(
                "CREATE TABLE users (id bigint PRIMARY KEY, name text, score numeric);
                 INSERT INTO users SELECT g, 'u' || g, g * 1.5 FROM generate_series(1, 50) g;",
            )
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        r#"store = "sqlite:mirror.db"
[origins."postgres:main"]
url_env = "CLI_SQLITE_PG_URL"
slot = "cli_sqlite_slot"
publication = "cli_sqlite_pub"
[[views]]
name = "users_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.users"
"#,
    )
    .unwrap();
    let url = pg_url(&db);
    let (ok, _, err) = flashsync(&config, &["query", "SELECT 1"]);
    assert!(!ok && err.contains("no store at"), "{err}");
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_SQLITE_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    let socket = dir.path().join("mirror.db-admin/flashsync.sock");
    wait("the admin socket beside the database", Duration::from_secs(30), || socket.exists());
    wait("the view to run", Duration::from_secs(30), || flashsync(&config, &["status"]).1.contains("running"));
    let count = |config: &std::path::Path| {
        let (ok, out, err) = flashsync(config, &["query", r#"SELECT count(*) AS n FROM "public.users_live""#]);
        assert!(ok, "{err}");
        out.lines().nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(count(&config), "50");
    // A watcher of the change feed, through the running process.
    let mut watcher = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["watch", "public.users_live", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let (stdout, stderr) = (watcher.stdout.take().unwrap(), watcher.stderr.take().unwrap());
    for pipe in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("watch says it is watching");
    assert!(first.starts_with("watching public.users_live"), "{first}");
    rt.block_on(async { db.client().await.batch_execute("INSERT INTO users VALUES (51, 'new', 2.25)").await.unwrap() });
    let change = lines.recv_timeout(Duration::from_secs(30)).expect("watch prints the insert");
    let change: serde_json::Value = serde_json::from_str(&change).unwrap();
    assert_eq!(change["kind"], "commit");
    assert_eq!(change["views"][0]["view"], "public.users_live");
    assert_eq!(change["views"][0]["changes"][0]["op"], "insert");
    assert_eq!(change["views"][0]["changes"][0]["row"]["id"], 51);
    assert_eq!(change["views"][0]["changes"][0]["row"]["score"], "2.25");
    let _ = watcher.kill();
    let _ = watcher.wait();
    wait("the insert to be queryable", Duration::from_secs(30), || count(&config) == "51");
    // Typed columns, SQL filters and ordering; JSON keeps column order.
    let (ok, out, err) = flashsync(
        &config,
        &["query", r#"SELECT id, name, score_real FROM "public.users_live" WHERE id >= 50 ORDER BY id DESC"#, "--json"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [r#"{"id":51,"name":"new","score_real":2.25}"#, r#"{"id":50,"name":"u50","score_real":75.0}"#]
    );
    // Read-only: a write is refused, and the mirror is untouched.
    let (ok, _, err) = flashsync(&config, &["query", r#"DELETE FROM "public.users_live""#]);
    assert!(!ok && err.contains("only reads"), "{err}");
    assert_eq!(count(&config), "51");

    rustix_kill(run.id());
    assert!(run.wait().unwrap().success(), "run exits cleanly on SIGTERM");
    assert!(!socket.exists());
    // Without `run`, the file is still there to query.
    assert_eq!(count(&config), "51");
    assert!(!dir.path().join("db").exists(), "no fjall directory for a SQLite store");
}

/// `run` with settings no origin can work with exits at once, non-zero,
/// naming the origin and never the password, after one failed login.
#[test]
fn run_with_a_wrong_password_exits_at_once_without_the_password() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_wrong_password")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    let c = &db.conninfo;
    let secret = "not-the-password-8c1f";
    std::fs::write(
        &config,
        format!(
            r#"store = "data"
[origins."postgres:main"]
url = "host={} port={} user={} dbname={} sslmode=disable password={secret}"
[[views]]
name = "users_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.users"
"#,
            c.host, c.port, c.user, c.dbname
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(BIN).arg("--config").arg(&config).arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run went on with a wrong password: {err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.contains("postgres:main") && err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(secret), "the password is in the output: {err}");
}

/// The SQLite mirror, read by other processes (`flashsync query` is plain
/// read-only SQLite) while transfers commit upstream: every read sees whole
/// transactions (the money is never in both accounts or neither), and once
/// the writers stop, `WHERE`/`JOIN`/`GROUP BY`/`ORDER BY` queries answer
/// exactly what Postgres answers on the same data.
#[test]
fn sqlite_mirror_reads_whole_transactions_and_answers_like_postgres() {
    const ACCOUNTS: i64 = 20;
    const TOTAL: i64 = ACCOUNTS * 1000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_sql_equal")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
                 INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;
                 CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, tier int);
                 INSERT INTO users SELECT g, 'user ' || g, g % 4 FROM generate_series(1, 40) g;
                 CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, qty int, note text);
                 INSERT INTO orders SELECT g, 1 + g % 40, g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END
                 FROM generate_series(1, 400) g;"
            ))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    let mut toml = String::from(
        "store = \"sqlite:mirror.db\"\n[origins.\"postgres:main\"]\nurl_env = \"CLI_SQL_EQUAL_PG_URL\"\n\
         slot = \"cli_sql_equal_slot\"\npublication = \"cli_sql_equal_pub\"\n",
    );
    for table in ["accounts", "users", "orders"] {
        toml.push_str(&format!(
            "[[views]]\nname = \"{table}\"\npersistence = \"realtime\"\norigin = \"postgres:main\"\nupstream = \
             \"public.{table}\"\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let url = pg_url(&db);
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_SQL_EQUAL_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .map(Running)
        .unwrap();
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.matches("running").count() != 3 {
        let log = || std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for three running views; status:\n{last}\nrun:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
        let (_, out, err) = flashsync(&config, &["status"]);
        last = format!("{out}{err}");
    }
    let query = |sql: &str| -> Vec<String> {
        let (ok, out, err) = flashsync(&config, &["query", sql, "--json"]);
        assert!(ok, "{sql}: {err}");
        out.lines().map(str::to_owned).collect()
    };

    // Transfers upstream, reads of the sum from other processes meanwhile.
    let writer = rt.spawn({
        let client = rt.block_on(db.client());
        async move {
            for i in 0..300i64 {
                let (from, to) = (1 + i % ACCOUNTS, 1 + (i * 7 + 3) % ACCOUNTS);
                let sql = format!(
                    "BEGIN; UPDATE accounts SET balance = balance - {n} WHERE id = {from};
                     UPDATE accounts SET balance = balance + {n} WHERE id = {to}; COMMIT;",
                    n = 1 + i % 50
                );
                client.batch_execute(&sql).await.unwrap();
            }
        }
    });
    let mut reads = 0;
    while !writer.is_finished() || reads < 5 {
        let sum = query(r#"SELECT sum(balance) AS total, count(*) AS n FROM "public.accounts""#);
        assert_eq!(sum, [format!(r#"{{"total":{TOTAL},"n":{ACCOUNTS}}}"#)], "a read saw part of a transfer");
        reads += 1;
    }
    rt.block_on(writer).unwrap();

    // Caught up: the same questions, the same answers.
    let balances = "SELECT id, balance FROM {accounts} ORDER BY id";
    let upstream_balances: Vec<String> = rt.block_on(async {
        let rows = db.client().await.query("SELECT id, balance FROM accounts ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|r| format!(r#"{{"id":{},"balance":{}}}"#, r.get::<_, i64>(0), r.get::<_, i64>(1))).collect()
    });
    wait("the last transfer in the mirror", Duration::from_secs(30), || {
        query(&balances.replace("{accounts}", r#""public.accounts""#)) == upstream_balances
    });
    let cases = [
        "SELECT u.id, u.name, count(o.id) AS orders, coalesce(sum(o.qty), 0) AS qty FROM {users} u \
         LEFT JOIN {orders} o ON o.user_id = u.id WHERE u.tier IN (1, 3) GROUP BY u.id, u.name ORDER BY qty DESC, u.id",
        "SELECT id, note FROM {orders} WHERE note IS NULL AND qty BETWEEN 2 AND 5 ORDER BY id DESC LIMIT 7",
        "SELECT o.id FROM {orders} o JOIN {users} u ON u.id = o.user_id WHERE u.name LIKE 'user 1%' AND o.qty <> 0 \
         ORDER BY o.id",
        "SELECT tier, count(*) AS n FROM {users} GROUP BY tier HAVING count(*) > 5 ORDER BY tier",
    ];
    for case in cases {
        let local = query(&case.replace("{users}", r#""public.users""#).replace("{orders}", r#""public.orders""#));
        let pg = rt.block_on(async {
            let sql = format!(
                "SELECT coalesce(json_agg(q), '[]') :: text FROM ({}) q",
                case.replace("{users}", "users").replace("{orders}", "orders")
            );
            let text: String = db.client().await.query_one(&sql, &[]).await.unwrap().get(0);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            rows.iter().map(|r| r.to_string()).collect::<Vec<_>>()
        });
        assert!(!pg.is_empty(), "{case}: the case selects something");
        let local: Vec<serde_json::Value> = local.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let pg: Vec<serde_json::Value> = pg.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(local, pg, "{case}");
    }
    rustix_kill(run.id());
    assert!(run.wait().unwrap().success());
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).unwrap()
}

/// [`http_get`], or the I/O error (nothing listening yet, say).
fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Prometheus text: every sample line is `name{labels} value` with a
/// number; returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name_ok = series.chars().take_while(|c| *c != '{').all(|c| c.is_ascii_alphanumeric() || c == '_');
        assert!(name_ok && (!series.contains('{') || series.ends_with('}')), "bad series {series:?}");
        samples.push((series.to_owned(), value));
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    samples
}

/// `[metrics]`: /readyz is 503 until every enabled view is synced or
/// running, /healthz answers, /metrics parses as Prometheus text and shows
/// the origin's lag growing while the realtime view is stopped (its feed
/// closed, writes going on upstream) and back to zero after it resumes.
#[test]
fn metrics_health_readiness_and_lag() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_metrics")) else { return };
    rt.block_on(async {
        db.client().await.batch_execute("CREATE TABLE events (id bigserial PRIMARY KEY, body text)").await.unwrap();
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_METRICS_PG_URL"
[[views]]
name = "events_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.events"
[[views]]
name = "later"
persistence = "materialized"
origin = "postgres:main"
upstream = "public.later"
[metrics]
listen = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let url = pg_url(&db);
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_METRICS_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    wait("the metrics endpoint", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(http_get(port, "/healthz").0, 200);
    wait("the realtime view to run", Duration::from_secs(30), || {
        flashsync(&config, &["status"]).1.lines().any(|l| l.contains("events_live") && l.contains("running"))
    });
    // public.later does not exist: not ready, and /readyz says which view.
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("public.later"), "{body}");
    rt.block_on(async { db.client().await.batch_execute("CREATE TABLE later (id int PRIMARY KEY)").await.unwrap() });
    let (ok, _, err) = flashsync(&config, &["sync", "--force"]);
    assert!(ok, "{err}");
    wait("/readyz to turn ready", Duration::from_secs(30), || http_get(port, "/readyz").0 == 200);

    let sample = |name: &str| -> Option<f64> {
        let (code, body) = http_get(port, "/metrics");
        assert_eq!(code, 200, "{body}");
        parse_prometheus(&body).into_iter().find(|(s, _)| s == name).map(|(_, v)| v)
    };
    let lag = r#"flashsync_origin_lag_bytes{origin="postgres:main"}"#;
    assert_eq!(sample(r#"flashsync_view_state{view="public.events_live",state="running"}"#), Some(1.0));
    wait("a lag sample", Duration::from_secs(30), || sample(lag).is_some());

    // Pause the whole process (SIGSTOP) and write ~55 MB of WAL upstream.
    signal(run.id(), "-STOP");
    rt.block_on(async {
        let client = db.client().await;
        for _ in 0..50 {
            client
                .batch_execute(
                    "INSERT INTO events (body) SELECT (SELECT string_agg(md5(random()::text || g || h), '') \
                     FROM generate_series(1, 32) h) FROM generate_series(1, 1000) g",
                )
                .await
                .unwrap();
        }
    });
    let written = rt.block_on(async {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots \
                 WHERE database = current_database()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    });
    assert!(written > 50_000_000, "the writes made {written} bytes of WAL");
    // The stopped process cannot answer: status says so within seconds and
    // shows the lag as the server sees it (what the process acknowledged).
    let started = Instant::now();
    let env = [("CLI_METRICS_PG_URL", url.as_str())];
    let (ok, status, err) = flashsync_env(&config, &["status", "--json"], &env);
    assert!(ok, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "status took {:?}", started.elapsed());
    let records: serde_json::Value = serde_json::from_str(&status).unwrap();
    let live = records.as_array().unwrap().iter().find(|r| r["name"] == "events_live").unwrap().clone();
    assert_eq!(live["process_responding"], false, "{live}");
    assert!(live["lag_bytes"].as_u64().is_some_and(|b| b > 50_000_000), "{live}");
    let (ok, table, err) = flashsync_env(&config, &["status"], &env);
    assert!(ok, "{err}");
    assert!(table.contains("did not answer") && table.contains("bytes acknowledged behind"), "{table}");

    // Resumed, the process shows the lag on /metrics and in status while it
    // catches up, then returns to ~0.
    signal(run.id(), "-CONT");
    let mut seen = 0.0f64;
    wait("/metrics to show the lag, then catch up", Duration::from_secs(120), || {
        let now = sample(lag).unwrap_or(f64::MAX);
        seen = seen.max(if now == f64::MAX { 0.0 } else { now });
        seen > 25_000_000.0 && now < 100_000.0
    });
    let (_, status, _) = flashsync(&config, &["status", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&status).unwrap();
    let live = records.as_array().unwrap().iter().find(|r| r["name"] == "events_live").unwrap().clone();
    assert_eq!(live["process_responding"], true, "{live}");
    assert!(live["lag_bytes"].as_u64().is_some_and(|b| b < 100_000), "{live}");
    assert!(live["lag_seconds"].as_f64().is_some(), "{live}");
    rustix_kill(run.id());
    assert!(run.wait().unwrap().success());
}

/// The resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `dump` writes Postgres's CSV: read back with a CSV parser, awkward values
/// (tabs, line breaks, quotes, commas, the text `NULL`, unicode, the empty
/// string) equal the upstream rows, and NULL is told apart from the empty
/// string. Through a running `run`, a large dump streams: the process's
/// memory does not grow with the view.
#[test]
fn dump_csv_round_trips_and_streams_through_run() {
    const ROWS: i64 = 300_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_dump_csv")) else { return };
    let awkward = [
        "tab\there",
        "line\nbreak",
        "cr\r\nlf",
        "say \"hi\"",
        "a,b",
        "NULL",
        "ünïcødé ✓",
        "",
        " lead and trail ",
        "\\N",
    ];
    rt.block_on(async {
        let client = db.client().await;
        client
            .batch_execute(&format!(
                "CREATE TABLE odd (id int PRIMARY KEY, t text, n numeric);
                 CREATE TABLE kinds (id int PRIMARY KEY, b bool, d float8, r real, n numeric, ts timestamptz,
                                     raw bytea, s smallint);
                 INSERT INTO kinds VALUES
                   (1, true, 1e15, 1e6, 1.50, '2026-01-01 12:00:00.5+02', '\\x00ff', -3),
                   (2, false, 100, 1.1, -0.001, 'infinity', '', 0),
                   (3, NULL, 1e-05, 1234567, NULL, NULL, NULL, NULL),
                   (4, true, 'NaN', '-Infinity', 'NaN', '1999-12-31 23:59:59+00', '\\x41', 32767),
                   (5, false, -0.0, 3.4e38, 12345678901234567890.123, '2026-06-01', '\\x0a09', -32768),
                   (6, true, 123456789012345.6, 0.0001, 0, '2026-01-01', '\\x5c', 1);
                 CREATE TABLE big (id bigint PRIMARY KEY, body text);
                 INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;"
            ))
            .await
            .unwrap();
        for (i, t) in awkward.iter().enumerate() {
            client.execute("INSERT INTO odd VALUES ($1, $2, 1.5)", &[&(i as i32), t]).await.unwrap();
        }
        client.execute("INSERT INTO odd VALUES (100, NULL, NULL)", &[]).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_DUMP_PG_URL"
[[views]]
name = "odd"
persistence = "materialized"
origin = "postgres:main"
upstream = "public.odd"
[[views]]
name = "kinds"
persistence = "materialized"
origin = "postgres:main"
upstream = "public.kinds"
[[views]]
name = "big"
persistence = "materialized"
origin = "postgres:main"
upstream = "public.big"
"#,
    )
    .unwrap();
    let url = pg_url(&db);
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("CLI_DUMP_PG_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    wait("every view synced", Duration::from_secs(120), || {
        flashsync(&config, &["status"]).1.matches("synced").count() == 3
    });

    // Booleans, floats, timestamps, bytes: byte for byte what Postgres's own
    // COPY writes, in CSV and in text, under the session settings the
    // source pins.
    for (format, copy) in [("csv", "FORMAT csv, HEADER"), ("text", "FORMAT text, HEADER")] {
        let (ok, out, err) = flashsync(&config, &["dump", "public.kinds", "--format", format]);
        assert!(ok, "{err}");
        let want = rt.block_on(async {
            use futures::TryStreamExt as _;
            let client = db.client().await;
            client
                .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3")
                .await
                .unwrap();
            let stream =
                client.copy_out(&format!("COPY (SELECT * FROM kinds ORDER BY id) TO STDOUT ({copy})")).await.unwrap();
            let text = stream
                .try_fold(Vec::new(), |mut text, chunk| async move {
                    text.extend_from_slice(&chunk);
                    Ok(text)
                })
                .await
                .unwrap();
            String::from_utf8(text).unwrap()
        });
        assert_eq!(out, want, "dump --format {format} differs from Postgres's COPY");
    }

    let (ok, out, err) = flashsync(&config, &["dump", "public.odd"]);
    assert!(ok, "{err}");
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(out.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["id", "t", "n"]);
    let got: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    let mut want: Vec<Vec<String>> =
        awkward.iter().enumerate().map(|(i, t)| vec![i.to_string(), (*t).to_owned(), "1.5".into()]).collect();
    want.push(vec!["100".into(), String::new(), String::new()]);
    assert_eq!(got, want);
    // NULL is an unquoted empty field; the empty string is "".
    assert!(out.lines().any(|l| l == "100,,"), "{out}");
    assert!(out.lines().any(|l| l == "7,\"\",1.5"), "{out}");

    // 300k rows through the running process: its memory stays flat.
    let before = rss_bytes(run.id());
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), run.id());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = Command::new(BIN).arg("--config").arg(&config).args(["dump", "public.big"]).output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count() as i64, ROWS + 1, "a header and every row");
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    eprintln!("run grew by {} kB dumping {ROWS} rows", growth >> 10);
    assert!(growth < 64 << 20, "run grew by {} MB dumping {ROWS} rows", growth >> 20);
    rustix_kill(run.id());
    assert!(run.wait().unwrap().success());
}

/// SIGTERM in the middle of a large first copy: `run` exits 0 within 5 s,
/// and a restart copies the view again and converges.
#[test]
fn sigterm_during_a_large_first_copy_stops_within_five_seconds() {
    const ROWS: i64 = 1_000_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_sigterm_copy")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, body text);
                 INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;"
            ))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(
        &config,
        r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_SIGTERM_PG_URL"
[[views]]
name = "big_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.big"
"#,
    )
    .unwrap();
    let url = pg_url(&db);
    let start = || {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("CLI_SIGTERM_PG_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Running)
            .unwrap()
    };
    let copying = || {
        rt.block_on(async {
            let n: i64 = db
                .client()
                .await
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%big%' AND state = 'active'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n > 0
        })
    };
    let mut run = start();
    wait("the copy to be under way", Duration::from_secs(60), copying);
    let asked = Instant::now();
    rustix_kill(run.id());
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "run still going 5 s after SIGTERM mid-copy");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // A restart copies again and ends exact (running, every row).
    let mut run = start();
    wait("the view to run after the restart", Duration::from_secs(120), || {
        flashsync(&config, &["status"]).1.lines().any(|l| l.contains("big_live") && l.contains("running"))
    });
    let (ok, out, err) = flashsync(&config, &["dump", "public.big_live", "--format", "text"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count() as i64, ROWS + 1);
    rustix_kill(run.id());
    assert!(run.wait().unwrap().success());
}

/// A 600,000-row upstream transaction: processes reading the mirror with
/// SQL throughout see none of it or all of it, never a part; a `kill -9`
/// while `run` is in the middle of receiving the next one leaves the mirror
/// as it was, and the restart completes it without copying the view again.
#[test]
fn a_600k_row_transaction_is_seen_whole_and_survives_kill_9() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    const ROWS: i64 = 600_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_bigtxn")) else { return };
    rt.block_on(async {
        db.client().await.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, v text)").await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            r#"store = "sqlite:mirror.db"
[origins."postgres:main"]
url_env = "CLI_BIGTXN_PG_URL"
slot = "cli_bigtxn"
publication = "cli_bigtxn"
[[views]]
name = "big_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.big"
[metrics]
listen = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    // Store batches written so far: a large transaction is staged in parts
    // of 50,000 row changes, one batch each, before its commit.
    let batches = || -> Option<f64> {
        let (code, body) = http_get(port, "/metrics");
        (code == 200)
            .then(|| parse_prometheus(&body).into_iter().find(|(s, _)| s == "flashsync_batches_total"))??
            .1
            .into()
    };
    let url = pg_url(&db);
    let start = |log: &str| start_run(&config, ("CLI_BIGTXN_PG_URL", &url), &dir.path().join(log));
    let count = || -> Option<i64> {
        let (ok, out, _) = flashsync(&config, &["query", r#"SELECT count(*) AS n FROM "public.big_live""#]);
        if !ok {
            return None;
        }
        out.lines().nth(1)?.trim().parse().ok()
    };
    let insert = |from: i64| {
        rt.block_on(async {
            db.client()
                .await
                .execute(
                    "INSERT INTO big SELECT g, md5(g::text) FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
                    &[&from, &ROWS],
                )
                .await
                .unwrap()
        })
    };
    let socket = dir.path().join("mirror.db-admin/flashsync.sock");
    let mut run = start("run1.log");
    wait("the admin socket", Duration::from_secs(60), || socket.exists());
    wait("the view to run", Duration::from_secs(60), || flashsync(&config, &["status"]).1.contains("running"));

    // Other processes count the rows with SQL while the transaction lands.
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(std::collections::BTreeSet::new())));
    let reader = {
        let (stop, seen, config) = (stop.clone(), seen.clone(), config.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (ok, out, _) = flashsync(&config, &["query", r#"SELECT count(*) AS n FROM "public.big_live""#]);
                if let Some(n) = ok.then(|| out.lines().nth(1).and_then(|l| l.trim().parse::<i64>().ok())).flatten() {
                    seen.lock().unwrap().insert(n);
                }
            }
        })
    };
    insert(1);
    wait("the transaction to be mirrored", Duration::from_secs(180), || count() == Some(ROWS));
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let seen: Vec<i64> = seen.lock().unwrap().iter().copied().collect();
    assert!(seen.iter().all(|n| *n == 0 || *n == ROWS), "readers saw part of the transaction: {seen:?}");
    assert!(seen.len() >= 2, "the readers saw the mirror before and after it: {seen:?}");

    // The next one: killed once half of it is staged (6 of its 12 parts).
    let base = batches().expect("batches on /metrics");
    insert(ROWS + 1);
    wait("half of the second transaction to be staged", Duration::from_secs(180), || {
        batches().is_some_and(|b| b >= base + 6.0)
    });
    signal(run.id(), "-KILL");
    run.wait().unwrap();
    assert_eq!(count(), Some(ROWS), "the mirror holds none of the transaction the kill cut into");
    let _ = std::fs::remove_file(&socket);
    let mut run = start("run2.log");
    wait("the second transaction after the restart", Duration::from_secs(180), || count() == Some(2 * ROWS));
    let (ok, out, err) = flashsync(&config, &["query", r#"SELECT sum(id) AS s FROM "public.big_live""#]);
    assert!(ok, "{err}");
    let n = 2 * ROWS;
    assert_eq!(out.lines().nth(1).map(str::trim), Some((n * (n + 1) / 2).to_string().as_str()), "ids 1..=1.2M");
    let log = std::fs::read_to_string(dir.path().join("run2.log")).unwrap();
    assert!(!log.contains("copied public.big"), "the restart copied the view again:\n{log}");
    let first = std::fs::read_to_string(dir.path().join("run1.log")).unwrap();
    assert!(first.contains("copied public.big"), "the first run's copy is logged (so the check can fail):\n{first}");
    signal(run.id(), "-TERM");
    assert!(run.wait().unwrap().success());
}

/// Writers updating random rows of `big (id, v)` (ids 1..=rows), each in a
/// transaction of its own, `pause` apart, until stopped.
struct RandomUpdates {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RandomUpdates {
    fn start(rt: &tokio::runtime::Runtime, db: &testkit::TestDb, rows: i64, pause: Duration) -> RandomUpdates {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, w) = (stop.clone(), writes.clone());
        let client = rt.block_on(db.client());
        let task = rt.spawn(async move {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            while !s.load(Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = (x % rows as u64) as i64 + 1;
                let n = w.fetch_add(1, Ordering::SeqCst) as i64;
                client.execute("UPDATE big SET v = $2 WHERE id = $1", &[&id, &format!("w{n}")]).await.unwrap();
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        });
        RandomUpdates { stop, writes, task }
    }

    /// Stops them; returns how many updates they made.
    fn stop(self, rt: &tokio::runtime::Runtime) -> u64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        rt.block_on(self.task).unwrap();
        self.writes.load(Ordering::SeqCst)
    }
}

/// The view `public.big_live` (through `run`'s admin socket) equals the
/// table `big`, row for row, within a minute.
fn assert_big_mirrored_exactly(rt: &tokio::runtime::Runtime, db: &testkit::TestDb, config: &std::path::Path) {
    let upstream: Vec<String> = rt.block_on(async {
        let rows = db.client().await.query("SELECT id, v FROM big ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|r| format!("{},{}", r.get::<_, i64>(0), r.get::<_, String>(1))).collect()
    });
    let mut last = Vec::new();
    let exact = (0..120).any(|_| {
        let (ok, out, _) = flashsync(config, &["dump", "public.big_live"]);
        last = out.lines().skip_while(|l| l.starts_with("id")).map(str::to_owned).collect();
        if ok && last == upstream {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
        false
    });
    let differ = last.iter().zip(&upstream).find(|(a, b)| a != b);
    assert!(exact, "mirror differs: {} rows vs {}; first difference {differ:?}", last.len(), upstream.len());
}

/// The issue's resumable copy, with writers updating random rows of a
/// 1M-row table throughout its copy in chunks: Ctrl-C (SIGTERM) at about
/// 40%, then `kill -9` once three quarters are in; each restart continues
/// the copy from its last checkpoint (in all, at most 1.25x the table is
/// copied) and the mirror ends exact.
#[test]
fn a_copy_stopped_then_killed_continues_from_its_checkpoint() {
    const ROWS: i64 = 1_000_000;
    const CHUNK: i64 = 25_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_resume_copy")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, v text);
                 INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;
                 ANALYZE big;"
            ))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_RESUME_PG_URL"
[[views]]
name = "big_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.big"
[metrics]
listen = "127.0.0.1:{port}"
[copy]
chunk_rows = {CHUNK}
"#
        ),
    )
    .unwrap();
    let url = pg_url(&db);
    let start = |log: &str| start_run(&config, ("CLI_RESUME_PG_URL", &url), &dir.path().join(log));
    // Rows the copy in progress has written, from /metrics.
    let copied = || -> Option<f64> {
        let (code, body) = try_http_get(port, "/metrics").ok()?;
        (code == 200).then_some(())?;
        parse_prometheus(&body).into_iter().find(|(s, _)| s.starts_with("flashsync_snapshot_rows{")).map(|(_, v)| v)
    };

    let writer = RandomUpdates::start(&rt, &db, ROWS, Duration::ZERO);

    let socket = dir.path().join("data/admin/flashsync.sock");
    // Rows the copy has written in this run (the progress a restart starts
    // afresh), polled until at least `want`; returns the last seen.
    let copied_until = |want: f64| -> f64 {
        let (mut last, mut seen) = (0.0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(180);
        while last < want {
            assert!(Instant::now() < deadline, "timed out waiting for {want} rows copied; seen {seen:?}");
            if let Some(n) = copied() {
                last = n;
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        last
    };
    // A restart: waits for its admin socket (a status that opened the
    // store itself would hold it while `run` starts).
    let restart = |log: &str| {
        let _ = std::fs::remove_file(&socket);
        let run = start(log);
        wait("the admin socket", Duration::from_secs(60), || socket.exists());
        run
    };

    // Ctrl-C at about 40%: a clean stop keeps the copy's checkpoint.
    let mut run = start("run1.log");
    let first = copied_until(0.4 * ROWS as f64);
    signal(run.id(), "-TERM");
    assert!(run.wait().unwrap().success(), "run stops cleanly on SIGTERM");
    // kill -9 once three quarters of the table are in.
    let mut run = restart("run2.log");
    let before_kill = copied_until(0.35 * ROWS as f64);
    // Progress counts what the checkpoint held, apart from this run's rows.
    let (_, body) = http_get(port, "/metrics");
    let resumed = parse_prometheus(&body)
        .into_iter()
        .find(|(s, _)| s.starts_with("flashsync_snapshot_rows_resumed{"))
        .map_or(0.0, |(_, v)| v);
    assert!(resumed > 0.0 && resumed <= first, "rows continued from: {resumed} (copied before SIGTERM: {first})");
    signal(run.id(), "-KILL");
    run.wait().unwrap();
    let mut run = restart("run3.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !flashsync(&config, &["status"]).1.contains("running") {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("run3.log")).unwrap_or_default();
            panic!(
                "timed out waiting for the view to run again; status: {}\nlog:\n{log}",
                flashsync(&config, &["status"]).1
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(writer.stop(&rt) > 100, "the writers wrote throughout");
    assert_big_mirrored_exactly(&rt, &db, &config);

    // Continued, not started over: each restart copied only what the last
    // checkpoint lacked.
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for name in ["run2.log", "run3.log"] {
        let text = log(name);
        assert!(text.contains("continuing the copy of public.big"), "{name}: the copy did not continue:\n{text}");
    }
    let text = log("run3.log");
    let line = text.lines().find(|l| l.contains("copied public.big in")).unwrap_or_else(|| panic!("no copy:\n{text}"));
    let last: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {line:?}"));
    let total = first + before_kill + last;
    eprintln!(
        "copied {first} rows before SIGTERM, {before_kill} more before kill -9, {last} after: {:.3}x the table",
        total / ROWS as f64
    );
    assert!(total <= 1.25 * ROWS as f64, "copied {total} rows in all for a {ROWS}-row table");
    signal(run.id(), "-TERM");
    assert!(run.wait().unwrap().success());
}

/// `sync --force` copies a running view again while its old copy stays
/// current; a `kill -9` at about 40% of that copy, writers updating random
/// rows throughout: the restarted `run` re-attaches the old copy (the view
/// runs at once) and continues the new copy from its last checkpoint (in
/// all, at most 1.25x the table is copied again), and the mirror ends
/// exact.
#[test]
fn a_forced_recopy_killed_midway_continues_beside_its_old_copy() {
    const ROWS: i64 = 400_000;
    const CHUNK: i64 = 10_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(testkit::test_db("cli_resume_recopy")) else { return };
    rt.block_on(async {
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, v text);
                 INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;
                 ANALYZE big;"
            ))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            r#"store = "data"
[origins."postgres:main"]
url_env = "CLI_RECOPY_PG_URL"
[[views]]
name = "big_live"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.big"
[metrics]
listen = "127.0.0.1:{port}"
[copy]
chunk_rows = {CHUNK}
"#
        ),
    )
    .unwrap();
    let url = pg_url(&db);
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let socket = dir.path().join("data/admin/flashsync.sock");
    let status = || flashsync(&config, &["status"]).1;
    let mut run = start_run(&config, ("CLI_RECOPY_PG_URL", &url), &dir.path().join("run1.log"));
    wait("the first copy", Duration::from_secs(120), || socket.exists() && status().contains("running"));
    // Paced: every one of them is applied to the old copy (a debug build
    // could not keep up with writers at full speed).
    let writer = RandomUpdates::start(&rt, &db, ROWS, Duration::from_millis(2));

    let copied = || -> Option<f64> {
        let (code, body) = try_http_get(port, "/metrics").ok()?;
        (code == 200).then_some(())?;
        parse_prometheus(&body).into_iter().find(|(s, _)| s.starts_with("flashsync_snapshot_rows{")).map(|(_, v)| v)
    };
    // The forced sync waits for the new copy; the kill cuts it short.
    let out = std::fs::File::create(dir.path().join("forced.log")).unwrap();
    let forced = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["sync", "public.big_live", "--force"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .map(Running)
        .unwrap();
    let mut before_kill = 0.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while before_kill < 0.4 * ROWS as f64 {
        assert!(
            Instant::now() < deadline,
            "40% of the re-copy never came ({before_kill} rows); forced sync: {}\nlog:\n{}",
            log("forced.log"),
            log("run1.log")
        );
        before_kill = copied().unwrap_or(0.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(status().contains("running"), "the old copy runs while the new one is made: {}", status());
    signal(run.id(), "-KILL");
    run.wait().unwrap();
    drop(forced);

    let _ = std::fs::remove_file(&socket);
    let mut run = start_run(&config, ("CLI_RECOPY_PG_URL", &url), &dir.path().join("run2.log"));
    wait("the restarted run's admin socket", Duration::from_secs(60), || socket.exists());
    wait("the re-copy to continue", Duration::from_secs(60), || {
        log("run2.log").contains("continuing the copy of public.big")
    });
    assert!(status().contains("running"), "the old copy re-attached at once: {}", status());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log("run2.log").contains("copied public.big in") {
        assert!(
            Instant::now() < deadline,
            "the re-copy never finished; status: {}\nlog:\n{}",
            status(),
            log("run2.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(writer.stop(&rt) > 100, "the writers wrote throughout");
    assert_big_mirrored_exactly(&rt, &db, &config);

    let text = log("run2.log");
    let line = text.lines().find(|l| l.contains("copied public.big in")).unwrap_or_else(|| panic!("no copy:\n{text}"));
    let after: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {line:?}"));
    let total = before_kill + after;
    eprintln!("re-copied {before_kill} rows before kill -9, {after} after: {:.3}x the table", total / ROWS as f64);
    assert!(total <= 1.25 * ROWS as f64, "copied {total} rows in all for a {ROWS}-row table");
    assert!(!text.contains("copying it again"), "the restart copied the view afresh:\n{text}");
    signal(run.id(), "-TERM");
    assert!(run.wait().unwrap().success());
}

/// A command that finds a `run` starting (its marker names a live process)
/// waits for that run's admin socket rather than opening the store in its
/// way; a stale marker (a dead process) is ignored. Scripts polling
/// `status` while `run` starts could otherwise hold the store lock each
/// time `run` tries to take it.
#[test]
fn commands_wait_for_a_starting_run_instead_of_taking_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flashsync.toml");
    std::fs::write(&config, "store = \"data\"\n").unwrap();
    let (ok, _, err) = flashsync(&config, &["status"]);
    assert!(ok, "{err}");
    let admin = dir.path().join("data/admin");
    std::fs::create_dir_all(&admin).unwrap();
    let marker = admin.join("run.starting");
    // A live process (this test) is starting a run: status waits until it
    // gives up (the marker goes), then answers from the store.
    std::fs::write(&marker, std::process::id().to_string()).unwrap();
    let remover = {
        let marker = marker.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::remove_file(&marker).unwrap();
        })
    };
    let asked = Instant::now();
    let (ok, _, err) = flashsync(&config, &["status"]);
    let waited = asked.elapsed();
    remover.join().unwrap();
    assert!(ok, "{err}");
    assert!(waited >= Duration::from_millis(1400), "status did not wait for the starting run: {waited:?}");
    // A marker whose process is gone is stale: no wait.
    std::fs::write(&marker, "4194304").unwrap();
    let asked = Instant::now();
    let (ok, _, err) = flashsync(&config, &["status"]);
    assert!(ok, "{err}");
    assert!(asked.elapsed() < Duration::from_secs(5), "status waited for a dead process: {:?}", asked.elapsed());
}
