//! The configuration document as written — a JSON value, whichever format
//! the file uses: what `GET /api/config` shows with its secrets hidden,
//! what `PUT /api/config` and `PUT /api/routes` replace, and what
//! `admin.persist` writes back to the file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use super::{ConfigError, Format};

/// What a secret reads as in `GET /api/config`. A document sent back with
/// it in place keeps the running value at that key.
pub const REDACTED: &str = "[redacted]";

/// Whether the value under `key` is a secret by its name: basicAuth
/// passwords, tokens, API keys, credentials in header values, and whatever
/// a plugin's own config calls a secret. Everything under such a key is
/// hidden, objects and numbers included.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "passphrase",
        "key",
        "credentials",
    ]
    .iter()
    .any(|s| k.ends_with(s))
        || ["authorization", "proxy-authorization", "cookie"].contains(&k.as_str())
}

/// A string that is a secret whatever its key: an inline private key, or
/// a URL with a password in it (`cluster.redis`).
fn secret_text(text: &str) -> bool {
    text.contains("PRIVATE KEY-----")
        || text.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
                && rest
                    .split(['/', '?', '#'])
                    .next()
                    .and_then(|authority| authority.rsplit_once('@'))
                    .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
}

/// `doc` with every secret replaced by [`REDACTED`].
pub fn redact(doc: &Value) -> Value {
    redact_in(doc, false)
}

/// [`redact`] for a value found under a secret key (`secret`) or not.
fn redact_in(v: &Value, secret: bool) -> Value {
    fn walk(v: &mut Value, secret: bool) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    walk(child, secret || secret_key(k));
                }
            }
            Value::Array(list) => list.iter_mut().for_each(|c| walk(c, secret)),
            Value::String(s) if secret || secret_text(s) => *s = REDACTED.to_owned(),
            Value::Null | Value::String(_) => {}
            scalar if secret => *scalar = Value::String(REDACTED.to_owned()),
            _ => {}
        }
    }
    let mut out = v.clone();
    walk(&mut out, secret);
    out
}

/// What identifies an array element across two versions of a document:
/// its `name` (routes), else its `username` (basicAuth users).
fn identity(v: &Value) -> Option<&str> {
    v.get("name")
        .or_else(|| v.get("username"))
        .and_then(Value::as_str)
}

/// Puts the running value back wherever `doc` carries [`REDACTED`] (a
/// document fetched with `GET /api/config`, edited and sent back). An array
/// element is matched to the running one of the same `name` (or
/// `username`), so a reordered or shortened list keeps each secret with its
/// owner; an element with neither is matched by position only when it is
/// the same as the running one apart from its secrets. A placeholder with
/// no running secret behind it is a problem naming its key path: a secret
/// never moves to another route or user.
pub fn restore(doc: &mut Value, running: &Value) -> Vec<ConfigError> {
    fn walk(
        v: &mut Value,
        running: Option<&Value>,
        secret: bool,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) {
        match v {
            Value::String(s) if s == REDACTED => match running {
                Some(r) if !r.is_null() && r.as_str() != Some(REDACTED) => *v = r.clone(),
                _ => errors.push(ConfigError::new(
                    path,
                    format!(
                        "{REDACTED:?} stands for a secret hidden by GET /api/config, and the running \
                         configuration has none at this key to keep: send the value itself"
                    ),
                )),
            },
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    let at = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let secret = secret || secret_key(k);
                    walk(child, running.and_then(|r| r.get(k)), secret, &at, errors);
                }
            }
            Value::Array(list) => {
                let theirs = running.and_then(Value::as_array);
                for (i, child) in list.iter_mut().enumerate() {
                    let counterpart = match identity(child) {
                        // Two running elements of one name: whose secret it
                        // is cannot be told, so neither is given.
                        Some(id) => theirs.and_then(|t| {
                            let mut same = t.iter().filter(|r| identity(r) == Some(id));
                            same.next().filter(|_| same.next().is_none())
                        }),
                        None => theirs
                            .and_then(|t| t.get(i))
                            .filter(|r| {
                                identity(r).is_none()
                                    && redact_in(r, secret) == redact_in(child, secret)
                            }),
                    };
                    walk(child, counterpart, secret, &format!("{path}[{i}]"), errors);
                }
            }
            _ => {}
        }
    }
    let mut errors = Vec::new();
    walk(doc, Some(running), false, "", &mut errors);
    errors
}

