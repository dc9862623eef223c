//! Writers that change upstream tables while tests watch.

use super::*;

/// A small deterministic generator (xorshift64*), seeded per writer.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Shared state of a set of writer tasks.
#[derive(Clone, Default)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    /// Transactions committed (as reported by the server).
    pub commits: Arc<AtomicU64>,
    /// Transactions that failed (conflicts, lost connections) and were
    /// rolled back or lost.
    pub failures: Arc<AtomicU64>,
    /// The first few failure messages.
    pub errors: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// One writer's transaction: statements and parameters.
pub type Txn = Vec<(String, Vec<i64>)>;

impl Writers {
    /// Starts a writer that repeatedly runs the transaction `make` builds
    /// (with `hold` milliseconds of idleness before COMMIT when it says so),
    /// reconnecting to `db` when the connection breaks.
    pub fn spawn(&self, db: &TestDb, seed: u64, make: impl Fn(&mut Rng) -> (Txn, u64) + Send + 'static) {
        let (stop, commits, failures) = (self.stop.clone(), self.commits.clone(), self.failures.clone());
        let errors = self.errors.clone();
        let db = db.clone();
        let task = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.load(Ordering::SeqCst) {
                let c = match &client {
                    Some(c) if !c.is_closed() => c,
                    _ => {
                        match db.try_client().await {
                            Ok(c) => client = Some(c),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                        continue;
                    }
                };
                let (txn, hold) = make(&mut rng);
                let ok = async {
                    c.batch_execute("BEGIN").await?;
                    for (sql, params) in &txn {
                        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                            params.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                        c.execute(sql.as_str(), &p).await?;
                    }
                    if hold > 0 {
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                    }
                    c.batch_execute("COMMIT").await
                }
                .await;
                match ok {
                    Ok(()) => {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut errors = errors.lock().unwrap();
                            if errors.len() < 10 {
                                errors.push(format!("{e:?}"));
                            }
                        }
                        let _ = c.batch_execute("ROLLBACK").await;
                    }
                }
            }
        });
        self.tasks.lock().unwrap().push(task);
    }

    /// Commits so far.
    pub fn committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more transactions committed than now.
    pub async fn wait_commits(&self, n: u64) {
        let target = self.committed() + n;
        let me = self;
        wait_for(&format!("writers to commit {n} more transactions"), WAIT, move || async move {
            (me.committed() >= target).then_some(())
        })
        .await;
    }

    /// Stops every writer and waits for them to finish their transaction.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            tokio::time::timeout(WAIT, t).await.expect("a writer did not stop").unwrap();
        }
    }
}
