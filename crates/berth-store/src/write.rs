//! The write path, with group commit on SQLite.
//!
//! SQLite has one writer at a time and every commit waits for `fsync` (`synchronous=FULL`), so
//! committing each request alone caps throughput at one fsync per write and makes concurrent
//! writers queue. [`Store::write`] instead hands each write to one committer task, which runs
//! every write that is waiting in a single transaction and acknowledges them all after its one
//! commit: the same durability, far fewer fsyncs under load. If any write in a batch fails, the
//! batch is rolled back and each write runs again alone, so one write's failure never affects
//! another's outcome. On PostgreSQL, which commits concurrent transactions in parallel, a write
//! is simply its own transaction, except lazy writes ([`Store::write_lazy`]), which are grouped
//! there too.

use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Result, Store, StoreError};

/// The most writes committed together.
const MAX_BATCH: usize = 256;
/// How long a batch of only lazy writes waits for an eager write to share its commit.
const LAZY_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// What a write did, before its transaction committed.
enum Outcome {
    /// Wrote; to be told whether the commit made it durable.
    Wrote(Box<dyn FnOnce(Option<StoreError>) + Send>),
    /// Failed; the transaction must not commit with its changes.
    Failed(Box<dyn FnOnce() + Send>),
}

/// A write, type-erased so writes of any result type share one queue. It may run twice (a batch
/// that is rolled back runs each write again alone), so it holds its closure by reference.
trait Write: Send + Sync {
    fn run<'c>(self: Arc<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Outcome>;
    /// Whether the write may wait a moment for company (see [`Store::write_lazy`]).
    fn lazy(&self) -> bool;
}

struct Typed<T, E, F> {
    f: F,
    reply: Mutex<Option<oneshot::Sender<Result<T, E>>>>,
    lazy: bool,
}

impl<T, E, F> Typed<T, E, F> {
    /// Answers the caller; only the first answer counts (a write that ran twice answers once).
    fn answer(&self, result: Result<T, E>) {
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(result);
        }
    }
}

impl<T, E, F> Write for Typed<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + Sync + 'static,
{
    fn lazy(&self) -> bool {
        self.lazy
    }

    fn run<'c>(self: Arc<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Outcome> {
        Box::pin(async move {
            let result = (self.f)(conn).await;
            let this = self.clone();
            match result {
                Ok(value) => Outcome::Wrote(Box::new(move |commit: Option<StoreError>| {
                    this.answer(match commit {
                        None => Ok(value),
                        Some(error) => Err(E::from(error)),
                    })
                })),
                Err(error) => Outcome::Failed(Box::new(move || this.answer(Err(error)))),
            }
        })
    }
}

/// The queue of writes waiting for the SQLite committer.
#[derive(Clone)]
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Arc<dyn Write>>,
}

impl Committer {
    pub(crate) fn start(writer: AnyPool) -> Committer {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(writer, receiver));
        Committer { queue }
    }
}

async fn commit_loop(writer: AnyPool, mut receiver: mpsc::UnboundedReceiver<Arc<dyn Write>>) {
    let mut batch: Vec<Arc<dyn Write>> = Vec::with_capacity(MAX_BATCH);
    // The connection is kept while writes keep coming (each return to the pool costs a task
    // and, on SQLite, thread hand-offs) and given back when the queue runs dry, so that the
    // few writes that bypass the committer (migrations, sweeps) get their turn.
    let mut held: Option<PoolConnection<Any>> = None;
    loop {
        let first = match receiver.try_recv() {
            Ok(first) => first,
            Err(_) => {
                held = None;
                match receiver.recv().await {
                    Some(first) => first,
                    None => return,
                }
            }
        };
        batch.push(first);
        loop {
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // Lazy writes alone wait briefly, so they share the next eager write's fsync.
            if batch.len() >= MAX_BATCH || !batch.iter().all(|w| w.lazy()) {
                break;
            }
            match tokio::time::timeout(LAZY_WAIT, receiver.recv()).await {
                Ok(Some(next)) => batch.push(next),
                _ => break,
            }
        }
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None => writer.acquire().await,
        };
        match conn {
            Ok(mut conn) => match commit_batch(&mut conn, &batch).await {
                Ok(()) => held = Some(conn),
                Err(error) => {
                    tracing::error!(%error, writes = batch.len(), "could not commit writes");
                    // Each write's reply is dropped with it, which its caller sees as a store
                    // error; the connection, perhaps broken, is not reused.
                }
            },
            Err(error) => {
                tracing::error!(%error, writes = batch.len(), "could not reach the database to commit writes")
            }
        }
        batch.clear();
    }
}

/// Runs `batch` in one transaction; on any failure, rolls back and runs each write alone.
async fn commit_batch(conn: &mut AnyConnection, batch: &[Arc<dyn Write>]) -> Result<()> {
    if batch.len() > 1 {
        let mut tx = conn.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for write in batch {
            match write.clone().run(&mut tx).await {
                Outcome::Wrote(deliver) => outcomes.push(deliver),
                Outcome::Failed(_) => {
                    outcomes.clear();
                    break;
                }
            }
        }
        if outcomes.len() == batch.len() {
            let committed = tx.commit().await.err().map(|e| e.to_string());
            for deliver in outcomes {
                deliver(
                    committed
                        .clone()
                        .map(|e| StoreError::Unavailable(format!("commit failed: {e}"))),
                );
            }
            return Ok(());
        }
        tx.rollback().await?;
    }
    for write in batch {
        let mut tx = conn.begin().await?;
        match write.clone().run(&mut tx).await {
            Outcome::Wrote(deliver) => deliver(tx.commit().await.err().map(StoreError::from)),
            Outcome::Failed(fail) => {
                tx.rollback().await?;
                fail();
            }
        }
    }
    Ok(())
}

impl Store {
    /// Runs `f` in a write transaction and returns its result once the transaction is durable.
    ///
    /// `f` may run more than once (after a rolled-back group commit), each time in a fresh
    /// transaction, so it must build its writes from what it captured, not consume it. Reads
    /// that decide whether to write belong before the call, on [`Store::reader`]; errors `f`
    /// returns are expected to be rare (constraint violations), as each one makes its batch
    /// run again write by write.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + Sync + 'static,
    {
        self.submit(f, false).await
    }

    /// Like [`Store::write`], for writes nobody waits on (bookkeeping after a response): on
    /// SQLite the write may wait a few milliseconds for an eager write to commit with, so it
    /// costs no fsync of its own.
    pub async fn write_lazy<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + Sync + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, E, F>(&self, f: F, lazy: bool) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + Sync + 'static,
    {
        // SQLite groups every write; PostgreSQL commits concurrent transactions in parallel, so
        // only lazy writes, which nobody waits on, are grouped there.
        let grouped = lazy || self.backend == Backend::Sqlite;
        match &self.committer {
            Some(committer) if grouped => {
                let (reply, answer) = oneshot::channel();
                let write: Arc<dyn Write> = Arc::new(Typed {
                    f,
                    reply: Mutex::new(Some(reply)),
                    lazy,
                });
                committer
                    .queue
                    .send(write)
                    .map_err(|_| E::from(StoreError::Unavailable("the committer has stopped".into())))?;
                answer.await.map_err(|_| {
                    E::from(StoreError::Unavailable(
                        "the write was dropped before it committed".into(),
                    ))
                })?
            }
            _ => {
                let mut tx = self.writer.begin().await.map_err(StoreError::from)?;
                let value = f(&mut tx).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(value)
            }
        }
    }
}
