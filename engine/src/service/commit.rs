//! Group commit: the batches of concurrent requests are written as one store commit. While a
//! commit runs, the batches that arrive queue; the next commit takes all of them (up to
//! [`GROUP_ROWS`] events), so a busy service makes fewer, larger commits instead of waiting in
//! line for one commit each. Each request is answered with its own share (its events stored
//! and its duplicates) once the commit holding it is durable; a failed commit fails every
//! request in it, and they are retried whole (a commit is all or nothing). The events a commit
//! stored are then counted for the console's intake chart (in memory: see [`super::intake`]).

use tokio::sync::{mpsc, oneshot};

use crate::batch::EventBatch;
use crate::store::{Batch, Intake, Store};

/// Events in one group commit at most (a request larger than this is committed alone).
pub const GROUP_ROWS: usize = 50_000;

/// A request's share of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub stored: u64,
    pub duplicates: u64,
    /// Events of forgotten users, refused.
    pub forgotten: u64,
}

struct Job {
    events: EventBatch,
    done: oneshot::Sender<Result<Share, String>>,
}

/// The handle requests commit through; the committing task ends when it is dropped.
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

type Tally = std::sync::Arc<super::intake::IntakeTally>;

impl Committer {
    /// Starts the committing task on the current runtime.
    pub fn start(store: Store, intake: Tally) -> Committer {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_groups(store, queue, intake));
        Committer { jobs }
    }

    /// Commits `events` (with whatever else is waiting) and returns this batch's share; the
    /// error names what failed.
    pub async fn commit(&self, events: EventBatch) -> Result<Share, String> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { events, done })
            .map_err(|_| "the service is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the commit task stopped".to_string())?
    }
}

async fn commit_groups(store: Store, mut queue: mpsc::UnboundedReceiver<Job>, intake: Tally) {
    while let Some(first) = queue.recv().await {
        let mut rows = first.events.len();
        let mut jobs = vec![first];
        while rows < GROUP_ROWS {
            match queue.try_recv() {
                Ok(job) => {
                    rows += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<usize> = jobs.iter().map(|job| job.events.len()).collect();
        let events = if jobs.len() == 1 {
            std::mem::take(&mut jobs[0].events)
        } else {
            EventBatch::concat(jobs.iter().map(|job| &job.events))
        };
        let committed = store
            .commit_batch(Batch {
                events,
                prepared: None,
                file: None,
            })
            .await;
        match committed {
            Ok(committed) => {
                let now = chrono::Utc::now().timestamp_millis();
                intake.add(Intake::Http, committed.stored, now);
                let shares = shares(&sizes, &committed.duplicate_rows, &committed.forgotten_rows);
                for (job, share) in jobs.into_iter().zip(shares) {
                    let _ = job.done.send(Ok(share));
                }
            }
            Err(error) => {
                let error = error.to_string();
                for job in jobs {
                    let _ = job.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Each batch's share, given the batches' sizes in commit order and the duplicate and forgotten
/// rows of the whole commit (each ascending).
fn shares(sizes: &[usize], duplicate_rows: &[u32], forgotten_rows: &[u32]) -> Vec<Share> {
    let mut start = 0usize;
    let mut duplicates = duplicate_rows.iter().peekable();
    let mut forgotten = forgotten_rows.iter().peekable();
    sizes
        .iter()
        .map(|&size| {
            let end = start + size;
            let count = |rows: &mut std::iter::Peekable<std::slice::Iter<'_, u32>>| {
                let mut mine = 0u64;
                while rows.next_if(|row| (**row as usize) < end).is_some() {
                    mine += 1;
                }
                mine
            };
            let (duplicates, forgotten) = (count(&mut duplicates), count(&mut forgotten));
            start = end;
            Share {
                stored: size as u64 - duplicates - forgotten,
                duplicates,
                forgotten,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_batch_gets_the_duplicates_and_forgotten_in_its_rows() {
        // Rows 0-2 first batch, 3-3 second, 4-8 third; row 5 a forgotten user's.
        let shares = shares(&[3, 1, 5], &[1, 3, 4, 8], &[5]);
        let share = |stored, duplicates, forgotten| Share {
            stored,
            duplicates,
            forgotten,
        };
        assert_eq!(shares, [share(2, 1, 0), share(0, 1, 0), share(2, 2, 1)]);
    }
}
