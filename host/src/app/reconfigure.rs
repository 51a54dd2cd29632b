//! Changing the running configuration without a restart. SIGHUP reads the
//! file again; the admin API sends a new document or route list. One task
//! applies every change in turn, all or nothing: the document is validated
//! as `turnout check` does it, the certificates are loaded, every plugin
//! takes its new config and every new port is bound (and, with
//! `admin.persist`, the file written) before anything changes. Then new
//! connections see the new configuration, live ones keep theirs, new ports
//! accept and removed ones stop accepting.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::{certs, listen_ports, plugin_settings};
use crate::admin::AdminState;
use crate::admin::config::{Applied, Change, ConfigRequest, ConfigView, Refusal};
use crate::config::document::{self, RouteChanges};
use crate::config::{self, Config, ConfigError, Format};
use crate::metrics::{ChangeResult, ChangeSource};
use crate::plugins::{LoadError, PluginSet, Refused};
use crate::proxy::{ListenerPlan, Proxy, Settings};
use crate::tls::Terminator;

/// The configuration in force and what applies changes to it.
pub(super) struct Reconfigure {
    pub(super) proxy: Arc<Proxy>,
    pub(super) set: Arc<PluginSet>,
    pub(super) certs: certs::Current,
    pub(super) admin: Option<Arc<AdminState>>,
    /// The config file.
    pub(super) path: PathBuf,
    pub(super) config: Config,
    /// `config` as written (secrets included).
    pub(super) document: Value,
    /// `acme.port` as started: its listener stays until a restart.
    pub(super) acme_port: Option<u16>,
    /// Bumped by every change applied; the API's `ETag`.
    pub(super) version: u64,
}

