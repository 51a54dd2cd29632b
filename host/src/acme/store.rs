//! Where ACME state lives: the account's credentials and, per name, the
//! certificate chain with its key. Behind [`Store`] so that several
//! instances can share one (`cluster::RedisAcmeStore`, which also claims
//! each order for one instance and shares HTTP-01 answers); the disk one
//! is [`DiskStore`]:
//!
//! ```text
//! <certificateStore>/            0700
//!   account.json                 0600  { "directory": …, "credentials": … }
//!   certificates/<name>.pem      0600  private key, then the chain
//! ```
//!
//! Every write goes to a temporary file in the same directory, is synced,
//! then renamed over the old one: a crash leaves the old file or the new
//! one, never half of either.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A store operation that failed, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    /// The file or directory.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

impl StoreError {
    fn io(path: &Path, e: &std::io::Error) -> Self {
        Self {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// ACME state, by key.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The account's stored JSON, if any.
    fn account(&self) -> Result<Option<String>, StoreError>;
    /// Replaces the account's JSON.
    fn save_account(&self, json: &str) -> Result<(), StoreError>;
    /// `name`'s key and chain (PEM), if any.
    fn certificate(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Replaces `name`'s key and chain.
    fn save_certificate(&self, name: &str, pem: &str) -> Result<(), StoreError>;
    /// Every name with a stored certificate.
    fn names(&self) -> Result<Vec<String>, StoreError>;
    /// Where it is, for messages.
    fn describe(&self, name: Option<&str>) -> String;
    /// Claims the order of `name` for `ttl`, so that of several instances
    /// sharing the store exactly one orders it: [`Claim::Theirs`] while
    /// another holds the claim. A store that is not shared (or cannot be
    /// reached) answers [`Claim::Ours`].
    fn claim(&self, _name: &str, _ttl: std::time::Duration) -> Claim {
        Claim::Ours
    }
    /// Gives up a claim this process holds.
    fn release(&self, _name: &str) {}
    /// Where HTTP-01 answers are shared with other instances, if anywhere.
    fn shared_challenges(&self) -> Option<std::sync::Arc<dyn super::SharedChallenges>> {
        None
    }
}

/// Who orders a name now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This process: it orders, then releases.
    Ours,
    /// Another instance: this one waits for the certificate in the store.
    Theirs,
}

/// The store in a directory.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// Opens (creating, 0700) `dir` and its `certificates/`. A directory
    /// that others may read is tightened, with a warning: it holds keys.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for d in [dir.to_owned(), dir.join("certificates")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| StoreError::io(&d, &e))?;
            let meta = fs::metadata(&d).map_err(|e| StoreError::io(&d, &e))?;
            if !meta.is_dir() {
                return Err(StoreError {
                    path: d.display().to_string(),
                    message: "is not a directory".into(),
                });
            }
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %d.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the ACME store holds private keys: its mode is set to 0700");
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                    .map_err(|e| StoreError::io(&d, &e))?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn cert_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        // Names are DNS names: nothing in them can leave the directory.
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(StoreError {
                path: self.dir.display().to_string(),
                message: format!("{name:?} is not a name a certificate is stored under"),
            });
        }
        Ok(self.dir.join("certificates").join(format!("{name}.pem")))
    }
}

/// Reads `path`; `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, &e)),
    }
}

/// Writes `text` to `path` atomically, mode 0600.
fn write(path: &Path, text: &str) -> Result<(), StoreError> {
    crate::config::document::write_atomic(path, text, 0o600).map_err(|e| StoreError::io(path, &e))
}

impl Store for DiskStore {
    fn account(&self) -> Result<Option<String>, StoreError> {
        read(&self.dir.join("account.json"))
    }

    fn save_account(&self, json: &str) -> Result<(), StoreError> {
        write(&self.dir.join("account.json"), json)
    }

    fn certificate(&self, name: &str) -> Result<Option<String>, StoreError> {
        read(&self.cert_path(name)?)
    }

    fn save_certificate(&self, name: &str, pem: &str) -> Result<(), StoreError> {
        write(&self.cert_path(name)?, pem)
    }

    fn names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir.join("certificates");
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, &e))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".pem")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn describe(&self, name: Option<&str>) -> String {
        match name.map(|n| self.cert_path(n)) {
            Some(Ok(p)) => p.display().to_string(),
            _ => self.dir.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("acme");
        let s = DiskStore::open(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&dir), mode(&dir.join("certificates"))),
            (0o700, 0o700)
        );
        assert_eq!(s.certificate("a.example.com"), Ok(None));
        s.save_certificate("a.example.com", "one").unwrap();
        s.save_certificate("a.example.com", "two").unwrap();
        assert_eq!(s.certificate("a.example.com"), Ok(Some("two".into())));
        assert_eq!(mode(&dir.join("certificates/a.example.com.pem")), 0o600);
        s.save_account("{}").unwrap();
        assert_eq!(mode(&dir.join("account.json")), 0o600);
        assert_eq!(s.names(), Ok(vec!["a.example.com".to_owned()]));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.join("certificates")).unwrap().count(), 1);
    }

    #[test]
    fn an_open_directory_is_tightened_and_names_cannot_escape() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = DiskStore::open(tmp.path()).unwrap();
        assert_eq!(
            fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for bad in ["../x", "a/b", "", ".hidden"] {
            assert!(s.save_certificate(bad, "x").is_err(), "{bad:?}");
        }
    }
}
