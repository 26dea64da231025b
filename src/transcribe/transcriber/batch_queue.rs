//! The windows of concurrent batched transcriptions, decoded in the same batches.
//!
//! A transcription hands its windows to the queue and waits for their results. When no batch
//! is running, the caller runs one itself: the oldest window waiting and, in the order they
//! came, the windows that may share its batch (whoever's they are), up to the oldest window's
//! limit. A caller whose windows are done returns; one still waiting runs the next batch. A
//! window that comes while a batch runs waits for the next, which takes every window of its
//! kind that came meanwhile: when decoding is the slower stage (the CPU's decoder behind an
//! NPU's encoder), the batches fill with the windows of every transcription running.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A job of the queue.
pub(crate) trait Batchable {
    /// Whether `self` and `other` may run in the same batch.
    fn same_batch(&self, other: &Self) -> bool;
    /// The most jobs in a batch that this one opens.
    fn limit(&self) -> usize;
}

/// Jobs `J` run in batches, results `T` (or an error's message).
pub(crate) struct BatchQueue<J, T> {
    state: Mutex<State<J, T>>,
    wake: Condvar,
}

struct State<J, T> {
    /// Jobs waiting, with their tickets, oldest first.
    pending: VecDeque<(u64, J)>,
    /// Results not yet taken, by ticket.
    done: HashMap<u64, Result<T, String>>,
    /// Whether a batch is running.
    running: bool,
    next_ticket: u64,
}

impl<J: Batchable, T> Default for BatchQueue<J, T> {
    fn default() -> Self {
        BatchQueue {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                done: HashMap::new(),
                running: false,
                next_ticket: 0,
            }),
            wake: Condvar::new(),
        }
    }
}

impl<J: Batchable, T> BatchQueue<J, T> {
    fn lock(&self) -> MutexGuard<'_, State<J, T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `jobs`, in batches with other callers' jobs, by `run` (a batch's jobs in, one
    /// result for each, in order, out): their results, in order. `run` may be called with
    /// other callers' jobs; a panic in it fails the jobs of its batch (with an error), not
    /// the callers waiting.
    pub(crate) fn submit(
        &self,
        jobs: Vec<J>,
        run: &mut dyn FnMut(Vec<J>) -> Vec<Result<T, String>>,
    ) -> Vec<Result<T, String>> {
        let mut state = self.lock();
        let tickets: Vec<u64> = jobs
            .into_iter()
            .map(|job| {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.pending.push_back((ticket, job));
                ticket
            })
            .collect();
        loop {
            if tickets.iter().all(|t| state.done.contains_key(t)) {
                return tickets
                    .iter()
                    .map(|t| state.done.remove(t).expect("checked"))
                    .collect();
            }
            if state.running || state.pending.is_empty() {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (ids, batch) = take_batch(&mut state.pending);
            state.running = true;
            drop(state);
            let n = ids.len();
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(batch)))
                .unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err("the decoder panicked on this batch".into()))
                        .collect()
                });
            let results = if results.len() == n {
                results
            } else {
                let message = format!("a batch of {n} windows gave {} results", results.len());
                (0..n).map(|_| Err(message.clone())).collect()
            };
            state = self.lock();
            state.done.extend(ids.into_iter().zip(results));
            state.running = false;
            self.wake.notify_all();
        }
    }
}

/// The next batch: the oldest job and the later ones that may share its batch, up to its
/// limit, in their order; the others stay, in theirs.
fn take_batch<J: Batchable>(pending: &mut VecDeque<(u64, J)>) -> (Vec<u64>, Vec<J>) {
    let first = pending.pop_front().expect("a job is pending");
    let limit = first.1.limit().max(1);
    let mut taken = vec![first];
    let mut kept = VecDeque::with_capacity(pending.len());
    while let Some(job) = pending.pop_front() {
        if taken.len() < limit && job.1.same_batch(&taken[0].1) {
            taken.push(job);
        } else {
            kept.push_back(job);
        }
    }
    *pending = kept;
    taken.into_iter().unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    /// A job: its caller, its kind, and the batch limit it opens.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Job {
        caller: usize,
        kind: u8,
        limit: usize,
    }

    impl Batchable for Job {
        fn same_batch(&self, other: &Self) -> bool {
            self.kind == other.kind
        }
        fn limit(&self) -> usize {
            self.limit
        }
    }

    /// While the first caller's batch runs (held until released), three callers queue
    /// windows: the next batch takes every window of the oldest's kind, across callers, up
    /// to the limit; the other kind runs after; each caller gets its own results in order.
    #[test]
    fn waiting_windows_of_every_caller_share_the_next_batch() {
        let queue: Arc<BatchQueue<Job, (usize, usize)>> = Arc::new(BatchQueue::default());
        let batches = Arc::new(Mutex::new(Vec::<Vec<Job>>::new()));
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let job = |caller, kind| Job {
            caller,
            kind,
            limit: 4,
        };
        let spawn = |caller: usize, jobs: Vec<Job>| {
            let (queue, batches) = (queue.clone(), batches.clone());
            let (started, release) = (started_tx.clone(), release_rx.clone());
            std::thread::spawn(move || {
                let mut run = |batch: Vec<Job>| {
                    let first = batches.lock().unwrap().is_empty();
                    batches.lock().unwrap().push(batch.clone());
                    if first {
                        // The first batch holds until the others have queued.
                        started.send(()).unwrap();
                        release.lock().unwrap().recv().unwrap();
                    }
                    batch
                        .iter()
                        .enumerate()
                        .map(|(i, j)| Ok((j.caller, i)))
                        .collect()
                };
                let n = jobs.len();
                let results = queue.submit(jobs, &mut run);
                assert_eq!(results.len(), n);
                results
                    .into_iter()
                    .map(|r| r.unwrap().0)
                    .collect::<Vec<usize>>()
                    .iter()
                    .for_each(|&c| assert_eq!(c, caller));
            })
        };
        let first = spawn(0, vec![job(0, 1)]);
        started_rx.recv().unwrap();
        // Three callers queue, one after another, while the first batch runs.
        let mut others = Vec::new();
        for (caller, jobs, queued) in [
            (1, vec![job(1, 1), job(1, 1)], 2),
            (2, vec![job(2, 2)], 3),
            (3, vec![job(3, 1), job(3, 1), job(3, 1)], 6),
        ] {
            others.push(spawn(caller, jobs));
            while queue.lock().pending.len() < queued {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        release_tx.send(()).unwrap();
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        let shape: Vec<Vec<(usize, u8)>> = batches
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.iter().map(|j| (j.caller, j.kind)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(0, 1)],
                // The oldest (caller 1's) opens the batch; caller 3's join it up to 4.
                vec![(1, 1), (1, 1), (3, 1), (3, 1)],
                vec![(2, 2)],
                vec![(3, 1)],
            ]
        );
    }

    /// A panic in a batch fails its jobs with an error; the queue goes on.
    #[test]
    fn a_panicking_batch_fails_its_jobs_only() {
        let queue: BatchQueue<Job, u32> = BatchQueue::default();
        let job = Job {
            caller: 0,
            kind: 0,
            limit: 2,
        };
        let results = queue.submit(vec![job; 3], &mut |batch| {
            if batch.len() == 2 {
                panic!("a test panic");
            }
            vec![Ok(7); batch.len()]
        });
        assert!(results[0].is_err() && results[1].is_err());
        assert_eq!(results[2], Ok(7));
        assert_eq!(queue.submit(vec![job], &mut |_| vec![Ok(1)]), vec![Ok(1)]);
    }
}