impl Reconfigure {
    /// Applies SIGHUPs and admin API requests, one at a time, until both
    /// channels close.
    pub(super) async fn run(
        mut self,
        mut signals: mpsc::Receiver<()>,
        mut api: mpsc::Receiver<ConfigRequest>,
    ) {
        loop {
            tokio::select! {
                Some(()) = signals.recv() => self.reload_file().await,
                Some(request) = api.recv() => self.serve(request).await,
                else => return,
            }
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    async fn reload_file(&mut self) {
        let path = self.path.display().to_string();
        let outcome = match config::load_document(&self.path) {
            Err(e) => {
                self.count(ChangeSource::Signal, ChangeResult::Refused);
                Err(Refusal::Invalid(e.0))
            }
            Ok((config, document)) => {
                self.apply(config, document, ChangeSource::Signal, false)
                    .await
            }
        };
        match outcome {
            Ok(_) => {}
            // One line, so log pipelines keep the problems with the event.
            Err(refusal) => tracing::error!(
                "config reload of {path} refused; the running config stays: {}",
                describe(&refusal)
            ),
        }
    }

    async fn serve(&mut self, request: ConfigRequest) {
        match request {
            ConfigRequest::Get(reply) => {
                let _ = reply.send(ConfigView {
                    document: document::redact(&self.document),
                    version: self.etag(),
                });
            }
            ConfigRequest::Replace {
                change,
                if_match,
                reply,
            } => {
                let outcome = self.replace(change, if_match).await;
                if let Err(refusal) = &outcome {
                    tracing::warn!(
                        "admin API: configuration change refused; nothing changed: {}",
                        describe(refusal)
                    );
                }
                let _ = reply.send(outcome);
            }
        }
    }

    async fn replace(
        &mut self,
        change: Change,
        if_match: Option<String>,
    ) -> Result<Applied, Refusal> {
        if let Some(tag) = if_match.as_deref().map(str::trim)
            && tag != "*"
            && tag != self.etag()
        {
            self.count(ChangeSource::Api, ChangeResult::Conflict);
            return Err(Refusal::Conflict {
                version: self.etag(),
            });
        }
        let mut doc = match change {
            Change::Document(doc) => doc,
            Change::Routes(routes) => {
                let mut doc = self.document.clone();
                if let Value::Object(o) = &mut doc {
                    o.insert("routes".into(), Value::Array(routes));
                }
                doc
            }
        };
        let refused = |this: &Self, problems| {
            this.count(ChangeSource::Api, ChangeResult::Refused);
            Err(Refusal::Invalid(problems))
        };
        let problems = document::restore(&mut doc, &self.document);
        if !problems.is_empty() {
            return refused(self, problems);
        }
        let config = match config::from_document(&doc, Some(&self.path), "body") {
            Ok(c) => c,
            Err(e) => return refused(self, e.0),
        };
        let persist = config.admin.as_ref().is_some_and(|a| a.persist);
        self.apply(config, doc, ChangeSource::Api, persist).await
    }

    /// Everything that can fail first, then the switch; counts and logs
    /// the outcome.
    async fn apply(
        &mut self,
        config: Config,
        doc: Value,
        source: ChangeSource,
        persist: bool,
    ) -> Result<Applied, Refusal> {
        let outcome = if self.proxy.is_draining() {
            Err(Refusal::Unavailable(
                "the proxy is draining (SIGTERM): it takes no configuration changes".into(),
            ))
        } else {
            self.prepare_and_switch(config, doc, persist).await
        };
        let result = if outcome.is_ok() {
            ChangeResult::Applied
        } else {
            ChangeResult::Refused
        };
        self.count(source, result);
        if let Ok(applied) = &outcome {
            log_applied(source, &self.path, applied);
        }
        outcome
    }

    async fn prepare_and_switch(
        &mut self,
        config: Config,
        doc: Value,
        persist: bool,
    ) -> Result<Applied, Refusal> {
        // Reading certificate files and compiling plugins take a while: on
        // this runtime they would stall signals, the admin API and the
        // sampler, so they run on a blocking thread.
        let tls = config.tls.clone();
        let terminator = blocking(move || certs::load(&tls))
            .await?
            .map_err(|errors| {
                Refusal::Invalid(
                    errors
                        .into_iter()
                        .map(|e| ConfigError::new(e.at, e.message))
                        .collect(),
                )
            })?;
        let plan = self.reconfigure_plugins(&config, &doc, persist).await?;
        Ok(self.switch(config, doc, terminator, plan, persist).await)
    }

    /// Every plugin takes its new config; then, before the new chain
    /// serves, the ports it declares are bound and (with `persist`) the
    /// file is written — either failing leaves everything as it was.
    async fn reconfigure_plugins(
        &self,
        config: &Config,
        doc: &Value,
        persist: bool,
    ) -> Result<ListenerPlan, Refusal> {
        let settings = plugin_settings(config, None);
        let (set, proxy) = (self.set.clone(), self.proxy.clone());
        let (bind, acme_port) = (config.bind.clone(), self.acme_port);
        let write = persist.then(|| (self.path.clone(), doc.clone()));
        let outcome = blocking(move || {
            set.reconfigure_then(settings, |chain| {
                let ports = listen_ports(chain, acme_port);
                let plan = proxy
                    .plan_listeners(&bind, &ports)
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                if let Some((path, doc)) = write {
                    persist_to(&path, &doc)?;
                }
                Ok(plan)
            })
        })
        .await?;
        outcome.map_err(|e| match e {
            Refused::Plugins(errors) => Refusal::Invalid(plugin_problems(errors, config)),
            Refused::Gate(refusal) => refusal,
        })
    }

    /// Puts the prepared change in force. Nothing here can fail.
    async fn switch(
        &mut self,
        config: Config,
        doc: Value,
        terminator: Terminator,
        plan: ListenerPlan,
        persisted: bool,
    ) -> Applied {
        self.proxy.reload(Settings::from_config(&config));
        self.certs
            .replace(&self.proxy, config.tls.clone(), terminator);
        if let Some(acme) = self.proxy.acme() {
            acme.manage(&crate::acme::listed_names(&config.tls));
        }
        let listeners = self.proxy.apply_listeners(plan).await;
        if let Some(admin) = &self.admin {
            admin.set_token(config.admin.as_ref().and_then(|a| a.token.clone()));
        }
        let restart_needed = restart_needed(&self.config, &config);
        let routes = |d: &Value| {
            d.get("routes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let routes = RouteChanges::between(&routes(&self.document), &routes(&doc));
        self.version += 1;
        self.config = config;
        self.document = doc;
        Applied {
            version: self.etag(),
            routes,
            listeners,
            restart_needed,
            persisted,
        }
    }

    fn count(&self, source: ChangeSource, result: ChangeResult) {
        self.proxy.metrics().config_change(source, result);
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Refusal::Failed(format!("the reconfigure failed: {e}")))
}

/// Writes the document back to the config file, in the file's format.
fn persist_to(path: &std::path::Path, doc: &Value) -> Result<(), Refusal> {
    let format = Format::from_path(path).unwrap_or(Format::Json);
    // The body's fault (a null has no TOML form): a 400, not a 500.
    let text = document::to_text(doc, format).map_err(|e| {
        Refusal::Invalid(vec![ConfigError::new(
            "body",
            format!("admin.persist: {} {e}", path.display()),
        )])
    })?;
    // A config file that is a symlink is written where it points, so the
    // link stays a link.
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let path = target.as_path();
    document::write_atomic(path, &text, document::mode_of(path, 0o600)).map_err(|e| {
        Refusal::Failed(format!(
            "admin.persist: cannot write {}: {e}",
            path.display()
        ))
    })
}

/// Settings a reconfigure records but that only a restart puts in force.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let admin = |c: &Config| c.admin.as_ref().map(|a| (a.listen, a.top_ips));
    [
        ("workers", old.workers != new.workers),
        ("plugins.dir", old.plugins.dir != new.plugins.dir),
        (
            "plugins.deadlineMs",
            old.plugins.deadline != new.plugins.deadline,
        ),
        (
            "plugins.memoryLimitMb",
            old.plugins.memory_limit != new.plugins.memory_limit,
        ),
        ("admin.listen/admin.topIPs", admin(old) != admin(new)),
        ("acme", old.acme != new.acme),
        ("cluster", old.cluster != new.cluster),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key)
    .collect()
}

/// Plugin load errors as config problems. A plugin's init error lists its
/// problems one `key.path: message` per line (the SDK's config helpers),
/// relative to the config it was given: the document itself for the
/// embedded plugins (`routes[2].match.ports`), `plugins.config.NAME` when
/// that is set. Lines without a path are named by the plugin.
fn plugin_problems(errors: Vec<LoadError>, config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for e in errors {
        let plugin = e.plugin().unwrap_or("plugins").to_owned();
        let base = if config.plugins.config.contains_key(&plugin) {
            format!("plugins.config.{plugin}.")
        } else {
            String::new()
        };
        let lines: Vec<String> = match &e {
            LoadError::Init { failure, .. } => failure.message.lines().map(str::to_owned).collect(),
            other => vec![other.to_string()],
        };
        for line in lines {
            let keyed = line.split_once(": ").filter(|(path, _)| {
                !path.is_empty()
                    && path
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._[]-".contains(c))
            });
            out.push(match keyed {
                Some((path, message)) => ConfigError::new(
                    format!("{base}{path}"),
                    format!("{message} (plugin {plugin:?})"),
                ),
                None => ConfigError::new(format!("plugins.config.{plugin}"), line),
            });
        }
    }
    out
}

fn describe(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Invalid(problems) => problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        Refusal::Conflict { version } => {
            format!("If-Match is not the version in force ({version})")
        }
        Refusal::Failed(message) | Refusal::Unavailable(message) => message.clone(),
    }
}

fn log_applied(source: ChangeSource, path: &std::path::Path, a: &Applied) {
    let from = match source {
        ChangeSource::Signal => "SIGHUP",
        ChangeSource::Api => "admin API",
    };
    let addrs = |l: &[std::net::SocketAddr]| {
        l.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::info!(
        file = %path.display(),
        version = %a.version,
        routes_added = %a.routes.added.join(","),
        routes_removed = %a.routes.removed.join(","),
        routes_changed = %a.routes.changed.join(","),
        listeners_added = %addrs(&a.listeners.added),
        listeners_removed = %addrs(&a.listeners.removed),
        persisted = a.persisted,
        "configuration changed ({from})"
    );
    if !a.restart_needed.is_empty() {
        tracing::warn!(
            "configuration changed ({from}): {} take effect after a restart",
            a.restart_needed.join(", ")
        );
    }
}
