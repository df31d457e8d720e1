//! Group commit for the embedded store's hot writes (records, observations, the document
//! ledger, processed files): writes that arrive while a commit is on disk are applied
//! together in the next write transaction and made durable by one commit. A commit's
//! `fdatasync` was about 4 ms on this machine, and the pipeline's writers each committed
//! their observations and their records separately (180 commits, 0.7 s of `serve --once`
//! on vexhub waiting in `fdatasync` under redb's one write lock).
//!
//! Invariants:
//! - A write's caller gets `Ok` only after the transaction holding it committed (with
//!   immediate durability): the same promise as a transaction of its own.
//! - Writes are applied in the order they were submitted; a write sees every write
//!   submitted before it (in its group, or committed earlier), as if each had its own
//!   transaction in that order.
//! - A write that fails fails its group: the transaction is aborted and each write of the
//!   group is run again in a transaction of its own, so only the failing write gets its
//!   error. Writes are idempotent upserts, so running one again changes nothing.
//! - The committer thread holds the database weakly and ends when the store's last handle
//!   is dropped, so `compact` (which needs the only handle) still works.

use super::{err, Tally};
use crate::ports::StoreError;
use redb::{Database, WriteTransaction};
use std::any::Any;
use std::sync::mpsc;
use std::sync::{Arc, Weak};

/// At most this many writes share one transaction (a bound on the group's memory).
const MAX_GROUP: usize = 64;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn Fn(&WriteTransaction, &mut Tally) -> Result<Output, StoreError> + Send>;

struct Job {
    work: Work,
    done: tokio::sync::oneshot::Sender<Result<Output, StoreError>>,
}

/// The sending side of the committer thread (cloned with the store).
#[derive(Clone)]
pub(super) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the committer thread of `db`.
    pub(super) fn start(db: &Arc<Database>) -> Result<GroupCommit, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let db = Arc::downgrade(db);
        std::thread::Builder::new()
            .name("vex-lens-redb-commit".into())
            .spawn(move || run(&db, &rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the store's commit thread: {e}")))?;
        Ok(GroupCommit { jobs })
    }

    /// Runs `work` in a write transaction shared with the writes submitted meanwhile, and
    /// returns its result once that transaction committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        work: impl Fn(&WriteTransaction, &mut Tally) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move |tx, tally| work(tx, tally).map(|t| Box::new(t) as Output));
        self.jobs.send(Job { work, done }).map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let out = result.await.map_err(|_| StoreError::Unavailable("the store's commit thread stopped".into()))??;
        out.downcast::<T>().map(|b| *b).map_err(|_| StoreError::Rejected("group commit: result of another type".into()))
    }
}

fn run(db: &Weak<Database>, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        // The database is held only while the group runs (released before anyone is
        // answered, so a caller that got its answer can take the only handle).
        let results = match db.upgrade() {
            Some(db) => run_group(&db, &group),
            None => group.iter().map(|_| Err(StoreError::Unavailable("the store is closed".into()))).collect(),
        };
        for (j, r) in group.into_iter().zip(results) {
            let _ = j.done.send(r);
        }
    }
}

/// The group in one transaction; if it fails, each job alone, so that only the failing
/// write gets an error.
fn run_group(db: &Database, group: &[Job]) -> Vec<Result<Output, StoreError>> {
    match commit(db, group) {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(e) if group.len() == 1 => vec![Err(e)],
        Err(_) => group.iter().map(|j| commit(db, std::slice::from_ref(j)).map(|mut o| o.remove(0))).collect(),
    }
}

/// One write transaction running every job of `group`, in order; committed only if all
/// succeed. The write counts are reported after the commit.
fn commit(db: &Database, group: &[Job]) -> Result<Vec<Output>, StoreError> {
    let tx = db.begin_write().map_err(err)?;
    let mut tally = Tally::default();
    let mut outputs = Vec::with_capacity(group.len());
    for j in group {
        outputs.push((j.work)(&tx, &mut tally)?);
    }
    tx.commit().map_err(err)?;
    tally.committed();
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, TableDefinition};

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(key: &'static str, v: u64) -> impl Fn(&WriteTransaction, &mut Tally) -> Result<u64, StoreError> {
        move |tx, _| {
            let mut t = tx.open_table(T).map_err(err)?;
            if key == "bad" {
                return Err(StoreError::Rejected("bad write".into()));
            }
            let before = t.get(key).map_err(err)?.map_or(0, |g| g.value());
            t.insert(key, before + v).map_err(err)?;
            Ok(before + v)
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_writes_commit_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let g = GroupCommit::start(&db).unwrap();
        // Many writers at once: every write is applied once, in some order.
        let mut handles = Vec::new();
        for _ in 0..200 {
            let g = g.clone();
            handles.push(tokio::spawn(async move { g.write(put("n", 1)).await }));
        }
        let mut seen: Vec<u64> = Vec::new();
        for h in handles {
            seen.push(h.await.unwrap().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=200).collect::<Vec<u64>>(), "each write saw every earlier one");
        // A failing write among others: it alone gets the error, the others commit.
        let (a, b, c) = tokio::join!(g.write(put("x", 5)), g.write(put("bad", 1)), g.write(put("x", 7)));
        assert!(matches!(b, Err(StoreError::Rejected(_))));
        assert_eq!(a.unwrap() + c.unwrap(), 5 + 12, "both good writes committed, in order");
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        assert_eq!(t.get("n").unwrap().unwrap().value(), 200);
        assert_eq!(t.get("x").unwrap().unwrap().value(), 12);
        assert!(t.get("bad").unwrap().is_none());
        // The thread holds the database weakly: dropping the store's handles frees it.
        drop(t);
        drop(tx);
        drop(g);
        assert!(Arc::try_unwrap(db).is_ok());
    }
}
