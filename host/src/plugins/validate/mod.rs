//! Checks on what a plugin returns. The component model guarantees the
//! shapes; these guarantee the values are usable, so a buggy plugin is
//! counted as `malformed` instead of reaching the byte path.

use turnout_plugin_sdk::{AdmitDecision, CertificateDecision, PluginInfo, RouteDecision, Target};

mod http;
pub(crate) use http::{request, response};

const MAX_NAME: usize = 256;
const MAX_TARGETS: usize = 64;
const MAX_HOST: usize = 253;

pub(super) fn short(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes long (at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

pub(crate) fn info(info: &PluginInfo) -> Result<(), String> {
    if info.name.is_empty() {
        return Err("plugin-info.name is empty".into());
    }
    short("plugin-info.name", &info.name, MAX_NAME)?;
    short("plugin-info.version", &info.version, MAX_NAME)?;
    for r in &info.listen {
        if r.from == 0 || r.from > r.to {
            return Err(format!(
                "plugin-info.listen has an invalid range {}-{}",
                r.from, r.to
            ));
        }
    }
    http::interest(&info.interest)
}

pub(crate) fn admit(d: &AdmitDecision) -> Result<(), String> {
    match d {
        AdmitDecision::Deny(reason) => short("deny reason", reason, MAX_NAME),
        AdmitDecision::Pass | AdmitDecision::Allow => Ok(()),
    }
}

pub(crate) fn certificate(d: &CertificateDecision) -> Result<(), String> {
    match d {
        CertificateDecision::Refuse(reason) => short("refuse reason", reason, MAX_NAME),
        CertificateDecision::Pass | CertificateDecision::Approve => Ok(()),
    }
}

pub(crate) fn route(d: &RouteDecision) -> Result<(), String> {
    match d {
        RouteDecision::Pass => Ok(()),
        RouteDecision::Reject(r) => short("reject reason", &r.reason, MAX_NAME),
        RouteDecision::Forward(f) => {
            if f.route.is_empty() {
                return Err("forward.route is empty".into());
            }
            short("forward.route", &f.route, MAX_NAME)?;
            // A terminated HTTP route may answer every request itself
            // (redirect, static): its connection needs no targets.
            if f.targets.is_empty() && f.tls_mode == turnout_plugin_sdk::TlsMode::Passthrough {
                return Err(format!("forward to route {:?} has no targets", f.route));
            }
            if f.targets.len() > MAX_TARGETS {
                return Err(format!(
                    "forward has {} targets (at most {MAX_TARGETS})",
                    f.targets.len()
                ));
            }
            f.targets.iter().try_for_each(target)
        }
    }
}

pub(super) fn target(t: &Target) -> Result<(), String> {
    if t.host.is_empty() || t.port == 0 {
        return Err(format!(
            "forward target {:?}:{} is not an address",
            t.host, t.port
        ));
    }
    short("forward target host", &t.host, MAX_HOST)
}
