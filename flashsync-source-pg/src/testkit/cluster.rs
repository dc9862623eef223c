//! Starting, restarting and stopping a local Postgres cluster.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conninfo::{ConnInfo, Host, Secret, SslMode};

use super::{reaper, TestkitError};

/// Extra server settings for a dedicated cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// `name = value` lines added to `postgresql.conf` (values verbatim:
    /// quote strings yourself).
    pub settings: Vec<(String, String)>,
    /// Files written into the data directory before the server starts
    /// (mode 0600, owned by the server's user), e.g. TLS keys; settings can
    /// name them by relative path.
    pub files: Vec<(String, Vec<u8>)>,
    /// Start with this next (64-bit, epoch-extended) transaction id, e.g.
    /// just below 2^32 to cross the epoch boundary, where 32-bit wire xids
    /// wrap (see [`ClusterOptions::next_xid`]).
    pub next_xid: Option<u64>,
}

impl ClusterOptions {
    /// Adds a file to the data directory.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Adds a setting.
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Starts the cluster with `xid` as its next transaction id. The fresh
    /// cluster's databases are frozen first (in single-user mode), so their
    /// rows stay visible wherever the counter lands; then `pg_resetwal -x -e
    /// -u` moves the counter (and the oldest unfrozen xid with it, so the
    /// server sees no wraparound danger), and the commit-log segment for the
    /// new xid is created, zeroed, as the `pg_resetwal` documentation asks.
    /// The low 32 bits of `xid` must be at least 3 (a normal xid).
    pub fn next_xid(mut self, xid: u64) -> Self {
        self.next_xid = Some(xid);
        self
    }
}

