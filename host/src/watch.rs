//! Files picked up once they stop changing: a [`StableFiles`] looks at a
//! directory (or a fixed list of paths) on each [`StableFiles::scan`] and
//! reports a file once its size and modification time are the same on two
//! scans in a row, so a copy in progress is not read half-written. Removals
//! are reported at once.
//!
//! Polling, not inotify: it works the same on every filesystem (network
//! mounts, bind mounts, Kubernetes volumes), and the callers poll every
//! second or so anyway. Reading and acting on a file is the caller's job;
//! this module only decides *when*.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of a file: its size and mtime.
type Signature = (u64, Option<SystemTime>);

/// Which files to watch.
enum Source {
    /// Every regular file directly in the directory that the filter accepts.
    /// Symbolic links are not followed (as before this module existed: a
    /// link's target can change without the link's own mtime changing).
    Dir {
        dir: PathBuf,
        filter: Box<dyn Fn(&Path) -> bool + Send + Sync>,
    },
    /// These paths, links followed; a missing one is absent, not an error.
    Files(BTreeSet<PathBuf>),
}

/// What one scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Files new or changed and now stable, in path order. Each is reported
    /// once per version: whatever the caller makes of it (loaded or failed),
    /// it comes back only when it changes again.
    pub changed: Vec<PathBuf>,
    /// Files reported before that are gone, in path order.
    pub removed: Vec<PathBuf>,
}

