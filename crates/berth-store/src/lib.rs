//! Berth's durable storage.
//!
//! One [`Store`] over SQLite (bundled, WAL, the default: one file in the data dir) or
//! PostgreSQL (`--database-url postgres://…`), through sqlx's `Any` driver so that the services'
//! portable SQL runs unchanged on both. Each backend has its own versioned migrations under
//! `migrations/`. The shared tables live here: durable [`jobs`], [`idempotency`] records,
//! [`tags`] and resource [`policies`].
//!
//! SQL lives only here and in the services' `store.rs` modules. Portable SQL means: `$1…$n`
//! placeholders in ascending order of first use, `BIGINT` millisecond timestamps, `TEXT` JSON,
//! and no booleans (0/1 integers).

mod coalesce;
pub mod idempotency;
pub mod jobs;
pub mod policies;
pub mod tags;
mod write;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::{Clock, ErrorKind};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use sqlx;

/// Which database engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A storage failure. Always an internal error to clients; the details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url `{0}` (expected sqlite:// or postgres://)")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }

    /// Whether the error is a unique-constraint violation (a concurrent insert of the same key).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database, with a clock for every timestamp it writes.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    reader: AnyPool,
    /// SQLite allows one writer at a time; a single-connection pool queues writers fairly instead
    /// of letting them spin on `SQLITE_BUSY`. On PostgreSQL this is the same pool as `reader`.
    writer: AnyPool,
    /// The group committer behind [`Store::write`] (SQLite) and [`Store::write_lazy`] (both).
    committer: Option<write::Committer>,
    /// Client-token lookups and records, batched under load.
    tokens: Arc<idempotency::TokenBatches>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

/// The SQLite settings every connection gets: WAL for concurrent readers, `synchronous=FULL` so a
/// commit is on disk before the request that made it is acknowledged, foreign keys for cascades.
/// Automatic checkpoints are off: they would run inside whichever commit crosses the threshold and
/// stall every write of that group commit. A background task checkpoints instead
/// ([`CHECKPOINT_INTERVAL`]). Reads go through a memory map of up to 1 GiB of the file (shared
/// with the OS page cache, not copied per connection): full-text search at 100k memory records
/// reads thousands of scattered pages, and `pread` for each took half its time.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
     PRAGMA busy_timeout=10000; PRAGMA wal_autocheckpoint=0; PRAGMA mmap_size=1073741824;";

/// How often the background task moves the SQLite write-ahead log into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Checkpoints the SQLite WAL without blocking writers (`PASSIVE`), until the pool closes.
async fn checkpoint_loop(pool: AnyPool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(%error, "WAL checkpoint failed");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs pending migrations.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Store> {
        let store = Store::connect(url, clock).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating, for inspection (`berth doctor`).
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                // A ping before every acquire doubles the round trips of every query (and on
                // SQLite, the thread hand-offs); a broken connection fails its query instead.
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            conn.execute(SQLITE_PRAGMAS).await?;
                        }
                        Ok(())
                    })
                })
        };
        let (reader, writer) = match backend {
            Backend::Sqlite => {
                let writer = pool(1).connect_with(options.clone()).await?;
                // Each SQLite connection is a thread; more readers than twice the cores only add
                // context switches (measured in docs/PERFORMANCE.md).
                let cores = std::thread::available_parallelism().map_or(2, usize::from) as u32;
                let reader = pool((2 * cores).max(4)).connect_with(options).await?;
                (reader, writer)
            }
            Backend::Postgres => {
                let shared = pool(16).connect_with(options).await?;
                (shared.clone(), shared)
            }
        };
        let committer = Some(write::Committer::start(writer.clone()));
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoint_loop(reader.clone()));
        }
        let store = Store {
            backend,
            reader,
            writer,
            committer,
            tokens: Arc::default(),
            clock,
        };
        Ok(store)
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }

    /// How many of this build's migrations the database has not applied yet.
    pub async fn pending_migrations(&self) -> usize {
        let applied = self.schema_version().await.unwrap_or(0);
        self.migrator().iter().filter(|m| m.version > applied).count()
    }

    async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.writer).await?;
        Ok(())
    }

    /// The latest migration version applied, for `berth doctor`.
    pub async fn schema_version(&self) -> Result<i64> {
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.reader)
            .await?;
        Ok(version.unwrap_or(0))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Milliseconds since the epoch, from the injected clock.
    pub fn now(&self) -> i64 {
        self.clock.now().millis()
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.writer.begin().await?)
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Fresh stores for tests: a temporary SQLite file always, and a fresh PostgreSQL database when
/// `BERTH_TEST_POSTGRES_URL` names a server (the test command starts one). Every store test runs
/// against each.
pub mod testing {
    use super::*;

    /// A store and what keeps it alive.
    pub struct TestStore {
        pub store: Store,
        _dir: Option<TempDirGuard>,
    }

    /// Removes the temporary directory of a SQLite test store.
    pub struct TempDirGuard(std::path::PathBuf);

    impl Drop for TempDirGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One store per available backend.
    pub async fn stores(clock: Arc<dyn Clock>) -> Vec<TestStore> {
        let mut out = Vec::new();
        let dir = std::env::temp_dir().join(format!("berth-store-test-{}", berth_core::ids::random_alphanumeric(12)));
        std::fs::create_dir_all(&dir).expect("test temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("berth.db").display());
        out.push(TestStore {
            store: Store::open(&url, clock.clone()).await.expect("open sqlite test store"),
            _dir: Some(TempDirGuard(dir)),
        });
        if let Ok(admin_url) = std::env::var("BERTH_TEST_POSTGRES_URL") {
            let name = format!("berth_test_{}", berth_core::ids::random_alphanumeric(12).to_lowercase());
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&admin_url)
                .await
                .expect("connect to BERTH_TEST_POSTGRES_URL");
            let create = format!("CREATE DATABASE {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&admin)
                .await
                .expect("create test database");
            admin.close().await;
            let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin_url);
            let url = format!("{base}/{name}");
            out.push(TestStore {
                store: Store::open(&url, clock).await.expect("open postgres test store"),
                _dir: None,
            });
        }
        out
    }
}