/// Moves a stopped, fresh cluster's next transaction id to `xid`.
fn reset_next_xid(bindir: &Path, data: &Path, run_as: Option<(u32, u32)>, xid: u64) -> Result<(), TestkitError> {
    let (epoch, low) = (xid >> 32, xid as u32);
    if low < 3 {
        return Err(err(format!("next xid {xid} is not a normal transaction id (its low 32 bits are below 3)")));
    }
    let as_server = |cmd: &mut Command| {
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
    };
    for db in ["template1", "postgres"] {
        let mut single = Command::new(bindir.join("postgres"));
        single
            .args(["--single", "-D"])
            .arg(data)
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        as_server(&mut single);
        let mut child = single.spawn().map_err(|e| err(format!("starting postgres --single: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"VACUUM FREEZE;\n").map_err(|e| err(format!("writing to postgres --single: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| err(format!("running postgres --single: {e}")))?;
        if !out.status.success() {
            return Err(err(format!("VACUUM FREEZE of {db} failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
    }
    let mut reset = Command::new(bindir.join("pg_resetwal"));
    reset
        .arg("-x")
        .arg(low.to_string())
        .arg("-u")
        .arg(low.to_string())
        .arg("-e")
        .arg(epoch.to_string())
        .arg("-D")
        .arg(data)
        .stdin(Stdio::null());
    as_server(&mut reset);
    let out = reset.output().map_err(|e| err(format!("running pg_resetwal: {e}")))?;
    if !out.status.success() {
        return Err(err(format!("pg_resetwal failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    // One commit-log segment holds 32 pages of 8 KiB at 4 transactions a
    // byte: 2^20 transactions, named by the segment number in hex.
    let segment = data.join("pg_xact").join(format!("{:04X}", low >> 20));
    if !segment.exists() {
        fs::write(&segment, vec![0u8; 256 * 1024]).map_err(|e| err(format!("creating {}: {e}", segment.display())))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&segment, Some(uid), Some(gid))
                .map_err(|e| err(format!("chown {}: {e}", segment.display())))?;
        }
    }
    Ok(())
}

/// A running throwaway cluster. Dropping it stops the server and removes
/// its files.
#[derive(Debug)]
pub struct Cluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
    reaper: Option<Child>,
}

/// The directory holding `initdb` and `postgres`: `PG_BINDIR` if set (and
/// nothing else), else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Option<PathBuf> {
    let ok = |p: &Path| p.join("initdb").is_file() && p.join("postgres").is_file();
    // An explicit PG_BINDIR is the only place looked at (so it can also
    // point nowhere to exercise the skip path).
    if let Ok(d) = std::env::var("PG_BINDIR") {
        let p = PathBuf::from(d);
        return ok(&p).then_some(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && ok(&p) {
            return Some(p);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ok(&bin).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn err(what: impl std::fmt::Display) -> TestkitError {
    TestkitError(what.to_string())
}

/// uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> Result<(u32, u32), TestkitError> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| err(format!("reading /etc/passwd: {e}")))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres")).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .ok_or_else(|| {
            err("running as root, and there is no `postgres` user to run the server as (initdb refuses root)")
        })
}

fn free_port() -> Result<u16, TestkitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("finding a free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| err(format!("finding a free port: {e}")))
}

fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    format!("pw{:016x}", h.finish())
}

impl Cluster {
    /// Initialises and starts a cluster (blocking; a second or two).
    pub fn start(options: ClusterOptions) -> Result<Cluster, TestkitError> {
        let bindir = find_bindir().ok_or_else(|| err("no PostgreSQL server binaries found"))?;
        let dir = tempfile::Builder::new()
            .prefix("flashsync-pg-")
            .tempdir()
            .map_err(|e| err(format!("creating a temporary directory: {e}")))?;
        let run_as = if rustix::process::geteuid().is_root() { Some(postgres_user()?) } else { None };
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{password}\n")).map_err(|e| err(format!("writing pwfile: {e}")))?;
        fs::create_dir(dir.path().join("sock")).map_err(|e| err(format!("creating socket dir: {e}")))?;
        if let Some((uid, gid)) = run_as {
            for p in [dir.path().to_path_buf(), pwfile.clone(), dir.path().join("sock")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| err(format!("chown {}: {e}", p.display())))?;
            }
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().map_err(|e| err(format!("running initdb: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let _ = fs::remove_file(&pwfile);
        if let Some(xid) = options.next_xid {
            reset_next_xid(&bindir, &dir.path().join("data"), run_as, xid)?;
        }
        let port = free_port()?;
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| err(format!("opening postgresql.conf: {e}")))?;
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "'127.0.0.1'".to_owned()),
            ("port", port.to_string()),
            ("unix_socket_directories", format!("'{}'", dir.path().join("sock").display())),
            ("wal_level", "logical".into()),
            ("max_replication_slots", "64".into()),
            ("max_wal_senders", "64".into()),
            ("max_connections", "200".into()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("shared_buffers", "32MB".into()),
            ("logging_collector", "off".into()),
            ("log_min_messages", "warning".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        settings.extend(options.settings);
        for (name, contents) in &options.files {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(name);
            fs::write(&path, contents).map_err(|e| err(format!("writing {name}: {e}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("chmod {name}: {e}")))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| err(format!("chown {name}: {e}")))?;
            }
        }
        for (k, v) in &settings {
            writeln!(conf, "{k} = {v}").map_err(|e| err(format!("writing postgresql.conf: {e}")))?;
        }
        drop(conf);
        let mut cluster = Cluster { bindir, dir, port, password, run_as, server: None, reaper: None };
        cluster.launch()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .map_err(|e| err(format!("opening server log: {e}")))?;
        let log2 = log.try_clone().map_err(|e| err(format!("server log: {e}")))?;
        let _ = fs::remove_file(self.data().join("postmaster.pid"));
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D").arg(self.data()).stdin(Stdio::null()).stdout(log).stderr(log2);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(|e| err(format!("starting postgres: {e}")))?;
        let pid = child.id();
        if let Some(mut old) = self.reaper.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.reaper = Some(reaper::spawn(pid, self.dir.path())?);
        // Ready when postmaster.pid's status line says so.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(err(format!("postgres exited during startup ({status}); log:\n{}", self.log_tail())));
            }
            let ready = fs::read_to_string(self.data().join("postmaster.pid"))
                .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(err(format!("postgres not ready after 60s; log:\n{}", self.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server = Some(child);
        Ok(())
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Connection settings for database `dbname` as the superuser over TCP
    /// with SCRAM.
    pub fn conninfo(&self, dbname: &str) -> ConnInfo {
        ConnInfo {
            host: Host::Tcp("127.0.0.1".into()),
            port: self.port,
            user: "postgres".into(),
            password: Some(Secret::new(self.password.clone())),
            dbname: dbname.into(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            application_name: None,
            connect_timeout: Some(Duration::from_secs(30)),
            options: None,
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser password (test clusters only).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self.pid().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Stops the server (fast shutdown: sessions are disconnected).
    pub fn stop(&mut self) {
        self.signal(rustix::process::Signal::INT);
        if let Some(mut child) = self.server.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// Crashes the server: immediate shutdown (every process exits at once,
    /// no checkpoint; unflushed WAL is lost, the next start runs crash
    /// recovery). Start it again with [`restart`](Self::restart).
    pub fn crash(&mut self) {
        self.signal(rustix::process::Signal::QUIT);
        if let Some(mut child) = self.server.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.wait();
        }
    }

    /// Stops and starts the server again on the same port and data.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()
    }

    /// Creates a uniquely named database on this cluster.
    pub async fn create_db(&self, prefix: &str) -> Result<super::TestDb, TestkitError> {
        super::create_db(&self.conninfo("postgres"), prefix).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate shutdown: the data is thrown away anyway.
        self.signal(rustix::process::Signal::QUIT);
        if let Some(mut child) = self.server.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The server is gone; the reaper must not signal a reused pid later.
        if let Some(mut r) = self.reaper.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}
