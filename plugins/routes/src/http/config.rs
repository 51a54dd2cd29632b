//! Reading a route's HTTP keys: route-level `headers`, `action.redirect`,
//! `action.static` and `action.options`. The security keys are in
//! [`super::security`].

use serde::Deserialize;
use serde_json::Value;
use turnout_plugin_sdk::BackendProtocol;

use super::templates::{Template, Use};
use crate::config::{Result, err, kind, strict};

/// SmartProxy's file-serving keys: Turnout answers with a fixed response
/// and never reads files, so a config relying on them is refused rather
/// than served half.
const FILE_KEYS: &[&str] = &[
    "root",
    "index",
    "indexFiles",
    "directory",
    "serveOnDemand",
    "cacheControl",
    "expires",
    "followSymlinks",
    "disableDirectoryListing",
    "spa",
];

/// Headers the host frames a message with; a plugin may not set them.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// One header edit: set to the template, or remove (`""` in the config).
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    /// Lower-case token.
    pub(crate) name: String,
    /// `None`: remove the header.
    pub(crate) value: Option<Template>,
}

/// Route-level `headers: { request, response }`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    pub(crate) request: Vec<Edit>,
    pub(crate) response: Vec<Edit>,
}

impl Edits {
    pub(crate) fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// `action.redirect`.
#[derive(Debug, Clone)]
pub(crate) struct RedirectSpec {
    pub(crate) to: Template,
    pub(crate) status: u16,
}

/// `action.static`: a fixed response.
#[derive(Debug, Clone)]
pub(crate) struct StaticSpec {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Template)>,
    pub(crate) body: Template,
    /// No `content-type` was configured and the body is not empty.
    pub(crate) default_content_type: bool,
}

/// What `action.type` asks for.
#[derive(Debug, Clone, Default)]
pub(crate) enum Kind {
    #[default]
    Forward,
    Redirect(RedirectSpec),
    Static(StaticSpec),
}

impl Kind {
    pub(crate) fn is_forward(&self) -> bool {
        matches!(self, Kind::Forward)
    }
}

