//! The file adapter of the feed state port ([`FeedStateStore`]): one JSON file per feed,
//! `<data_dir>/feeds/<feed>.json`, used in both modes (the feed's state is the source's,
//! not the consensus store's).
//!
//! Invariants: a save writes a temporary file in the same directory, fsyncs it, renames
//! it over the old one and fsyncs the directory, so a crash leaves the old state or the
//! new one; a file that does not parse, or of another format version, is an error naming
//! the file (never an empty state); feed names are validated by the configuration, so a
//! name is a file name.

use crate::ports::feed_state::{FeedState, FeedStateError, FeedStateStore, FEED_STATE_VERSION};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Feed states under a directory (`<data_dir>/feeds`).
#[derive(Clone, Debug)]
pub struct FeedFiles {
    dir: PathBuf,
}

impl FeedFiles {
    /// The states kept in `<data_dir>/feeds` (created on the first save).
    pub fn under(data_dir: &Path) -> FeedFiles {
        FeedFiles { dir: data_dir.join("feeds") }
    }

    /// The file of `feed`.
    pub fn path(&self, feed: &str) -> PathBuf {
        self.dir.join(format!("{feed}.json"))
    }

    fn load_sync(&self, feed: &str) -> Result<Option<FeedState>, FeedStateError> {
        let path = self.path(feed);
        let name = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FeedStateError::Io { path: name, source }),
        };
        let state: FeedState = serde_json::from_slice(&bytes)
            .map_err(|e| FeedStateError::Corrupt { path: name.clone(), reason: e.to_string() })?;
        if state.version != FEED_STATE_VERSION {
            return Err(FeedStateError::Corrupt {
                path: name,
                reason: format!("format version {} (this version reads {FEED_STATE_VERSION})", state.version),
            });
        }
        if state.feed != feed {
            return Err(FeedStateError::Corrupt { path: name, reason: format!("holds feed {:?}", state.feed) });
        }
        Ok(Some(state))
    }

    fn save_sync(&self, state: &FeedState) -> Result<(), FeedStateError> {
        let path = self.path(&state.feed);
        let io = |source| FeedStateError::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!(".{}.json.tmp", state.feed));
        let bytes = serde_json::to_vec_pretty(state).expect("a feed state serialises");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        // The rename itself is durable once the directory is.
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    fn remove_sync(&self, feed: &str) -> Result<(), FeedStateError> {
        let path = self.path(feed);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FeedStateError::Io { path: path.display().to_string(), source }),
        }
    }
}

#[async_trait::async_trait]
impl FeedStateStore for FeedFiles {
    async fn load(&self, feed: &str) -> Result<Option<FeedState>, FeedStateError> {
        let (me, feed) = (self.clone(), feed.to_string());
        tokio::task::spawn_blocking(move || me.load_sync(&feed)).await.expect("feed state read task")
    }

    async fn save(&self, state: &FeedState) -> Result<(), FeedStateError> {
        let (me, state) = (self.clone(), state.clone());
        tokio::task::spawn_blocking(move || me.save_sync(&state)).await.expect("feed state write task")
    }

    async fn remove(&self, feed: &str) -> Result<(), FeedStateError> {
        let (me, feed) = (self.clone(), feed.to_string());
        tokio::task::spawn_blocking(move || me.remove_sync(&feed)).await.expect("feed state remove task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::feed_state::{DirectoryState, DocOutcome, DocState};

    #[tokio::test]
    async fn a_state_saved_is_read_back_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = FeedFiles::under(dir.path());
        assert_eq!(files.load("ciq").await.unwrap(), None, "never saved");
        let mut s = FeedState::new("ciq", "acme");
        let mut d = DirectoryState { watermark_ms: Some(5), rows_seen: 1, ..Default::default() };
        d.documents.insert(
            "2024/a.json".into(),
            DocState {
                listed: Some("2024-01-01T00:00:00Z".into()),
                outcome: DocOutcome::Failed,
                reason: Some("hash_mismatch".into()),
                digests: None,
                failures: 2,
                next_retry_ms: Some(9),
            },
        );
        s.directories.insert("https://p.example/csaf/white/".into(), d);
        files.save(&s).await.unwrap();
        files.save(&s).await.unwrap();
        assert_eq!(files.load("ciq").await.unwrap(), Some(s.clone()));
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("feeds")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["ciq.json"], "no temporary file left behind");
        std::fs::write(files.path("ciq"), b"{ truncated").unwrap();
        let e = files.load("ciq").await.unwrap_err().to_string();
        assert!(e.contains("ciq.json"), "{e}");
        let mut other = s.clone();
        other.version = 99;
        std::fs::write(files.path("ciq"), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(files.load("ciq").await.unwrap_err().to_string().contains("format version 99"));
        files.remove("ciq").await.unwrap();
        files.remove("ciq").await.unwrap();
        assert_eq!(files.load("ciq").await.unwrap(), None);
    }
}