/// Routes added, removed and changed between two route lists, by name
/// (`routes[i]` for a route without one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteChanges {
    /// In the new list only.
    pub added: Vec<String>,
    /// In the old list only.
    pub removed: Vec<String>,
    /// In both, different.
    pub changed: Vec<String>,
}

impl RouteChanges {
    /// Compares `old` and `new`.
    pub fn between(old: &[Value], new: &[Value]) -> Self {
        fn keyed(list: &[Value]) -> Vec<(String, &Value)> {
            list.iter()
                .enumerate()
                .map(|(i, r)| {
                    let name = r.get("name").and_then(Value::as_str);
                    (
                        name.map_or_else(|| format!("routes[{i}]"), str::to_owned),
                        r,
                    )
                })
                .collect()
        }
        fn find<'a>(list: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
            list.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
        }
        let (old, new) = (keyed(old), keyed(new));
        let mut out = RouteChanges::default();
        for (name, route) in &new {
            match find(&old, name) {
                None => out.added.push(name.clone()),
                Some(before) if before != *route => out.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        out.removed = old
            .iter()
            .filter(|(n, _)| find(&new, n).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        out
    }

    /// No route differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The permission bits of the file at `path`, or `new` when there is none:
/// a config written back keeps the mode its operator gave it.
pub fn mode_of(path: &Path, new: u32) -> u32 {
    std::fs::metadata(path).map_or(new, |m| m.permissions().mode() & 0o7777)
}

/// `doc` as the text of a `format` file.
pub fn to_text(doc: &Value, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string_pretty(doc)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
        Format::Toml => toml::to_string_pretty(doc)
            .map_err(|e| format!("cannot be written as TOML ({e}); a null has no TOML form")),
    }
}

/// Replaces `path` with `text` so that a crash leaves the old file or the
/// new one, never a mix: a temporary file beside it, flushed to disk, then
/// renamed over it, then the directory flushed. The file gets `mode`.
pub fn write_atomic(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask at creation; set it as asked.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn urls_with_a_password_are_secrets_wherever_they_are() {
        let running = json!({"cluster": {"redis": "redis://:pw@10.0.0.1:6379/0", "prefix": "p:"},
            "plugins": {"config": {"x": {"upstream": "https://example.com/a@b:c"}}}});
        let shown = redact(&running);
        assert_eq!(shown["cluster"]["redis"], REDACTED);
        assert_eq!(shown["cluster"]["prefix"], "p:");
        // An `@` after the authority is not a password.
        assert_eq!(
            shown["plugins"]["config"]["x"]["upstream"],
            "https://example.com/a@b:c"
        );
        let mut back = shown.clone();
        assert!(restore(&mut back, &running).is_empty());
        assert_eq!(back, running);
        let plain = json!({"cluster": {"redis": "redis://10.0.0.1:6379/0"}});
        assert_eq!(redact(&plain), plain);
    }

    #[test]
    fn secrets_are_hidden_and_come_back_by_route_name() {
        let running = json!({
            "admin": {"token": "t0ken-t0ken-t0ken", "listen": "127.0.0.1:1"},
            "routes": [
                {"name": "a", "security": {"basicAuth": {"users": [{"username": "u", "password": "pw-a"}]}}},
                {"name": "b", "action": {"tls": {"certificate": {"cert": "C", "key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"}}}}
            ]
        });
        let shown = redact(&running);
        assert_eq!(shown["admin"]["token"], REDACTED);
        assert_eq!(shown["admin"]["listen"], "127.0.0.1:1");
        assert_eq!(
            shown["routes"][0]["security"]["basicAuth"]["users"][0]["password"],
            REDACTED
        );
        assert_eq!(
            shown["routes"][0]["security"]["basicAuth"]["users"][0]["username"],
            "u"
        );
        assert_eq!(
            shown["routes"][1]["action"]["tls"]["certificate"]["key"],
            REDACTED
        );
        assert_eq!(
            shown["routes"][1]["action"]["tls"]["certificate"]["cert"],
            "C"
        );
        assert!(!shown.to_string().contains("pw-a"));

        // Sent back reordered, with a new route: each placeholder gets its
        // own route's secret.
        let mut edited = shown.clone();
        let routes = edited["routes"].as_array_mut().unwrap();
        routes.reverse();
        routes.push(json!({"name": "c", "x": {"password": REDACTED}}));
        let errors = restore(&mut edited, &running);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "routes[2].x.password");
        assert_eq!(
            edited["routes"][1]["security"],
            running["routes"][0]["security"]
        );
        assert_eq!(
            edited["routes"][0]["action"],
            running["routes"][1]["action"]
        );
        assert_eq!(edited["admin"], running["admin"]);
    }

    #[test]
    fn a_secret_never_moves_to_another_user_or_route() {
        let running = json!({"routes": [{"name": "r", "security": {"basicAuth": {"users": [
            {"username": "alice", "password": "pw-a"},
            {"username": "bob", "password": "pw-b"}
        ]}}}]});
        // Alice removed: bob keeps his own password, not hers.
        let mut doc = json!({"routes": [{"name": "r", "security": {"basicAuth": {"users": [
            {"username": "bob", "password": REDACTED}
        ]}}}]});
        assert!(restore(&mut doc, &running).is_empty());
        assert_eq!(
            doc["routes"][0]["security"]["basicAuth"]["users"][0]["password"],
            "pw-b"
        );
        // A route renamed (or new) in the place of another gets nothing.
        let mut doc = json!({"routes": [{"name": "other", "security": {"basicAuth": {"users": [
            {"username": "alice", "password": REDACTED}
        ]}}}]});
        let errors = restore(&mut doc, &running);
        assert_eq!(
            errors[0].path,
            "routes[0].security.basicAuth.users[0].password"
        );
        // Without a name, only an element otherwise the same keeps its secret.
        let running = json!({"list": [{"url": "a", "token": "t-a"}, {"url": "b", "token": "t-b"}]});
        let mut same = redact(&running);
        assert!(restore(&mut same, &running).is_empty());
        assert_eq!(same, running);
        let mut moved = json!({"list": [{"url": "b", "token": REDACTED}]});
        assert_eq!(restore(&mut moved, &running).len(), 1);
    }

    #[test]
    fn everything_under_a_secret_key_is_hidden() {
        let doc = json!({
            "plugins": {"config": {"x": {"clientSecret": {"current": "s1", "next": ["s2"]}, "pinPassword": 1234, "apiKey": "k"}}},
            "routes": [{"headers": {"request": {"Authorization": "Bearer abc", "X-Keep": "v"}}}]
        });
        let shown = redact(&doc);
        let text = shown.to_string();
        for secret in ["s1", "s2", "1234", "\"k\"", "Bearer abc"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["routes"][0]["headers"]["request"]["X-Keep"], "v");
        let mut back = shown.clone();
        assert!(restore(&mut back, &doc).is_empty());
        assert_eq!(back, doc);
    }

    #[test]
    fn route_changes_are_named() {
        let old = [
            json!({"name": "a", "v": 1}),
            json!({"name": "b"}),
            json!({"v": 0}),
        ];
        let new = [
            json!({"name": "a", "v": 2}),
            json!({"name": "c"}),
            json!({"v": 0}),
        ];
        let c = RouteChanges::between(&old, &new);
        assert_eq!(c.added, ["c"]);
        assert_eq!(c.removed, ["b"]);
        assert_eq!(c.changed, ["a"]);
        assert!(RouteChanges::between(&new, &new).is_empty());
    }

    #[test]
    fn documents_are_written_whole_in_their_format_keeping_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "workers = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let doc = json!({"workers": 2, "admin": {"listen": "127.0.0.1:9"}, "bind": ["127.0.0.1"]});
        write_atomic(
            &path,
            &to_text(&doc, Format::Toml).unwrap(),
            mode_of(&path, 0o600),
        )
        .unwrap();
        let back = super::super::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.workers, Some(2));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(to_text(&json!({"a": null}), Format::Toml).is_err());
    }
}
