//! The plugin chain: plugins in the configured order, with design.md's
//! semantics. `route`, `policy`, `request` and `approve-certificate`: the
//! first answer that is not `pass` wins. `admit`: every plugin is asked
//! until one denies (an `allow` ends the asking early). A failed call
//! follows the plugin's failure policy.

use std::net::SocketAddr;
use std::sync::Arc;

use turnout_plugin_sdk::matching::normalize_domain;
use turnout_plugin_sdk::{
    CertificateDecision, Connection, Forward, Hooks, IdleDecision, IdleStats, Peer, Policy,
    PolicyDecision, Reject, RequestDecision, RouteDecision, Routed,
};

use super::loaded::{FailurePolicy, LoadedPlugin};
use super::request::{HeadSlots, Requested};

/// Outcome of `admit` across the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted (someone allowed, or nobody denied).
    Admit,
    /// Denied by `plugin` with `reason`.
    Deny {
        /// Plugin name.
        plugin: String,
        /// Reason, as the plugin gave it.
        reason: String,
    },
    /// `plugin` failed and its failure policy is `closed`: refused, and
    /// counted as a failure, never as a denial.
    Failed {
        /// Plugin name.
        plugin: String,
    },
}

/// Outcome of `route` across the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Forward, as decided by `plugin`.
    Forward {
        /// Plugin name.
        plugin: String,
        /// The verdict.
        forward: Forward,
    },
    /// Rejected by `plugin`.
    Reject {
        /// Plugin name.
        plugin: String,
        /// Why, and the alert to send.
        reject: Reject,
    },
    /// `plugin` failed and its failure policy is `closed`: refused (with
    /// an `internal_error` alert on TLS).
    Failed {
        /// Plugin name.
        plugin: String,
    },
    /// Every plugin passed.
    NoRoute,
}

/// Outcome of `approve-certificate` across the chain: only
/// [`Approval::Approve`] lets the host order a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// `plugin` approved: the host may order a certificate for the name.
    Approve {
        /// Plugin name.
        plugin: String,
    },
    /// `plugin` refused.
    Refuse {
        /// Plugin name.
        plugin: String,
        /// Reason, as the plugin gave it.
        reason: String,
    },
    /// `plugin` failed and its failure policy is `closed`: refused, and
    /// counted as a failure, never as a refusal.
    Failed {
        /// Plugin name.
        plugin: String,
    },
    /// Every plugin declaring the hook passed, or none declares it:
    /// refused.
    NoAnswer,
}

impl Approval {
    /// Whether the host may order the certificate.
    pub fn is_approved(&self) -> bool {
        matches!(self, Approval::Approve { .. })
    }
}

