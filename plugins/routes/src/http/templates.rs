//! `{clientIp}`-style templates in header values, redirect targets and
//! static responses, parsed once at `init` into literal and variable parts
//! so a request only concatenates.
//!
//! A placeholder is `{` + letters + `}`; any other brace is literal text, so
//! a JSON static body (`{"ok": true}`) needs no escaping. An unknown name
//! (`{host}`) is an init error rather than text sent to clients verbatim.

use std::fmt::Write as _;

use turnout_plugin_sdk::{RequestHead, canonical_ip};

use crate::config::{Result, err};

/// The names a template may use, in the order error messages list them.
const NAMES: [(&str, Var); 7] = [
    ("clientIp", Var::ClientIp),
    ("domain", Var::Domain),
    ("port", Var::Port),
    ("path", Var::Path),
    ("query", Var::Query),
    ("routeName", Var::RouteName),
    ("connectionId", Var::ConnectionId),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ClientIp,
    Domain,
    Port,
    Path,
    Query,
    RouteName,
    ConnectionId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// Where a template is used: what its literal text may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// A header value: no control characters (CR or LF would split it).
    Header,
    /// A redirect location: no controls, no spaces.
    Location,
    /// A response body: anything.
    Body,
}

/// What a request supplies to a template.
pub(crate) struct Context<'a> {
    pub(crate) head: &'a RequestHead,
    pub(crate) route: &'a str,
}

impl Template {
    /// Parses `text` (at key path `at`).
    pub(crate) fn parse(text: &str, at: &str, usage: Use) -> Result<Template> {
        let bad = |c: char| match usage {
            Use::Header => c.is_control() && c != '\t',
            Use::Location => c.is_control() || c.is_whitespace(),
            Use::Body => false,
        };
        if let Some(c) = text.chars().find(|&c| bad(c)) {
            return err(at, format_args!("{c:?} is not allowed here"));
        }
        let mut parts = Vec::new();
        let mut text_start = 0;
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            if name_len == 0 || !after[name_len..].starts_with('}') {
                // Not a placeholder: keep the brace as text.
                rest = after;
                continue;
            }
            let name = &after[..name_len];
            let Some(&(_, var)) = NAMES.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = NAMES.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                return err(
                    at,
                    format_args!("unknown template {{{name}}} (one of {})", known.join(", ")),
                );
            };
            let start = text.len() - rest.len() + open;
            if start > text_start {
                parts.push(Part::Text(text[text_start..start].to_owned()));
            }
            parts.push(Part::Var(var));
            rest = &after[name_len + 1..];
            text_start = text.len() - rest.len();
        }
        if text_start < text.len() {
            parts.push(Part::Text(text[text_start..].to_owned()));
        }
        Ok(Template { parts })
    }

    /// Whether every expansion is an absolute path or URL: it starts with
    /// `/`, `scheme://` or `{path}` (a request path starts with `/`).
    pub(crate) fn starts_absolute(&self) -> bool {
        match self.parts.first() {
            Some(Part::Text(t)) => {
                t.starts_with('/')
                    || t.split_once("://").is_some_and(|(scheme, _)| {
                        !scheme.is_empty()
                            && scheme
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    })
            }
            Some(Part::Var(v)) => *v == Var::Path,
            None => false,
        }
    }

    /// The text for one request. Values from the request lose control
    /// characters (and, in a location, spaces), so an odd request cannot
    /// make the answer malformed.
    pub(crate) fn expand(&self, cx: &Context<'_>, usage: Use) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => {
                    let start = out.len();
                    push_var(&mut out, *v, cx);
                    if usage != Use::Body {
                        let keep = |c: char| {
                            !(c.is_control() || (usage == Use::Location && c.is_whitespace()))
                        };
                        let clean: String = out[start..].chars().filter(|&c| keep(c)).collect();
                        out.truncate(start);
                        out.push_str(&clean);
                    }
                }
            }
        }
        out
    }
}

fn push_var(out: &mut String, var: Var, cx: &Context<'_>) {
    let head = cx.head;
    // Writing to a String cannot fail.
    let _ = match var {
        Var::ClientIp => write!(out, "{}", canonical_ip(head.client.ip())),
        Var::Domain => write!(out, "{}", head.host()),
        Var::Port => write!(out, "{}", head.listener_port),
        Var::Path => write!(out, "{}", head.path_only()),
        Var::Query => write!(out, "{}", head.query()),
        Var::RouteName => write!(out, "{}", cx.route),
        Var::ConnectionId => write!(out, "{}", head.connection_id),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnout_plugin_sdk::Method;

    fn expand(t: &str, usage: Use) -> String {
        let mut head = RequestHead::new(
            "[::ffff:10.1.2.3]:5000".parse().unwrap(),
            8080,
            Method::Get,
            "www.example.com:8080",
            "/a/b?x=1",
        );
        head.connection_id = 42;
        let cx = Context {
            head: &head,
            route: "r1",
        };
        Template::parse(t, "t", usage).unwrap().expand(&cx, usage)
    }

    #[test]
    fn every_variable_expands() {
        assert_eq!(
            expand(
                "{clientIp} {domain} {port} {path} {query} {routeName} {connectionId}",
                Use::Body
            ),
            "10.1.2.3 www.example.com 8080 /a/b ?x=1 r1 42"
        );
        assert_eq!(
            expand("https://{domain}{path}{query}", Use::Location),
            "https://www.example.com/a/b?x=1"
        );
    }

    #[test]
    fn other_braces_are_text() {
        assert_eq!(expand(r#"{"ok": {port}}"#, Use::Body), r#"{"ok": 8080}"#);
        assert_eq!(expand("{} {{path}} {", Use::Body), "{} {/a/b} {");
    }

    #[test]
    fn unknown_names_and_controls_are_refused() {
        let e = Template::parse("x{host}", "k", Use::Body).unwrap_err();
        assert!(e.0.starts_with("k: unknown template {host}"), "{e}");
        assert!(Template::parse("a\r\nb", "k", Use::Header).is_err());
        assert!(Template::parse("/a b", "k", Use::Location).is_err());
    }

    #[test]
    fn absolute_locations() {
        for (t, want) in [
            ("/x", true),
            ("{path}", true),
            ("https://{domain}", true),
            ("{domain}/x", false),
            ("x", false),
            ("://x", false),
        ] {
            let p = Template::parse(t, "k", Use::Location).unwrap();
            assert_eq!(p.starts_absolute(), want, "{t}");
        }
    }
}
