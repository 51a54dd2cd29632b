//! Why a connection ended before its relay began: one stable label each,
//! counted by the registry and written in the closing log line.

/// Why a connection ended before the relay began (a metrics label each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or untrusted PROXY header.
    ProxyHeader(String),
    /// A plugin's `admit` denied.
    Denied {
        /// The plugin.
        plugin: String,
        /// Its reason, as it gave it.
        reason: String,
    },
    /// The ClientHello was malformed.
    Hello(String),
    /// The PROXY header or ClientHello did not arrive within
    /// `initialDataTimeout` (which one, in words).
    Timeout(&'static str),
    /// Data before routing exceeded `maxPendingDataSize`.
    TooMuchPending,
    /// No plugin routed it.
    NoRoute,
    /// A plugin's `route` rejected it.
    Rejected {
        /// The plugin.
        plugin: String,
        /// Its reason, as it gave it.
        reason: String,
    },
    /// A plugin with the `closed` failure policy failed (trap, deadline,
    /// memory, malformed answer) during `admit` or `route`. A variant of
    /// its own, so that a plugin denying with any reason string is never
    /// counted as a failure.
    PluginFailure {
        /// The plugin.
        plugin: String,
    },
    /// The route's connection limit.
    RouteLimit(String),
    /// The TLS handshake of a terminated route failed (`reason`: one of
    /// `tls::HandshakeError::REASONS`).
    Handshake {
        /// Why, as a stable label.
        reason: &'static str,
        /// rustls' or the OS's words.
        detail: String,
    },
    /// A TLS mode this build does not implement yet.
    Unsupported(&'static str),
    /// No target answered.
    Backend(String),
    /// The client went away before routing.
    ClientGone,
}

/// The reason recorded beside the plugin's name in the plugin-refusals
/// table when a plugin failed closed.
pub const PLUGIN_FAILURE: &str = "plugin-failure";

impl Refusal {
    /// Every label [`Refusal::label`] returns, in a fixed order (metrics
    /// index their counters by it).
    pub const LABELS: [&'static str; 13] = [
        "bad-proxy-header",
        "denied",
        "bad-client-hello",
        "timeout",
        "pending-data-limit",
        "no-route",
        "rejected",
        PLUGIN_FAILURE,
        "route-limit",
        "unsupported",
        "backend-unreachable",
        "client-gone",
        "tls-handshake",
    ];

    /// Stable metrics label.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position of the label in [`Refusal::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Refusal::ProxyHeader(_) => 0,
            Refusal::Denied { .. } => 1,
            Refusal::Hello(_) => 2,
            Refusal::Timeout(_) => 3,
            Refusal::TooMuchPending => 4,
            Refusal::NoRoute => 5,
            Refusal::Rejected { .. } => 6,
            Refusal::PluginFailure { .. } => 7,
            Refusal::RouteLimit(_) => 8,
            Refusal::Unsupported(_) => 9,
            Refusal::Backend(_) => 10,
            Refusal::ClientGone => 11,
            Refusal::Handshake { .. } => 12,
        }
    }

    /// The plugin and its reason, for a denial, a rejection or a failure
    /// of a plugin (the last with the reason [`PLUGIN_FAILURE`]).
    pub fn plugin_verdict(&self) -> Option<(&str, &str)> {
        match self {
            Refusal::Denied { plugin, reason } | Refusal::Rejected { plugin, reason } => {
                Some((plugin, reason))
            }
            Refusal::PluginFailure { plugin } => Some((plugin, PLUGIN_FAILURE)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn a_plugin_that_denies_with_the_failure_label_is_a_denial() {
        let denied = Refusal::Denied {
            plugin: "guard".into(),
            reason: "plugin-failure".into(),
        };
        assert_eq!(denied.label(), "denied");
        let rejected = Refusal::Rejected {
            plugin: "routes".into(),
            reason: "plugin-failure".into(),
        };
        assert_eq!(rejected.label(), "rejected");
        let failed = Refusal::PluginFailure {
            plugin: "guard".into(),
        };
        assert_eq!(failed.label(), "plugin-failure");
        assert_eq!(failed.plugin_verdict(), Some(("guard", "plugin-failure")));
    }

    #[test]
    fn labels_and_indexes_agree() {
        for (i, label) in Refusal::LABELS.iter().enumerate() {
            assert_eq!(Refusal::LABELS.iter().position(|l| l == label), Some(i));
        }
    }
}