/// An ordered, immutable set of loaded plugins. Connections hold the chain
/// they started with, so a reload never changes a live connection's plugins.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl Chain {
    /// A chain in this order.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>) -> Self {
        Self { plugins }
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Whether a plugin declared `port` an HTTP port (plaintext clients
    /// there are served as HTTP, without a connection-level `route`).
    pub fn is_http_port(&self, port: u16) -> bool {
        self.plugins
            .iter()
            .any(|p| p.info().http_ports.iter().any(|r| r.contains(port)))
    }

    fn with(&self, hook: Hooks) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.iter().filter(move |p| p.implements(hook))
    }

    /// Runs `admit`.
    pub fn admit(&self, peer: &Peer) -> Admission {
        use turnout_plugin_sdk::AdmitDecision as D;
        for p in self.with(Hooks::ADMIT) {
            match p.admit(peer) {
                Ok(D::Pass) => continue,
                Ok(D::Allow) => return Admission::Admit,
                Ok(D::Deny(reason)) => {
                    return Admission::Deny {
                        plugin: p.name().to_owned(),
                        reason,
                    };
                }
                Err(_) if p.failure_policy() == FailurePolicy::Open => continue,
                Err(_) => {
                    return Admission::Failed {
                        plugin: p.name().to_owned(),
                    };
                }
            }
        }
        Admission::Admit
    }

    /// Runs `route`.
    pub fn route(&self, conn: &Connection) -> Routing {
        for p in self.with(Hooks::ROUTE) {
            match p.route(conn) {
                Ok(RouteDecision::Pass) => continue,
                Ok(RouteDecision::Forward(forward)) => {
                    return Routing::Forward {
                        plugin: p.name().to_owned(),
                        forward,
                    };
                }
                Ok(RouteDecision::Reject(reject)) => {
                    return Routing::Reject {
                        plugin: p.name().to_owned(),
                        reject,
                    };
                }
                Err(_) if p.failure_policy() == FailurePolicy::Open => continue,
                Err(_) => {
                    return Routing::Failed {
                        plugin: p.name().to_owned(),
                    };
                }
            }
        }
        Routing::NoRoute
    }

    /// Runs `policy`; a failure or every plugin passing gives `defaults`.
    pub fn policy(&self, conn: &Connection, route: &Routed, defaults: &Policy) -> Policy {
        for p in self.with(Hooks::POLICY) {
            if let Ok(PolicyDecision::Set(policy)) = p.policy(conn, route, defaults) {
                return policy;
            }
        }
        defaults.clone()
    }

    /// Runs `on-idle`; `Pass` from everyone (or failures) means close.
    pub fn on_idle(&self, conn: &Connection, stats: &IdleStats) -> IdleDecision {
        for p in self.with(Hooks::ON_IDLE) {
            match p.on_idle(conn, stats) {
                Ok(IdleDecision::Pass) | Err(_) => continue,
                Ok(d) => return d,
            }
        }
        IdleDecision::Pass
    }

    /// Runs `request`: the first answer that is not `pass`, with the plugin
    /// that gave it (whose interest its upstream id indexes).
    pub fn request(&self, head: &mut HeadSlots, headers: &mut http::HeaderMap) -> Requested {
        for p in self.with(Hooks::REQUEST) {
            let head = head.for_plugin(p, headers);
            match p.request(head, headers) {
                Ok(RequestDecision::Pass) => continue,
                Ok(decision) => {
                    return Requested::Decided {
                        plugin: p.clone(),
                        decision,
                    };
                }
                Err(_) if p.failure_policy() == FailurePolicy::Open => continue,
                Err(_) => {
                    return Requested::Failed {
                        plugin: p.name().to_owned(),
                    };
                }
            }
        }
        Requested::NoRoute
    }

    /// Runs `approve-certificate` for a server name a TLS client asked for
    /// and the host has no certificate for: the first answer that is not
    /// `pass` wins, and nobody answering is a refusal. `name` is normalised
    /// first (lower-cased, surrounding whitespace and one trailing dot
    /// dropped): order the certificate for that form. A plugin's failure
    /// refuses under its `closed` policy and is skipped under `open`.
    ///
    /// Synchronous, like every hook: a few microseconds per plugin asked,
    /// bounded by the plugins' call deadline.
    pub fn approve_certificate(&self, name: &str, client: SocketAddr) -> Approval {
        let name = normalize_domain(name);
        if name.is_empty() {
            return Approval::NoAnswer;
        }
        for p in self.with(Hooks::APPROVE_CERTIFICATE) {
            match p.approve_certificate(&name, client) {
                Ok(CertificateDecision::Pass) => continue,
                Ok(CertificateDecision::Approve) => {
                    return Approval::Approve {
                        plugin: p.name().to_owned(),
                    };
                }
                Ok(CertificateDecision::Refuse(reason)) => {
                    return Approval::Refuse {
                        plugin: p.name().to_owned(),
                        reason,
                    };
                }
                Err(_) if p.failure_policy() == FailurePolicy::Open => continue,
                Err(_) => {
                    return Approval::Failed {
                        plugin: p.name().to_owned(),
                    };
                }
            }
        }
        Approval::NoAnswer
    }
}

#[cfg(test)]
mod tests;
