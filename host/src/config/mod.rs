//! The config file: one TOML or JSON document (chosen by extension) with
//! SmartProxy's option names and millisecond times, so an existing
//! SmartProxy route list can be pasted in.
//!
//! * `raw` — the document as written: every key optional, unknown keys
//!   rejected with their key path, SmartProxy options Turnout does not
//!   support named as such.
//! * `validate` — ranges, patterns and cross-checks, every problem
//!   collected, into the typed [`Config`].
//!
//! Routes are kept as JSON values: the `routes` plugin owns their meaning
//! and validates them; the host only checks their outline (objects with
//! `match.ports`), which it needs to know what to listen on.

pub mod acme;
pub mod admin;
pub mod cluster;
pub mod document;
pub mod http;
mod raw;
pub mod tls;
mod validate;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use turnout_plugin_sdk::KeepAliveTreatment;
use turnout_plugin_sdk::matching::IpList;

/// What to do when a plugin fails a call (trap, deadline, memory,
/// malformed answer): a config value (`plugins.failurePolicy`), obeyed by
/// the plugin chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Deny at `admit`, reject at `route`, 502 at `request`.
    #[default]
    Closed,
    /// Treat the failure as "no opinion".
    Open,
}

pub use admin::{AdminConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_TOP_IPS};

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json`
    Json,
    /// `.toml`
    Toml,
}

impl Format {
    /// The format a file's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else {
            None
        }
    }
}

/// One problem with a config: where (a key path such as
/// `plugins.order[2]`, or the file for whole-document problems) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Key path, or the file (or `(config)`) for the whole document.
    pub path: String,
    /// What is wrong, with the offending value where there is one.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in a config, in document order where known; shown
/// one `path: message` per line so `turnout check` can print it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Something allowed but probably not meant; `turnout check` and start-up
/// log these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigWarning {
    /// Key path.
    pub path: String,
    /// Why it deserves a second look.
    pub message: String,
}

/// The validated configuration. `Default` is every documented default
/// (`behaviour.md`), which is also what an empty file gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses to listen on (each with every route port).
    pub bind: Vec<IpAddr>,
    /// Worker threads (`workers`); `None`: one per CPU the process may use.
    pub workers: Option<usize>,
    /// SmartProxy routes, for the `routes` plugin; each is an object with
    /// `match.ports`.
    pub routes: Vec<Value>,
    /// SmartProxy's `defaults` object, for the `routes` plugin.
    pub defaults: Option<Value>,
    /// Connection timers.
    pub timeouts: Timeouts,
    /// Keep-alive treatment and socket options.
    pub keep_alive: KeepAlive,
    /// Global connection limits.
    pub limits: Limits,
    /// `false`: reject a TLS resumption that carries no SNI.
    pub allow_session_ticket: bool,
    /// TLS termination: the routes the host terminates, the default
    /// certificate and the handshake timeout.
    pub tls: TlsConfig,
    /// PROXY protocol in and out.
    pub proxy_protocol: ProxyProtocolConfig,
    /// The plugin chain and runtime bounds.
    pub plugins: PluginsConfig,
    /// The admin API; `None` (no `admin` key) means off.
    pub admin: Option<AdminConfig>,
    /// The HTTP proxy's limits and pool (`http`).
    pub http: http::HttpConfig,
    /// ACME (`acme`); `None`: no `certificate: "auto"` is served.
    pub acme: Option<acme::AcmeConfig>,
    /// The shared store (`cluster`); `None`: nothing is shared.
    pub cluster: Option<cluster::ClusterConfig>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

/// TLS termination settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The terminated routes, in config order.
    pub routes: Vec<tls::TlsRoute>,
    /// `defaultCertificate`: served to a client without SNI when a port
    /// has several certificates.
    pub default_certificate: Option<tls::CertSource>,
    /// `tlsHandshakeTimeout` (default 10 s): from the routing decision to
    /// the end of the handshake.
    pub handshake_timeout: Duration,
}

/// Connection timers (SmartProxy names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to receive a complete ClientHello on TLS ports (`initialDataTimeout`).
    pub initial_data: Duration,
    /// Time to connect to the backend (`connectionTimeout`).
    pub connect: Duration,
    /// Socket-level timeout (`socketTimeout`).
    pub socket: Duration,
    /// No bytes either way for this long: close (`inactivityTimeout`).
    pub inactivity: Duration,
    /// Hard cap on a connection's age (`maxConnectionLifetime`).
    pub max_lifetime: Duration,
    /// Lifetime under the `extended` treatment (`extendedKeepAliveLifetime`).
    pub extended_lifetime: Duration,
    /// Drain time on shutdown (`gracefulShutdownTimeout`).
    pub graceful_shutdown: Duration,
}

/// Keep-alive treatment and TCP socket options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// `keepAliveTreatment`.
    pub treatment: KeepAliveTreatment,
    /// `keepAliveInactivityMultiplier` (at least 1).
    pub multiplier: u64,
    /// OS TCP keep-alive on both sockets (`keepAlive`).
    pub tcp_keep_alive: bool,
    /// Idle time before the first TCP keep-alive probe (`keepAliveInitialDelay`).
    pub tcp_keep_alive_delay: Duration,
    /// TCP_NODELAY (`noDelay`).
    pub no_delay: bool,
}

/// Global connection limits; 0 means unlimited where noted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent connections from one client IP, 0 = unlimited (`maxConnectionsPerIP`).
    pub max_connections_per_ip: u32,
    /// New connections from one IP per minute, 0 = unlimited (`connectionRateLimitPerMinute`).
    pub connection_rate_per_minute: u32,
    /// Whole proxy, 0 = unlimited (`maxConnections`).
    pub max_connections: u32,
    /// Bytes buffered before the backend is connected (`maxPendingDataSize`).
    pub max_pending_data: usize,
}

/// PROXY protocol settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolConfig {
    /// Read a PROXY header (`acceptProxyProtocol`).
    pub accept: bool,
    /// The only peers that may send one (`proxyIPs`).
    pub trusted: IpList,
    /// Global default for routes (`sendProxyProtocol`).
    pub send: bool,
}

/// The `plugins` section.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginsConfig {
    /// Directory of `.wasm` plugins, resolved against the config file's
    /// directory when relative.
    pub dir: Option<PathBuf>,
    /// Chain order by name.
    pub order: Vec<String>,
    /// Each plugin's `init` configuration, by name.
    pub config: HashMap<String, Value>,
    /// Failure policies by name (unlisted plugins: `closed`).
    pub failure: HashMap<String, FailurePolicy>,
    /// Deadline for one plugin call (`deadlineMs`).
    pub deadline: Duration,
    /// Memory cap per plugin instance, in bytes (`memoryLimitMb`).
    pub memory_limit: usize,
    /// How often the plugins directory is rescanned (`pollIntervalMs`).
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            workers: None,
            routes: Vec::new(),
            defaults: None,
            timeouts: Timeouts {
                initial_data: Duration::from_millis(120_000),
                connect: Duration::from_millis(30_000),
                socket: Duration::from_millis(3_600_000),
                inactivity: Duration::from_millis(14_400_000),
                max_lifetime: Duration::from_millis(86_400_000),
                extended_lifetime: Duration::from_millis(604_800_000),
                graceful_shutdown: Duration::from_millis(30_000),
            },
            keep_alive: KeepAlive {
                treatment: KeepAliveTreatment::Extended,
                multiplier: 6,
                tcp_keep_alive: true,
                tcp_keep_alive_delay: Duration::from_millis(10_000),
                no_delay: true,
            },
            limits: Limits {
                max_connections_per_ip: 100,
                connection_rate_per_minute: 300,
                max_connections: 10_000,
                max_pending_data: 10 * 1024 * 1024,
            },
            allow_session_ticket: true,
            tls: TlsConfig {
                routes: Vec::new(),
                default_certificate: None,
                handshake_timeout: Duration::from_millis(10_000),
            },
            proxy_protocol: ProxyProtocolConfig {
                accept: false,
                trusted: IpList::default(),
                send: false,
            },
            plugins: PluginsConfig {
                dir: None,
                order: Vec::new(),
                config: HashMap::new(),
                failure: HashMap::new(),
                deadline: Duration::from_millis(10),
                memory_limit: 16 * 1024 * 1024,
                poll_interval: Duration::from_millis(500),
            },
            admin: None,
            http: http::HttpConfig::default(),
            acme: None,
            cluster: None,
            source: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Config {
    /// The global keep-alive options in SmartProxy's names: exactly the keys
    /// the embedded `keepalive` plugin takes.
    pub fn keepalive_plugin_config(&self) -> Value {
        let treatment = match self.keep_alive.treatment {
            KeepAliveTreatment::Standard => "standard",
            KeepAliveTreatment::Extended => "extended",
            KeepAliveTreatment::Immortal => "immortal",
        };
        serde_json::json!({
            "inactivityTimeout": millis(self.timeouts.inactivity),
            "keepAliveTreatment": treatment,
            "keepAliveInactivityMultiplier": self.keep_alive.multiplier,
            "extendedKeepAliveLifetime": millis(self.timeouts.extended_lifetime),
            "maxConnectionLifetime": millis(self.timeouts.max_lifetime),
            "keepAlive": self.keep_alive.tcp_keep_alive,
            "keepAliveInitialDelay": millis(self.keep_alive.tcp_keep_alive_delay),
            "noDelay": self.keep_alive.no_delay,
        })
    }

    /// Settings that are valid but probably not meant.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        if let Some(addr) = self.admin.as_ref().map(|a| a.listen)
            && !addr.ip().is_loopback()
        {
            out.push(ConfigWarning {
                path: "admin.listen".into(),
                message: format!(
                    "{addr} is not a loopback address: anyone who can reach it can read \
                     metrics, client addresses and the live connection list"
                ),
            });
        }
        if let Some(a) = &self.admin {
            if a.token
                .as_ref()
                .is_some_and(|t| t.as_bytes().len() < admin::SHORT_TOKEN)
            {
                out.push(ConfigWarning {
                    path: "admin.token".into(),
                    message: format!(
                        "shorter than {} characters: it guards changes to every route; use a long random one (`openssl rand -hex 32`)",
                        admin::SHORT_TOKEN
                    ),
                });
            }
            if a.persist && a.token.is_none() {
                out.push(ConfigWarning {
                    path: "admin.persist".into(),
                    message: "has no effect while admin.token is not set (the API cannot change the configuration)".into(),
                });
            }
        }
        if !self.proxy_protocol.accept && !self.proxy_protocol.trusted.is_empty() {
            out.push(ConfigWarning {
                path: "proxyIPs".into(),
                message: "has no effect while acceptProxyProtocol is false".into(),
            });
        }
        for t in &self.tls.routes {
            let i = t.index;
            if t.certificate.is_none() && !t.acme {
                out.push(ConfigWarning {
                    path: format!("routes[{i}].action.tls.certificate"),
                    message: "missing: handshakes get a certificate only when another route's covers the name".into(),
                });
            }
            if t.acme
                && t.domains.iter().all(|d| d.contains('*'))
                && !self.acme.as_ref().is_some_and(|a| a.on_demand)
            {
                out.push(ConfigWarning {
                    path: format!("routes[{i}].match.domains"),
                    message: "\"auto\" orders certificates for listed names, not wildcards: \
                              this route gets none unless acme.onDemand is true"
                        .into(),
                });
            }
        }
        out
    }
}

/// Reads and validates the config file at `path`; its extension picks the
/// format, and a relative `plugins.dir` is taken from the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_document(path).map(|(config, _)| config)
}

/// [`load`], with the document as written (as JSON, whatever the format):
/// what the admin API shows and replaces.
pub fn load_document(path: &Path) -> Result<(Config, Value), ConfigErrors> {
    let shown = path.display().to_string();
    let Some(format) = Format::from_path(path) else {
        return Err(ConfigErrors(vec![ConfigError::new(
            shown,
            "unknown config format: the file name must end in .json or .toml",
        )]));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![ConfigError::new(&shown, format!("cannot read: {e}"))]))?;
    let (mut config, document) = parse_inner(&text, format, &shown, path.parent())?;
    config.source = Some(path.to_path_buf());
    Ok((config, document))
}

/// Validates a document that did not come from a file (the admin API's),
/// as [`load`] would the file at `source`: relative paths are taken from
/// its directory. `name` names the document in errors without a key path.
pub fn from_document(
    document: &Value,
    source: Option<&Path>,
    name: &str,
) -> Result<Config, ConfigErrors> {
    // Through the text, so the same two passes run (and the same errors
    // come out) as for a file.
    let text = serde_json::to_string_pretty(document)
        .map_err(|e| ConfigErrors(vec![ConfigError::new(name, e.to_string())]))?;
    let (mut config, _) = parse_inner(&text, Format::Json, name, source.and_then(Path::parent))?;
    config.source = source.map(Path::to_path_buf);
    Ok(config)
}

/// Validates config text. A relative `plugins.dir` stays relative (to the
/// working directory); use [`load`] to resolve it against a file.
pub fn parse(text: &str, format: Format) -> Result<Config, ConfigErrors> {
    parse_inner(text, format, "(config)", None).map(|(config, _)| config)
}

/// [`parse`], with the document as written.
pub fn parse_with_document(text: &str, format: Format) -> Result<(Config, Value), ConfigErrors> {
    parse_inner(text, format, "(config)", None)
}

/// `doc` names the whole document in errors that have no key path.
fn parse_inner(
    text: &str,
    format: Format,
    doc: &str,
    base_dir: Option<&Path>,
) -> Result<(Config, Value), ConfigErrors> {
    let (raw, document, mut errors) = raw::read(text, format, doc).map_err(ConfigErrors)?;
    match validate::validate(raw, base_dir) {
        Ok(config) if errors.is_empty() => Ok((config, document)),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/configs/smartproxy.json"
    );

    #[test]
    fn defaults_match_behaviour_md() {
        // behaviour.md's table of global options, written out.
        let documented = r#"{
            "initialDataTimeout": 120000, "connectionTimeout": 30000,
            "socketTimeout": 3600000, "inactivityTimeout": 14400000,
            "maxConnectionLifetime": 86400000, "keepAliveTreatment": "extended",
            "keepAliveInactivityMultiplier": 6, "extendedKeepAliveLifetime": 604800000,
            "keepAlive": true, "keepAliveInitialDelay": 10000, "noDelay": true,
            "maxConnectionsPerIP": 100, "connectionRateLimitPerMinute": 300,
            "maxConnections": 10000, "gracefulShutdownTimeout": 30000,
            "maxPendingDataSize": 10485760, "allowSessionTicket": true,
            "acceptProxyProtocol": false, "proxyIPs": [], "sendProxyProtocol": false,
            "bind": ["0.0.0.0"],
            "plugins": { "deadlineMs": 10, "memoryLimitMb": 16, "pollIntervalMs": 500 }
        }"#;
        let c = Config::default();
        assert_eq!(parse(documented, Format::Json), Ok(c.clone()));
        assert_eq!(c.admin, None);
        // An empty document is the defaults, in both formats.
        assert_eq!(parse("{}", Format::Json), Ok(c.clone()));
        assert_eq!(parse("", Format::Toml), Ok(c));
    }

    #[test]
    fn load_resolves_a_relative_plugins_dir_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("turnout.toml");
        std::fs::write(&file, "[plugins]\ndir = \"./wasm\"\n").unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.plugins.dir, Some(dir.path().join("./wasm")));
        assert_eq!(c.source.as_deref(), Some(file.as_path()));

        std::fs::write(&file, "[plugins]\ndir = \"/abs/wasm\"\n").unwrap();
        assert_eq!(load(&file).unwrap().plugins.dir, Some("/abs/wasm".into()));
    }

    #[test]
    fn load_refuses_an_unknown_extension_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("turnout.yaml");
        std::fs::write(&file, "{}").unwrap();
        let err = load(&file).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, file.display().to_string());
        assert!(err.to_string().contains(".json or .toml"), "{err}");

        let missing = dir.path().join("absent.json");
        let err = load(&missing).unwrap_err();
        assert!(
            err.to_string().contains("absent.json: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn the_smartproxy_example_loads_unchanged() {
        let c = load(Path::new(EXAMPLE)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.routes.len(), 4);
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(Some(&Value::Array(c.routes.clone())), doc.get("routes"));
        // Its terminate route serves HTTP (the default): nothing to warn of.
        let w = c.warnings();
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn keepalive_plugin_config_uses_smartproxy_names() {
        let mut c = Config::default();
        c.keep_alive.treatment = KeepAliveTreatment::Standard;
        c.keep_alive.no_delay = false;
        c.timeouts.inactivity = Duration::from_millis(5_000);
        let v = c.keepalive_plugin_config();
        assert_eq!(v.as_object().map(|o| o.len()), Some(8), "{v}");
        assert_eq!(v["keepAliveTreatment"], "standard");
        // Each key is also a top-level option meaning the same thing, so
        // reading them back as a config gives these settings again.
        assert_eq!(parse(&v.to_string(), Format::Json), Ok(c));
    }

    #[test]
    fn warnings_flag_routes_that_need_tls_termination() {
        let c = parse(
            r#"{"routes": [
                {"match": {"ports": 443}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}], "tls": {"mode": "passthrough"}}},
                {"match": {"ports": 443}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}], "tls": {"mode": "terminate"}}}
            ]}"#,
            Format::Json,
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "routes[1].action.tls.certificate");
    }

    #[test]
    fn warnings_flag_a_public_admin_address() {
        let c = parse(r#"{"admin": {"listen": "0.0.0.0:9900"}}"#, Format::Json).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].path, "admin.listen");
        let c = parse(r#"{"admin": {}}"#, Format::Json).unwrap();
        assert_eq!(
            c.admin.as_ref().map(|a| (a.listen, a.top_ips)),
            Some((DEFAULT_ADMIN_LISTEN, 10))
        );
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn warnings_flag_a_short_token_and_persist_without_one() {
        let c = parse(
            r#"{"admin": {"token": "short", "persist": false}}"#,
            Format::Json,
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "admin.token");
        let c = parse(r#"{"admin": {"persist": true}}"#, Format::Json).unwrap();
        assert_eq!(c.warnings()[0].path, "admin.persist");
    }

    #[test]
    fn errors_display_one_per_line() {
        let e = ConfigErrors(vec![
            ConfigError::new("a", "x"),
            ConfigError::new("b.c", "y"),
        ]);
        assert_eq!(e.to_string(), "a: x\nb.c: y");
    }
}
