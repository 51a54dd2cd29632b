//! Per-request security: `security.basicAuth` and `security.rateLimit`
//! (the IP lists are shared with the connection path, see `action`).

use serde::Deserialize;
use serde_json::Value;
use turnout_plugin_sdk::matching::PathPattern;
use turnout_plugin_sdk::{RequestHead, Response, canonical_ip, host};

use super::config::token;
use crate::config::{Result, err, kind, strict, strings};

/// Store keys longer than this are hashed (the store refuses long keys).
const MAX_KEY: usize = 200;
/// Longest window: a day is already far longer than rate limits run.
const MAX_WINDOW_S: u64 = 86_400;

/// `basicAuth` with `enabled` not false.
#[derive(Debug, Clone)]
pub(crate) struct BasicAuth {
    /// `base64(user:password)` per user: compared with what a client
    /// sends, so nothing is decoded per request.
    credentials: Vec<Vec<u8>>,
    /// The `WWW-Authenticate` value.
    challenge: String,
    /// `excludePaths`: requests here need no credentials.
    exclude: Vec<PathPattern>,
}

/// What `rateLimit.keyBy` counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyBy {
    Ip,
    Path,
    /// This header's value (lower-case name); the client IP when absent.
    Header(String),
}

/// `rateLimit` with `enabled` not false.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    max: i64,
    window_s: u64,
    pub(crate) key: KeyBy,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBasicAuth {
    enabled: Option<bool>,
    users: Option<Value>,
    realm: Option<String>,
    exclude_paths: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    username: String,
    password: String,
}

/// Reads `security.basicAuth`; `None` when `enabled: false` (a missing
/// `enabled` means on: the block is there to be used).
pub(crate) fn basic_auth(v: &Value, at: &str) -> Result<Option<BasicAuth>> {
    let raw: RawBasicAuth = strict(v, at, &[])?;
    let users_at = format!("{at}.users");
    let users = match &raw.users {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None => {
            return err(users_at, "required: at least one {username, password}");
        }
        Some(other) => {
            return err(
                users_at,
                format_args!("must be a list, got {}", kind(other)),
            );
        }
    };
    let mut credentials = Vec::with_capacity(users.len());
    for (j, u) in users.iter().enumerate() {
        let path = format!("{users_at}[{j}]");
        let user: RawUser = strict(u, &path, &[])?;
        if user.username.is_empty() || user.username.contains(':') {
            return err(
                format_args!("{path}.username"),
                "must be non-empty and without ':'",
            );
        }
        let pair = format!("{}:{}", user.username, user.password);
        credentials.push(base64(pair.as_bytes()).into_bytes());
    }
    let realm = raw.realm.unwrap_or_else(|| "Restricted".to_owned());
    if realm
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return err(
            format_args!("{at}.realm"),
            "must not contain quotes, backslashes or control characters",
        );
    }
    let exclude = match &raw.exclude_paths {
        None => Vec::new(),
        Some(Value::Array(a)) if a.is_empty() => Vec::new(),
        Some(p) => {
            let path = format!("{at}.excludePaths");
            strings(p, &path)?
                .into_iter()
                .map(|s| PathPattern::parse(s).or_else(|e| err(&path, e)))
                .collect::<Result<_>>()?
        }
    };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(BasicAuth {
        credentials,
        challenge: format!("Basic realm=\"{realm}\""),
        exclude,
    }))
}

impl BasicAuth {
    /// Whether a request for `path` with this `Authorization` value passes.
    pub(crate) fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        if self.exclude.iter().any(|p| p.matches(path)) {
            return true;
        }
        let Some(value) = authorization else {
            return false;
        };
        let value = value.trim_ascii();
        let Some((scheme, token)) = value.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic ") {
            return false;
        }
        let token = token.trim_ascii();
        // Every entry is compared, so the time taken does not say which
        // user came close.
        self.credentials
            .iter()
            .fold(false, |ok, c| ok | constant_time_eq(c, token))
    }

    /// The 401 answer.
    pub(crate) fn challenge(&self) -> Response {
        Response::text(401, "Unauthorized").header("www-authenticate", self.challenge.clone())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    enabled: Option<bool>,
    max_requests: Option<Value>,
    window: Option<Value>,
    key_by: Option<String>,
    header_name: Option<String>,
    error_message: Option<String>,
}

