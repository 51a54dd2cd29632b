//! Certificates for terminated routes, as `run` and `check` need them:
//! loaded at start and by every reconfigure (a broken one stops the start,
//! or refuses the reconfigure, listing every problem), and re-loaded when a
//! certificate or key file changes on disk — a broken new file is logged
//! and the certificates in use keep serving.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::TlsConfig;
use crate::proxy::Proxy;
use crate::tls::Terminator;
use crate::tls::certs::{CertError, files_of};
use crate::watch::StableFiles;

/// How often certificate files are looked at; a change is picked up after
/// two looks agree (the file is no longer being written).
const POLL: Duration = Duration::from_millis(500);

/// Builds the terminator for `config`; `Err` lists every certificate that
/// could not be loaded. Warnings (expired, a domain not covered) are logged.
pub fn load(config: &TlsConfig) -> Result<Terminator, Vec<CertError>> {
    let (terminator, report) = Terminator::new(config);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if report.errors.is_empty() {
        Ok(terminator)
    } else {
        Err(report.errors)
    }
}

/// Every file the certificates of `config` are read from.
fn files(config: &TlsConfig) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = config
        .routes
        .iter()
        .filter_map(|r| r.certificate.as_ref())
        .chain(&config.default_certificate)
        .flat_map(files_of)
        .map(std::path::Path::to_path_buf)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The TLS config in force, shared by the config reloader (which replaces
/// it) and the file watcher (which re-reads its files). Every load happens
/// under its lock, so a watcher load of the previous config can never land
/// after a reload's and undo it.
#[derive(Debug, Clone)]
pub struct Current(Arc<Mutex<TlsConfig>>);

impl Current {
    /// Starts with `config`.
    pub fn new(config: TlsConfig) -> Self {
        Self(Arc::new(Mutex::new(config)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TlsConfig> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconfigure: `terminator`, loaded from `config`, serves new
    /// connections, and the watcher follows `config`'s files from now on.
    pub fn replace(&self, proxy: &Proxy, config: TlsConfig, terminator: Terminator) {
        let mut current = self.lock();
        proxy.metrics().certificate_reload(true);
        proxy.set_tls(terminator);
        *current = config;
    }

    /// The files changed: the config in force is loaded again.
    fn reread(&self, proxy: &Proxy, why: &str) {
        let current = self.lock();
        apply(proxy, &current, why);
    }
}

fn apply(proxy: &Proxy, config: &TlsConfig, why: &str) {
    let loaded = load(config);
    proxy.metrics().certificate_reload(loaded.is_ok());
    match loaded {
        Ok(t) => {
            let n = t.store().certs().len();
            proxy.set_tls(t);
            if n > 0 {
                tracing::info!(certificates = n, "{why}: certificates loaded");
            }
        }
        Err(errors) => tracing::error!(
            "{why}: certificates not reloaded, the ones in use keep serving: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Watches the certificate files of the config in force and reloads the
/// certificates when one changes. Runs until aborted.
pub async fn watch(proxy: Arc<Proxy>, current: Current) {
    let mut watched = files(&current.lock());
    let mut scanner = StableFiles::files(watched.clone());
    // What is there now is what was loaded at start.
    let _ = scanner.scan_now();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = files(&current.lock());
        if now != watched {
            // A config reload named other files. No baseline is taken: the
            // files count as changed once stable, so one still being
            // written when the reload read it is loaded again when done.
            watched = now;
            scanner = StableFiles::files(watched.clone());
        }
        let changes = match scanner.scan() {
            Ok(c) if !c.is_empty() => c,
            _ => continue,
        };
        let names: Vec<String> = changes
            .changed
            .iter()
            .chain(&changes.removed)
            .map(|p| p.display().to_string())
            .collect();
        let (proxy, current) = (proxy.clone(), current.clone());
        let why = format!("{} changed", names.join(", "));
        // Reading and parsing PEM is file I/O: off the control runtime.
        let _ = tokio::task::spawn_blocking(move || current.reread(&proxy, &why)).await;
    }
}
