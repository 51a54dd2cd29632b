//! The on-disk cache of compiled components: `Runtime::compile` loads the
//! compilation of the same bytes by an engine with the same settings, or
//! compiles and stores it. A cached file is native code that wasmtime maps
//! and runs, so the cache is used only from a directory private to this
//! process's user ([`private_dir`]).

use std::hash::{Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::engine::Runtime;
use super::error::LoadError;

impl Runtime {
    /// Compiles `bytes`, or loads the cached compilation of the same bytes
    /// by an engine with the same settings.
    pub(crate) fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let Some(dir) = self.cache_dir() else {
            return Component::new(&self.engine, bytes)
                .map_err(|e| compile_error(plugin, bytes, e));
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name), in
            // a directory only this user writes (`cache_dir` checked it);
            // wasmtime re-checks the header and refuses an artifact from
            // other settings.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(
                    plugin, path = %path.display(), error = %e,
                    "ignoring unusable cached compilation; recompiling"
                ),
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| compile_error(plugin, bytes, e))?;
        if let Err(e) = write_atomically(dir, &path, &compiled) {
            tracing::warn!(plugin, dir = %dir.display(), error = %e, "cannot write the compilation cache");
        }
        // SAFETY: `compiled` was produced just above by this very engine.
        #[allow(unsafe_code)]
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| compile_error(plugin, bytes, e))
    }

    /// The cache directory, if there is one this process may trust; see
    /// [`private_dir`]. Checked on every compile (a `stat`), warned about
    /// once per directory.
    fn cache_dir(&self) -> Option<&Path> {
        let dir = self.config.cache_dir.as_deref()?;
        match private_dir(dir) {
            Ok(()) => Some(dir),
            Err(problem) => {
                let mut warned = self.cache_warned.lock().unwrap_or_else(|e| e.into_inner());
                if warned.insert(dir.to_path_buf()) {
                    tracing::warn!(
                        path = %dir.display(),
                        "not using the compilation cache: {problem}; plugins are compiled at every load \
                         (make it a directory of this user's, mode 0700, or set TURNOUT_CACHE_DIR)"
                    );
                }
                None
            }
        }
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut h = Sha256::new();
        h.update(bytes);
        h.update(engine_hash.finish().to_le_bytes());
        h.finalize()
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn compile_error(plugin: &str, bytes: &[u8], e: wasmtime::Error) -> LoadError {
    let what = if bytes.starts_with(b"\0asm\x01\0\0\0") {
        "is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2`"
            .to_owned()
    } else if !bytes.starts_with(b"\0asm") {
        "is not WebAssembly".to_owned()
    } else {
        format!("failed to compile: {e:#}")
    };
    LoadError::Compile {
        plugin: plugin.to_owned(),
        message: what,
    }
}

/// Makes sure `dir` is one only this process's user can write: creates it
/// (and missing parents) mode 0700, else requires that it is a directory
/// owned by the effective uid and not writable by group or others. What is
/// in it is mapped as native code, so anyone else able to write there could
/// run code as the proxy. Only the directory itself is checked: someone who
/// can rename a parent can replace it, but not with one owned by this user.
pub(super) fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".to_owned());
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "it is owned by uid {}, not by this process's user (uid {euid})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(format!("it is writable by {who} (mode {mode:04o})"));
    }
    Ok(())
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;

    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    drop(file);
    std::fs::rename(&tmp, path)
}