/// Reads `security.rateLimit`; `None` when `enabled: false`.
pub(crate) fn rate_limit(v: &Value, at: &str) -> Result<Option<RateLimit>> {
    let raw: RawRateLimit = strict(v, at, &[])?;
    let whole = |v: &Option<Value>, key: &str, max: u64| -> Result<u64> {
        let path = format!("{at}.{key}");
        match v {
            None => err(path, "required"),
            Some(n) => match n.as_u64() {
                Some(x) if (1..=max).contains(&x) => Ok(x),
                _ => err(
                    path,
                    format_args!("must be a whole number 1-{max}, got {n}"),
                ),
            },
        }
    };
    let max = whole(&raw.max_requests, "maxRequests", u64::from(u32::MAX))?;
    let window_s = whole(&raw.window, "window", MAX_WINDOW_S)?;
    let header_at = format!("{at}.headerName");
    let key = match (raw.key_by.as_deref(), &raw.header_name) {
        (None | Some("ip"), None) => KeyBy::Ip,
        (Some("path"), None) => KeyBy::Path,
        (Some("header"), Some(name)) => KeyBy::Header(token(name, &header_at)?),
        (Some("header"), None) => return err(header_at, "required when keyBy is \"header\""),
        (Some("ip" | "path") | None, Some(_)) => {
            return err(header_at, "only with \"keyBy\": \"header\"");
        }
        (Some(other), _) => {
            return err(
                format_args!("{at}.keyBy"),
                format_args!("{other:?} is not one of \"ip\", \"path\", \"header\""),
            );
        }
    };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(RateLimit {
        max: i64::try_from(max).unwrap_or(i64::MAX),
        window_s,
        key,
        message: raw
            .error_message
            .unwrap_or_else(|| "Too Many Requests".to_owned()),
    }))
}

impl RateLimit {
    /// Counts this request against route `index`'s window; the 429 when it
    /// is over. `header` is the `keyBy: header` value. A store failure lets
    /// the request through: a full store must not take the site down.
    pub(crate) fn check(
        &self,
        index: usize,
        head: &RequestHead,
        header: Option<&[u8]>,
    ) -> Option<Response> {
        let ip = || canonical_ip(head.client.ip()).to_string();
        let key = match &self.key {
            KeyBy::Ip => ip(),
            KeyBy::Path => head.path_only().to_owned(),
            KeyBy::Header(_) => match header {
                Some(v) => String::from_utf8_lossy(v).into_owned(),
                None => ip(),
            },
        };
        let mut store_key = format!("rl:{index}:{key}");
        if store_key.len() > MAX_KEY {
            store_key = format!("rl:{index}:#{:016x}", fnv1a(key.as_bytes()));
        }
        let window_ms = self.window_s.saturating_mul(1000);
        let count = host::kv_increment(&store_key, 1, Some(window_ms)).ok()?;
        (count > self.max).then(|| {
            Response::text(429, self.message.clone())
                .header("retry-after", self.window_s.to_string())
        })
    }
}

/// Standard base64 with padding (what clients send in `Authorization`).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// FNV-1a: a stable short name for a long rate-limit key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn basic_auth_checks_scheme_and_token() {
        let v: Value = serde_json::from_str(
            r#"{"users": [{"username": "Aladdin", "password": "open sesame"}], "excludePaths": ["/health"]}"#,
        )
        .unwrap();
        let auth = basic_auth(&v, "a").unwrap().unwrap();
        let ok = b"basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ== ".as_slice();
        assert!(auth.allows("/", Some(ok)));
        assert!(!auth.allows("/", Some(b"Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(!auth.allows("/", Some(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==")));
        assert!(!auth.allows("/", Some(b"Basic")));
        assert!(!auth.allows("/", None));
        assert!(auth.allows("/health", None));
    }
}