impl Changes {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Two-scan stability detection over a directory or a set of files.
pub struct StableFiles {
    source: Source,
    /// Signature of the version last reported, per file.
    settled: BTreeMap<PathBuf, Signature>,
    /// Signature seen on the previous scan, for files not reported yet.
    pending: BTreeMap<PathBuf, Signature>,
}

impl std::fmt::Debug for StableFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Dir { dir, .. } => format!("dir {}", dir.display()),
            Source::Files(files) => format!("{} files", files.len()),
        };
        f.debug_struct("StableFiles")
            .field("source", &source)
            .field("settled", &self.settled.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// A filter for [`StableFiles::in_dir`]: names ending in `.{ext}` that are
/// valid UTF-8 and not dot-files (a dot-file is how a file is copied in
/// before being renamed into place).
pub fn with_extension(ext: &'static str) -> impl Fn(&Path) -> bool + Send + Sync + 'static {
    move |path: &Path| {
        let (Some(stem), Some(e)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            return false;
        };
        e == ext && !stem.starts_with('.')
    }
}

impl StableFiles {
    /// Watches the regular files directly in `dir` that `filter` accepts.
    pub fn in_dir(
        dir: impl Into<PathBuf>,
        filter: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::new(Source::Dir {
            dir: dir.into(),
            filter: Box::new(filter),
        })
    }

    /// Watches these files (a certificate and its key, say).
    pub fn files(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self::new(Source::Files(paths.into_iter().collect()))
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            settled: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The directory watched, if this watches one.
    pub fn dir(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir { dir, .. } => Some(dir),
            Source::Files(_) => None,
        }
    }

    /// One look: files whose size and mtime match the previous scan and
    /// differ from the version last reported, and files reported before
    /// that are gone. An error reading the directory changes nothing.
    pub fn scan(&mut self) -> std::io::Result<Changes> {
        self.scan_with(false)
    }

    /// One look that takes every present file as stable: for start-up,
    /// when nothing is being copied in yet and waiting would only delay.
    pub fn scan_now(&mut self) -> std::io::Result<Changes> {
        self.scan_with(true)
    }

    fn scan_with(&mut self, now: bool) -> std::io::Result<Changes> {
        let files = self.list()?;
        let mut changes = Changes::default();
        for (path, sig) in &files {
            if self.settled.get(path) == Some(sig) {
                self.pending.remove(path);
                continue;
            }
            if !now && self.pending.insert(path.clone(), *sig) != Some(*sig) {
                continue; // first sight, or still changing: wait one scan
            }
            self.pending.remove(path);
            self.settled.insert(path.clone(), *sig);
            changes.changed.push(path.clone());
        }
        self.pending.retain(|p, _| files.contains_key(p));
        self.settled.retain(|p, _| {
            let present = files.contains_key(p);
            if !present {
                changes.removed.push(p.clone());
            }
            present
        });
        Ok(changes)
    }

    fn list(&self) -> std::io::Result<BTreeMap<PathBuf, Signature>> {
        let mut out = BTreeMap::new();
        match &self.source {
            Source::Dir { dir, filter } => {
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let path = entry.path();
                    if !filter(&path) {
                        continue;
                    }
                    // A file deleted since `read_dir` listed it is simply absent.
                    let Ok(meta) = entry.metadata() else { continue };
                    if meta.is_file() {
                        out.insert(path, signature(&meta));
                    }
                }
            }
            Source::Files(paths) => {
                for path in paths {
                    if let Ok(meta) = std::fs::metadata(path)
                        && meta.is_file()
                    {
                        out.insert(path.clone(), signature(&meta));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn signature(meta: &std::fs::Metadata) -> Signature {
    (meta.len(), meta.modified().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Rewrites `path` with a different length, so the change is seen even
    /// when the mtime's resolution is too coarse to tell the versions apart.
    fn grow(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap_or_default();
        bytes.push(b'x');
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_file_is_reported_once_stable_over_two_scans_and_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StableFiles::in_dir(dir.path(), with_extension("wasm"));
        assert!(w.scan().unwrap().is_empty());

        let a = dir.path().join("a.wasm");
        grow(&a);
        assert!(w.scan().unwrap().is_empty(), "first sight: wait");
        grow(&a);
        assert!(w.scan().unwrap().is_empty(), "still changing: wait");
        assert_eq!(names(&w.scan().unwrap().changed), ["a.wasm"]);
        assert!(w.scan().unwrap().is_empty(), "reported once");

        grow(&a);
        assert!(w.scan().unwrap().is_empty());
        assert_eq!(names(&w.scan().unwrap().changed), ["a.wasm"], "new version");
    }

    #[test]
    fn the_filter_skips_other_extensions_dot_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.wasm", "a.wasm", "notes.txt", ".c.wasm", "wasm"] {
            grow(&dir.path().join(name));
        }
        std::fs::create_dir(dir.path().join("d.wasm")).unwrap();
        let mut w = StableFiles::in_dir(dir.path(), with_extension("wasm"));
        let first = w.scan_now().unwrap();
        assert_eq!(names(&first.changed), ["a.wasm", "b.wasm"], "path order");
        assert!(first.removed.is_empty());
        assert!(w.scan().unwrap().is_empty());
    }

    #[test]
    fn removals_are_reported_at_once_and_only_for_reported_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.wasm"), dir.path().join("b.wasm"));
        grow(&a);
        let mut w = StableFiles::in_dir(dir.path(), with_extension("wasm"));
        assert_eq!(names(&w.scan_now().unwrap().changed), ["a.wasm"]);
        grow(&b);
        assert!(w.scan().unwrap().is_empty(), "b pending");

        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        let changes = w.scan().unwrap();
        assert_eq!(
            changes,
            Changes {
                changed: vec![],
                removed: vec![a.clone()]
            },
            "b was never reported, so its removal is not either"
        );

        // Put back, it is new again: two scans.
        grow(&b);
        assert!(w.scan().unwrap().is_empty());
        assert_eq!(w.scan().unwrap().changed, [b]);
    }

    #[test]
    fn an_unreadable_directory_is_an_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wasm");
        grow(&a);
        let mut w = StableFiles::in_dir(dir.path(), with_extension("wasm"));
        assert_eq!(w.scan_now().unwrap().changed, vec![a.clone()]);
        let moved = dir.path().with_extension("moved");
        std::fs::rename(dir.path(), &moved).unwrap();
        assert!(w.scan().is_err());
        std::fs::rename(&moved, dir.path()).unwrap();
        assert!(
            w.scan().unwrap().is_empty(),
            "a is still the version reported"
        );
    }

    #[test]
    fn a_set_of_files_follows_links_and_treats_missing_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let real = dir.path().join("real-cert.pem");
        grow(&real);
        std::os::unix::fs::symlink(&real, &cert).unwrap();
        let mut w = StableFiles::files([cert.clone(), key.clone()]);
        assert_eq!(w.dir(), None);
        assert!(w.scan().unwrap().is_empty());
        assert_eq!(
            w.scan().unwrap().changed,
            vec![cert.clone()],
            "key is missing"
        );

        grow(&key);
        grow(&real); // through the link
        assert!(w.scan().unwrap().is_empty());
        assert_eq!(w.scan().unwrap().changed, [cert.clone(), key.clone()]);

        std::fs::remove_file(&real).unwrap(); // a dangling link is absent
        assert_eq!(w.scan().unwrap().removed, [cert]);
    }
}
