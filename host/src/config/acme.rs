//! The top-level `acme` object (SmartProxy's): where certificates for
//! routes with `certificate: "auto"` come from, where they are kept, and
//! when they are renewed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::kind;

use super::validate::Problems;

/// Let's Encrypt's production directory (`useProduction: true`).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (the default).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the ACME server is to check that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `http://<name>:<port>/.well-known/acme-challenge/<token>`, answered
    /// by the host on `acme.port` (and on every HTTP port).
    Http01,
    /// A handshake offering only ALPN `acme-tls/1` on the route's TLS
    /// port, answered with a challenge certificate.
    TlsAlpn01,
}

/// `acme`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// `email` / `accountEmail`: the account's contact.
    pub email: Option<String>,
    /// `directoryUrl`, else Let's Encrypt's by `useProduction`.
    pub directory_url: String,
    /// `directoryCa`: a PEM file trusted for the directory's HTTPS (a
    /// private CA, pebble); `None`: the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// `port` (80): where HTTP-01 challenges are answered; the host
    /// listens there even when no route does.
    pub port: u16,
    /// `challenge` (`"http-01"`).
    pub challenge: Challenge,
    /// `renewThresholdDays` (30): renew this long before expiry (at most a
    /// third of a certificate's life, so a short-lived one is not renewed
    /// in a loop).
    pub renew_threshold: Duration,
    /// `renewCheckIntervalHours` (24): how often expiry is checked (with
    /// ±10 % jitter).
    pub renew_check_interval: Duration,
    /// `autoRenew` (true).
    pub auto_renew: bool,
    /// `certificateStore` (`./certs`, from the config file's directory):
    /// account key, certificates and keys.
    pub store: PathBuf,
    /// `onDemand` (false): a handshake for a name with no certificate on an
    /// `auto` route orders one when a plugin's `approve-certificate` says
    /// yes.
    pub on_demand: bool,
    /// `onDemandTimeout` (15 000 ms): how long that first handshake waits.
    pub on_demand_timeout: Duration,
}

impl AcmeConfig {
    fn defaults(base_dir: Option<&Path>) -> Self {
        Self {
            email: None,
            directory_url: LETS_ENCRYPT_STAGING.to_owned(),
            directory_ca: None,
            port: 80,
            challenge: Challenge::Http01,
            renew_threshold: Duration::from_secs(30 * 86_400),
            renew_check_interval: Duration::from_secs(24 * 3_600),
            auto_renew: true,
            store: relative(base_dir, Path::new("certs")),
            on_demand: false,
            on_demand_timeout: Duration::from_millis(15_000),
        }
    }
}

/// SmartProxy `acme` keys Turnout does not implement.
const UNSUPPORTED: &[&str] = &["environment", "skipConfiguredCerts", "routeForwards"];
const KNOWN: &[&str] = &[
    "enabled",
    "email",
    "accountEmail",
    "useProduction",
    "port",
    "challenge",
    "renewThresholdDays",
    "renewCheckIntervalHours",
    "autoRenew",
    "certificateStore",
    "directoryUrl",
    "directoryCa",
    "onDemand",
    "onDemandTimeout",
];

/// Reads `acme`; `None` when it is absent or `enabled: false`. Relative
/// paths are taken from `base_dir` (the config file's directory).
pub(super) fn check(v: &Value, base_dir: Option<&Path>, p: &mut Problems) -> Option<AcmeConfig> {
    let Value::Object(o) = v else {
        p.add("acme", format!("must be an object, got {}", kind(v)));
        return None;
    };
    for key in o.keys() {
        if UNSUPPORTED.contains(&key.as_str()) {
            p.add(format!("acme.{key}"), "not supported by Turnout");
        } else if !KNOWN.contains(&key.as_str()) {
            p.add(
                format!("acme.{key}"),
                format!("unknown key (expected one of {})", KNOWN.join(", ")),
            );
        }
    }
    if bool_key(o, "enabled", p) == Some(false) {
        return None;
    }
    let mut c = AcmeConfig::defaults(base_dir);
    c.email = email(o, p);
    if bool_key(o, "useProduction", p) == Some(true) {
        c.directory_url = LETS_ENCRYPT.to_owned();
    }
    if let Some(url) = string_key(o, "directoryUrl", p) {
        if url.starts_with("https://") {
            c.directory_url = url.to_owned();
        } else {
            p.add(
                "acme.directoryUrl",
                format!("must be an https:// URL, got {url:?}"),
            );
        }
    }
    c.directory_ca = string_key(o, "directoryCa", p).map(|s| relative(base_dir, Path::new(s)));
    if let Some(port) = number(o, "port", p, 1.0, 65_535.0) {
        c.port = port as u16;
    }
    match string_key(o, "challenge", p) {
        None | Some("http-01") => {}
        Some("tls-alpn-01") => c.challenge = Challenge::TlsAlpn01,
        Some(other) => p.add(
            "acme.challenge",
            format!("{other:?} is not one of \"http-01\", \"tls-alpn-01\""),
        ),
    }
    // Fractions are allowed: a test (or a short-lived private CA) renews
    // in seconds.
    if let Some(days) = number(o, "renewThresholdDays", p, 0.0, 3_650.0) {
        c.renew_threshold = Duration::from_secs_f64(days * 86_400.0);
    }
    if let Some(hours) = number(o, "renewCheckIntervalHours", p, 1e-4, 8_760.0) {
        c.renew_check_interval = Duration::from_secs_f64(hours * 3_600.0);
    }
    if let Some(b) = bool_key(o, "autoRenew", p) {
        c.auto_renew = b;
    }
    if let Some(b) = bool_key(o, "onDemand", p) {
        c.on_demand = b;
    }
    if let Some(ms) = number(o, "onDemandTimeout", p, 1.0, 600_000.0) {
        c.on_demand_timeout = Duration::from_millis(ms as u64);
    }
    match string_key(o, "certificateStore", p) {
        Some("") => p.add("acme.certificateStore", "must not be empty"),
        Some(dir) => c.store = relative(base_dir, Path::new(dir)),
        None => {}
    }
    Some(c)
}

