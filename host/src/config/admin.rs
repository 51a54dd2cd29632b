//! The `admin` object: where the admin API listens, how many client IPs it
//! shows one by one, and whether (and with what token) it may change the
//! running configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

use super::validate::Problems;

/// The admin API's address when `admin` is given without `listen`.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9900);

/// Client IPs the admin API and `/metrics` expose one by one when
/// `admin.topIPs` does not say.
pub const DEFAULT_TOP_IPS: usize = 10;

/// A token shorter than this is accepted with a warning: it can be guessed.
pub const SHORT_TOKEN: usize = 16;

/// `admin`: the admin HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens (`admin.listen`, default 127.0.0.1:9900).
    pub listen: SocketAddr,
    /// Client IPs shown per-IP in `/metrics` and `/api/stats`
    /// (`admin.topIPs`, default 10): the rest are in the totals only, so
    /// the series count does not grow with the number of clients.
    pub top_ips: usize,
    /// The bearer token the write endpoints require (`admin.token`, or the
    /// first line of `admin.tokenFile`); `None`: they are off.
    pub token: Option<Token>,
    /// `admin.persist` (default false): write a configuration accepted
    /// through the API back to the config file.
    pub persist: bool,
}

/// A secret: never printed (`Debug` shows its length only).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token's bytes, for comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

/// `admin` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawAdmin {
    listen: Option<String>,
    #[serde(rename = "topIPs")]
    top_ips: Option<u64>,
    token: Option<String>,
    token_file: Option<String>,
    persist: Option<bool>,
}

pub(super) fn check(
    raw: RawAdmin,
    base_dir: Option<&Path>,
    p: &mut Problems,
) -> Option<AdminConfig> {
    let listen = match raw
        .listen
        .map(|text| (text.trim().parse::<SocketAddr>(), text))
    {
        None => Some(DEFAULT_ADMIN_LISTEN),
        Some((Ok(addr), _)) => Some(addr),
        Some((Err(_), text)) => {
            let message = format!("{text:?} is not an address and port like \"127.0.0.1:9900\"");
            p.add("admin.listen", message);
            None
        }
    };
    let top_ips = match raw.top_ips {
        None => DEFAULT_TOP_IPS,
        Some(n @ 0..=1000) => n as usize,
        Some(n) => {
            p.add(
                "admin.topIPs",
                format!("{n} is too many series for a scrape; use 0 to 1000"),
            );
            DEFAULT_TOP_IPS
        }
    };
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            p.add(
                "admin.tokenFile",
                "give admin.token or admin.tokenFile, not both",
            );
            None
        }
        (Some(t), None) => token(t, "admin.token", p),
        (None, Some(file)) => read_token_file(&file, base_dir, p),
        (None, None) => None,
    };
    Some(AdminConfig {
        listen: listen?,
        top_ips,
        token,
        persist: raw.persist.unwrap_or(false),
    })
}

fn token(text: String, key: &str, p: &mut Problems) -> Option<Token> {
    if text.is_empty() {
        p.add(
            key,
            "must not be empty (leave it out to keep the write endpoints off)",
        );
        return None;
    }
    // A header value cannot carry these, so such a token could never match.
    if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        p.add(key, "must not contain spaces or control characters");
        return None;
    }
    Some(Token(text))
}

/// The first line of the file, without its line ending; relative paths are
/// taken from the config file's directory.
fn read_token_file(file: &str, base_dir: Option<&Path>, p: &mut Problems) -> Option<Token> {
    let path = match base_dir {
        Some(base) if Path::new(file).is_relative() => base.join(file),
        _ => file.into(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => token(
            text.lines().next().unwrap_or("").trim_end().to_owned(),
            "admin.tokenFile",
            p,
        ),
        Err(e) => {
            p.add(
                "admin.tokenFile",
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Format, parse};

    #[test]
    fn the_token_comes_from_the_config_or_a_file_and_is_never_printed() {
        let c = parse(
            r#"{"admin": {"token": "s3cret-s3cret-s3cret"}}"#,
            Format::Json,
        )
        .unwrap();
        let a = c.admin.unwrap();
        assert_eq!(
            a.token.as_ref().map(|t| t.as_bytes()),
            Some(&b"s3cret-s3cret-s3cret"[..])
        );
        assert!(!a.persist);
        assert!(!format!("{a:?}").contains("s3cret"), "{a:?}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-a-file-from-a-file\n").unwrap();
        std::fs::write(
            dir.path().join("t.json"),
            r#"{"admin": {"tokenFile": "token", "persist": true}}"#,
        )
        .unwrap();
        let a = crate::config::load(&dir.path().join("t.json"))
            .unwrap()
            .admin
            .unwrap();
        assert_eq!(a.token.unwrap().as_bytes(), b"from-a-file-from-a-file");
        assert!(a.persist);
    }

    #[test]
    fn token_problems_name_their_key() {
        for (doc, key, says) in [
            (
                r#"{"admin": {"token": ""}}"#,
                "admin.token",
                "must not be empty",
            ),
            (r#"{"admin": {"token": "a b"}}"#, "admin.token", "spaces"),
            (
                r#"{"admin": {"token": "abc", "tokenFile": "/x"}}"#,
                "admin.tokenFile",
                "not both",
            ),
            (
                r#"{"admin": {"tokenFile": "/nonexistent/token"}}"#,
                "admin.tokenFile",
                "cannot read /nonexistent/token",
            ),
        ] {
            let e = parse(doc, Format::Json).unwrap_err();
            assert_eq!(e.0[0].path, key, "{doc}: {e}");
            assert!(e.0[0].message.contains(says), "{doc}: {e}");
        }
    }
}