/// A header name to read: an HTTP token, returned lower-cased.
pub(crate) fn token(name: &str, at: &str) -> Result<String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return err(at, format_args!("{name:?} is not a header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A header name to set: a token, and not one the host frames messages
/// with (it refuses answers that set them); returned lower-cased.
pub(crate) fn header_name(name: &str, at: &str) -> Result<String> {
    let lower = token(name, at)?;
    if FRAMING.contains(&lower.as_str()) {
        return err(at, "the proxy frames messages itself; it cannot be set");
    }
    Ok(lower)
}

/// A `{name: value}` object of header templates, each checked.
fn header_map<'a>(v: &'a Value, at: &str) -> Result<Vec<(String, String, &'a str)>> {
    let Value::Object(map) = v else {
        return err(at, format_args!("must be an object, got {}", kind(v)));
    };
    map.iter()
        .map(|(name, value)| {
            let path = format!("{at}.{name}");
            let lower = header_name(name, &path)?;
            match value {
                Value::String(s) => Ok((lower, path, s.as_str())),
                other => err(&path, format_args!("must be a string, got {}", kind(other))),
            }
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdits {
    request: Option<Value>,
    response: Option<Value>,
}

/// Reads route-level `headers`; `""` removes a header.
pub(crate) fn edits(v: &Value, at: &str) -> Result<Edits> {
    let raw: RawEdits = strict(v, at, &[])?;
    let side = |v: &Option<Value>, key: &str| -> Result<Vec<Edit>> {
        let Some(v) = v else {
            return Ok(Vec::new());
        };
        header_map(v, &format!("{at}.{key}"))?
            .into_iter()
            .map(|(name, path, value)| {
                let value = match value {
                    "" => None,
                    text => Some(Template::parse(text, &path, Use::Header)?),
                };
                Ok(Edit { name, value })
            })
            .collect()
    };
    Ok(Edits {
        request: side(&raw.request, "request")?,
        response: side(&raw.response, "response")?,
    })
}

/// A status from `v` (or `default`), one of `allowed`.
fn status(
    v: Option<&Value>,
    at: &str,
    default: u16,
    allowed: &dyn Fn(u16) -> bool,
    what: &str,
) -> Result<u16> {
    match v {
        None => Ok(default),
        Some(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(s) if allowed(s) => Ok(s),
            _ => err(at, format_args!("must be {what}, got {n}")),
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    to: Option<Value>,
    status: Option<Value>,
}

/// Reads `action.redirect: { to, status }`.
pub(crate) fn redirect(v: &Value, at: &str) -> Result<RedirectSpec> {
    let raw: RawRedirect = strict(v, at, &[])?;
    let path = format!("{at}.to");
    let to = match &raw.to {
        Some(Value::String(s)) if !s.is_empty() => Template::parse(s, &path, Use::Location)?,
        Some(Value::String(_)) => return err(path, "must not be empty"),
        Some(other) => {
            return err(path, format_args!("must be a string, got {}", kind(other)));
        }
        None => return err(path, "required (e.g. \"https://{domain}{path}{query}\")"),
    };
    if !to.starts_absolute() {
        return err(
            path,
            "must be an absolute URL (\"https://…\") or path (\"/…\", \"{path}\")",
        );
    }
    let status = status(
        raw.status.as_ref(),
        &format!("{at}.status"),
        301,
        &|s| [301, 302, 303, 307, 308].contains(&s),
        "one of 301, 302, 303, 307, 308",
    )?;
    Ok(RedirectSpec { to, status })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatic {
    status: Option<Value>,
    headers: Option<Value>,
    body: Option<Value>,
}

/// Reads `action.static: { status, headers, body }`.
pub(crate) fn static_response(v: &Value, at: &str) -> Result<StaticSpec> {
    if let Value::Object(map) = v
        && let Some(key) = map.keys().find(|k| FILE_KEYS.contains(&k.as_str()))
    {
        return err(
            format_args!("{at}.{key}"),
            "not supported by Turnout: Turnout serves no files (give a fixed \"body\")",
        );
    }
    let raw: RawStatic = strict(v, at, &[])?;
    let status = status(
        raw.status.as_ref(),
        &format!("{at}.status"),
        200,
        &|s| (200..=599).contains(&s),
        "a status 200-599",
    )?;
    let headers = match &raw.headers {
        None => Vec::new(),
        Some(h) => header_map(h, &format!("{at}.headers"))?
            .into_iter()
            .map(|(name, path, value)| Ok((name, Template::parse(value, &path, Use::Header)?)))
            .collect::<Result<Vec<_>>>()?,
    };
    let body_path = format!("{at}.body");
    let body = match &raw.body {
        None => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return err(
                body_path,
                format_args!("must be a string, got {}", kind(other)),
            );
        }
    };
    Ok(StaticSpec {
        status,
        default_content_type: !body.is_empty() && !headers.iter().any(|(n, _)| n == "content-type"),
        headers,
        body: Template::parse(body, &body_path, Use::Body)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOptions {
    backend_protocol: Option<Value>,
    max_body_size: Option<Value>,
}

/// Reads `action.options: { backendProtocol, maxBodySize }`.
pub(crate) fn options(v: &Value, at: &str) -> Result<(BackendProtocol, Option<u64>)> {
    let raw: RawOptions = strict(v, at, &[])?;
    let max_body = match &raw.max_body_size {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return err(
                format_args!("{at}.maxBodySize"),
                format_args!("must be a whole number of bytes, got {other}"),
            );
        }
    };
    Ok((backend_protocol(&raw, at)?, max_body))
}

fn backend_protocol(raw: &RawOptions, at: &str) -> Result<BackendProtocol> {
    let path = format!("{at}.backendProtocol");
    match &raw.backend_protocol {
        None => Ok(BackendProtocol::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(BackendProtocol::Auto),
            "http1" => Ok(BackendProtocol::Http1),
            "http2" => Ok(BackendProtocol::Http2),
            other => err(
                path,
                format_args!("{other:?} is not one of \"auto\", \"http1\", \"http2\""),
            ),
        },
        Some(other) => err(path, format_args!("must be a string, got {}", kind(other))),
    }
}