fn relative(base_dir: Option<&Path>, path: &Path) -> PathBuf {
    match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_owned(),
    }
}

fn email(o: &Map<String, Value>, p: &mut Problems) -> Option<String> {
    let (a, b) = (string_key(o, "email", p), string_key(o, "accountEmail", p));
    if let (Some(a), Some(b)) = (a, b)
        && a != b
    {
        p.add(
            "acme.accountEmail",
            format!("{b:?} differs from acme.email {a:?} (it is an alias: give one)"),
        );
    }
    let e = a.or(b)?;
    let at = if a.is_some() {
        "acme.email"
    } else {
        "acme.accountEmail"
    };
    let ok = e.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty()
            && host.contains('.')
            && !e.contains(|c: char| c.is_whitespace() || c == ',')
    });
    if !ok {
        p.add(at, format!("{e:?} is not an email address"));
        return None;
    }
    Some(e.to_owned())
}

fn string_key<'a>(o: &'a Map<String, Value>, key: &str, p: &mut Problems) -> Option<&'a str> {
    match o.get(key)? {
        Value::String(s) => Some(s),
        other => {
            p.add(
                format!("acme.{key}"),
                format!("must be a string, got {}", kind(other)),
            );
            None
        }
    }
}

fn bool_key(o: &Map<String, Value>, key: &str, p: &mut Problems) -> Option<bool> {
    match o.get(key)? {
        Value::Bool(b) => Some(*b),
        other => {
            p.add(
                format!("acme.{key}"),
                format!("must be true or false, got {}", kind(other)),
            );
            None
        }
    }
}

fn number(o: &Map<String, Value>, key: &str, p: &mut Problems, lo: f64, hi: f64) -> Option<f64> {
    let v = o.get(key)?;
    match v.as_f64() {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        Some(n) => {
            p.add(
                format!("acme.{key}"),
                format!("must be between {lo} and {hi}, got {n}"),
            );
            None
        }
        None => {
            p.add(
                format!("acme.{key}"),
                format!("must be a number, got {}", kind(v)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> (Option<AcmeConfig>, Vec<String>) {
        let mut p = Problems::default();
        let c = check(&v, Some(Path::new("/etc/turnout")), &mut p);
        (c, p.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn smartproxys_object_reads_with_its_defaults() {
        let (c, problems) = read(serde_json::json!({ "accountEmail": "ops@example.com" }));
        assert_eq!(problems, Vec::<String>::new());
        let c = c.unwrap();
        assert_eq!(c.email.as_deref(), Some("ops@example.com"));
        assert_eq!(c.directory_url, LETS_ENCRYPT_STAGING);
        assert_eq!(
            (c.port, c.challenge, c.auto_renew),
            (80, Challenge::Http01, true)
        );
        assert_eq!(c.renew_threshold, Duration::from_secs(30 * 86_400));
        assert_eq!(c.renew_check_interval, Duration::from_secs(86_400));
        assert_eq!(c.store, Path::new("/etc/turnout/certs"));

        let (c, _) = read(
            serde_json::json!({ "useProduction": true, "renewThresholdDays": 0.5,
            "directoryCa": "ca.pem", "certificateStore": "/var/lib/turnout" }),
        );
        let c = c.unwrap();
        assert_eq!(c.directory_url, LETS_ENCRYPT);
        assert_eq!(c.renew_threshold, Duration::from_secs(43_200));
        assert_eq!(
            c.directory_ca.as_deref(),
            Some(Path::new("/etc/turnout/ca.pem"))
        );
        assert_eq!(c.store, Path::new("/var/lib/turnout"));

        assert_eq!(read(serde_json::json!({ "enabled": false })).0, None);
    }

    #[test]
    fn every_mistake_is_named_by_its_key() {
        let (_, problems) = read(serde_json::json!({
            "email": "ops", "environment": "production", "directoryUrl": "http://ca/dir",
            "port": 0, "challenge": "dns-01", "renewThresholdDays": "30", "autoRenw": true,
        }));
        assert_eq!(
            problems,
            [
                "acme.autoRenw: unknown key (expected one of enabled, email, accountEmail, useProduction, port, challenge, renewThresholdDays, renewCheckIntervalHours, autoRenew, certificateStore, directoryUrl, directoryCa, onDemand, onDemandTimeout)",
                "acme.environment: not supported by Turnout",
                "acme.email: \"ops\" is not an email address",
                "acme.directoryUrl: must be an https:// URL, got \"http://ca/dir\"",
                "acme.port: must be between 1 and 65535, got 0",
                "acme.challenge: \"dns-01\" is not one of \"http-01\", \"tls-alpn-01\"",
                "acme.renewThresholdDays: must be a number, got a string",
            ]
        );
    }
}
