//! Runs concurrent calls of one kind together ("smart batching").
//!
//! A call that finds none of its kind running starts one at once, alone, so an idle server
//! adds no latency. Calls that arrive while one runs wait for it to finish and then run as one
//! batch. Under load, a statement that serves the whole batch replaces one statement per call:
//! on SQLite each statement is a hand-off to the connection's thread and back, which on a small
//! machine costs more than the statement itself (measured in `docs/PERFORMANCE.md`).

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{Result, StoreError};

/// How often a call is queued again when its batch is dropped before answering it.
const ATTEMPTS: usize = 3;

/// Tells one caller its outcome.
type Reply<O> = Box<dyn FnOnce(Result<O, String>) + Send>;

/// Calls with input `I` and output `O`, batched while one batch runs.
pub(crate) struct Coalescer<I, O> {
    queue: Mutex<Queue<I, O>>,
}

struct Queue<I, O> {
    running: bool,
    waiting: Vec<(I, Reply<O>)>,
}

impl<I, O> Default for Coalescer<I, O> {
    fn default() -> Self {
        Coalescer {
            queue: Mutex::new(Queue {
                running: false,
                waiting: Vec::new(),
            }),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Runs `input` in the next batch. `run` answers a batch with one output per input, in
    /// order; it is the same function for every call of this coalescer (the first caller of a
    /// busy period supplies the one that runs).
    pub(crate) async fn call<F, Fut>(self: &Arc<Self>, input: I, run: F) -> Result<O>
    where
        I: Clone,
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        let run = Arc::new(run);
        for _ in 0..ATTEMPTS {
            let (reply, answer) = oneshot::channel();
            let reply: Reply<O> = Box::new(move |outcome| drop(reply.send(outcome)));
            if self.enqueue(input.clone(), reply) {
                // The first caller runs its batch itself: handing it to another task would wake
                // a second thread for every call on an idle server.
                let _handoff = Handoff(Some(Box::new({
                    let (coalescer, run) = (self.clone(), run.clone());
                    move || coalescer.hand_off(run)
                })));
                self.run_batch(&*run).await;
            }
            match answer.await {
                Ok(result) => return result.map_err(StoreError::Unavailable),
                // The batch was dropped unanswered: the caller that ran it went away (a client
                // hung up) or it panicked. Not this caller's doing, so it tries again.
                Err(_) => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "the batch stopped before it answered, {ATTEMPTS} times"
        )))
    }

    /// Runs `input` in the next batch without waiting for it; `done` is told the outcome.
    pub(crate) fn submit<F, Fut>(self: &Arc<Self>, input: I, run: F, done: impl FnOnce(Result<O>) + Send + 'static)
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        let reply: Reply<O> = Box::new(move |outcome| done(outcome.map_err(StoreError::Unavailable)));
        if self.enqueue(input, reply) {
            self.clone().hand_off(Arc::new(run));
        }
    }

    /// Queues a call; true when no batch is running, so the caller must start one.
    fn enqueue(&self, input: I, reply: Reply<O>) -> bool {
        let mut queue = self.queue.lock();
        queue.waiting.push((input, reply));
        !std::mem::replace(&mut queue.running, true)
    }

    /// Ends the first caller's turn: whoever arrived meanwhile is run by a task of its own.
    fn hand_off<F, Fut>(self: Arc<Self>, run: Arc<F>)
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        {
            let mut queue = self.queue.lock();
            if queue.waiting.is_empty() {
                queue.running = false;
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Shutting down: nothing can run the batch any more.
            let waiting = {
                let mut queue = self.queue.lock();
                queue.running = false;
                std::mem::take(&mut queue.waiting)
            };
            for (_, reply) in waiting {
                reply(Err("the server is shutting down".into()));
            }
            return;
        };
        runtime.spawn(async move {
            let idle = Idle(&self.queue);
            while self.run_batch(&*run).await {}
            std::mem::forget(idle);
        });
    }

    /// Runs everyone waiting as one batch and answers them. False when nobody was waiting, in
    /// which case the coalescer is idle again.
    async fn run_batch<F, Fut>(&self, run: &F) -> bool
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<O>>>,
    {
        let batch = {
            let mut queue = self.queue.lock();
            if queue.waiting.is_empty() {
                queue.running = false;
                return false;
            }
            std::mem::take(&mut queue.waiting)
        };
        let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
        let count = inputs.len();
        let answers: Vec<Result<O, String>> = match run(inputs).await {
            Ok(outputs) if outputs.len() == count => outputs.into_iter().map(Ok).collect(),
            Ok(outputs) => {
                let error = format!("a batch of {count} calls gave {} answers", outputs.len());
                (0..count).map(|_| Err(error.clone())).collect()
            }
            Err(error) => (0..count).map(|_| Err(error.to_string())).collect(),
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            reply(answer);
        }
        true
    }
}

/// Runs its closure when dropped: after the first caller's batch, or if that caller goes away
/// or panics mid-batch.
struct Handoff(Option<Box<dyn FnOnce() + Send>>);

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(hand_off) = self.0.take() {
            hand_off();
        }
    }
}

/// Marks the coalescer idle if a batch panics, so the next call starts afresh.
struct Idle<'a, I, O>(&'a Mutex<Queue<I, O>>);

impl<I, O> Drop for Idle<'_, I, O> {
    fn drop(&mut self) {
        self.0.lock().running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for i in 0..50u32 {
            let (coalescer, runs) = (coalescer.clone(), runs.clone());
            calls.push(tokio::spawn(async move {
                coalescer
                    .call(i, move |batch: Vec<u32>| {
                        let runs = runs.clone();
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            Ok(batch.into_iter().map(|x| x * 2).collect())
                        }
                    })
                    .await
            }));
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), 2 * i as u32);
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!((1..50).contains(&runs), "50 concurrent calls ran in {runs} batches");
    }

    #[tokio::test]
    async fn a_failed_or_panicking_batch_answers_its_callers_and_later_calls_still_run() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let failed = coalescer
            .call(1, |_| async { Err(StoreError::Unavailable("disk on fire".into())) })
            .await;
        assert!(failed.unwrap_err().to_string().contains("disk on fire"));
        let short = coalescer.call(1, |_| async { Ok(vec![]) }).await;
        assert!(short.unwrap_err().to_string().contains("gave 0 answers"));
        // The first caller runs its batch itself, so a panic in it is that caller's.
        let panicking = coalescer.clone();
        let panicked = tokio::spawn(async move {
            panicking
                .call(1, |batch| async move {
                    assert!(batch.is_empty(), "bug in a batch");
                    Ok(batch)
                })
                .await
        });
        assert!(panicked.await.is_err());
        assert_eq!(coalescer.call(7, |b| async move { Ok(b) }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn callers_waiting_behind_a_first_caller_that_goes_away_are_still_answered() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let slow = |batch: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(batch)
        };
        let first = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.call(1, slow).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let second = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.call(2, slow).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        // As when a client hangs up and its request's future is dropped.
        first.abort();
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(coalescer.call(3, slow).await.unwrap(), 3);
    }
}
