//! The `approve-certificate` hook: which server names the host may order a
//! certificate for on demand (ACME).
//!
//! A name is approved when an enabled route with `action.tls.certificate:
//! "auto"` (terminate or terminate-and-reencrypt) lists a `match.domains`
//! pattern covering it — matched as SNI routing matches (exact names,
//! `*.suffix`, other wildcards with `glob_match`), whatever the route's
//! ports, client IPs or TLS versions. A name that only routes without
//! `"auto"` list is refused (`no-auto-route`): the operator gave those
//! names another certificate, or none. A name no route lists is passed
//! on, as `route` passes a connection no route matches; everyone passing
//! is a refusal. A route without `match.domains` approves nothing: it would
//! let any client have the proxy order certificates for any name.

use std::collections::HashMap;

use serde_json::Value;
use turnout_plugin_sdk::matching::{glob_match, normalize_domain};
use turnout_plugin_sdk::{CertificateDecision, TlsMode};

use crate::config::Route;
use crate::table::Domain;

/// The reason given for a name only routes without `"auto"` list.
const NOT_AUTO: &str = "no-auto-route";

/// Every enabled route's domain patterns, each with whether an `"auto"`
/// route lists it. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Certificates {
    exact: HashMap<String, bool>,
    /// `suffix` of a `*.suffix` pattern.
    suffix: HashMap<String, bool>,
    /// Other wildcard patterns.
    globs: Vec<(String, bool)>,
    /// Whether any pattern is an `"auto"` route's (the hook is declared).
    any_auto: bool,
}

/// Whether `route` takes its certificate from ACME.
fn auto(route: &Route) -> bool {
    matches!(
        route.action.tls,
        Some(TlsMode::Terminate | TlsMode::TerminateAndReencrypt)
    ) && matches!(&route.action.certificate, Some(Value::String(s)) if s == "auto")
}

impl Certificates {
    pub(crate) fn new(routes: &[Route]) -> Self {
        let mut out = Certificates::default();
        for route in routes.iter().filter(|r| r.enabled) {
            let auto = auto(route);
            for pattern in &route.domains {
                out.any_auto |= auto;
                match Domain::classify(pattern.as_str()) {
                    Domain::Exact(name) => *out.exact.entry(name.to_owned()).or_default() |= auto,
                    Domain::Suffix(suffix) => {
                        *out.suffix.entry(suffix.to_owned()).or_default() |= auto;
                    }
                    Domain::Glob(glob) => match out.globs.iter_mut().find(|(g, _)| g == glob) {
                        Some((_, a)) => *a |= auto,
                        None => out.globs.push((glob.to_owned(), auto)),
                    },
                    Domain::Any => {}
                }
            }
        }
        out
    }

    /// Whether some `"auto"` route lists a domain: only then is the hook
    /// worth declaring.
    pub(crate) fn any_auto(&self) -> bool {
        self.any_auto
    }

    /// The hook's answer for `name`.
    pub(crate) fn decide(&self, name: &str) -> CertificateDecision {
        let name = normalize_domain(name);
        let name: &str = &name;
        if name.is_empty() {
            return CertificateDecision::Pass;
        }
        let suffixes = name
            .match_indices('.')
            .filter_map(|(dot, _)| self.suffix.get(&name[dot + 1..]));
        let globs = self
            .globs
            .iter()
            .filter(|(glob, _)| glob_match(glob, name))
            .map(|(_, auto)| auto);
        let mut listed = false;
        for &auto in self
            .exact
            .get(name)
            .into_iter()
            .chain(suffixes)
            .chain(globs)
        {
            if auto {
                return CertificateDecision::Approve;
            }
            listed = true;
        }
        if listed {
            CertificateDecision::refuse(NOT_AUTO)
        } else {
            CertificateDecision::Pass
        }
    }
}
