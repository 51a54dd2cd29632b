//! The per-request side of the chain: a request head built once per
//! request, with each plugin's declared header slots filled from the
//! request's headers just before its call, and the chain's verdict.

use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use turnout_plugin_sdk::{RequestDecision, RequestHead};

use super::loaded::LoadedPlugin;

/// Outcome of `request` across the chain.
#[derive(Debug)]
pub enum Requested {
    /// `plugin` answered (its upstream ids index its interest).
    Decided {
        /// The plugin.
        plugin: Arc<LoadedPlugin>,
        /// Its answer (never `Pass`).
        decision: RequestDecision,
    },
    /// `plugin` failed and its failure policy is `closed`: a 502.
    Failed {
        /// Plugin name.
        plugin: String,
    },
    /// Every plugin passed: a 404.
    NoRoute,
}

/// One request's head, whose slots are refilled for each plugin asked.
#[derive(Debug)]
pub struct HeadSlots {
    head: RequestHead,
    /// The declared names the slots were last filled for (by address).
    filled_for: Option<(usize, usize)>,
}

impl HeadSlots {
    /// A head with no slots filled yet.
    pub fn new(head: RequestHead) -> Self {
        Self {
            head,
            filled_for: None,
        }
    }

    /// The head as `plugin` sees it.
    pub(super) fn for_plugin(
        &mut self,
        plugin: &LoadedPlugin,
        headers: &HeaderMap,
    ) -> &mut RequestHead {
        let names = plugin.request_slots();
        let key = (names.as_ptr() as usize, names.len());
        if self.filled_for != Some(key) {
            self.head.headers = fill(names, headers);
            self.filled_for = Some(key);
        }
        &mut self.head
    }
}

/// The values of `names` in `headers`, each joined with `, ` when repeated
/// (RFC 9110's combination rule; `; ` for `cookie`, as RFC 9113 §8.2.3
/// joins an HTTP/2 client's cookie fields), `None` when absent.
pub(crate) fn fill(names: &[HeaderName], headers: &HeaderMap) -> Vec<Option<Vec<u8>>> {
    names
        .iter()
        .map(|name| {
            let mut values = headers.get_all(name).iter();
            let mut out = values.next()?.as_bytes().to_vec();
            let sep: &[u8] = if name == http::header::COOKIE {
                b"; "
            } else {
                b", "
            };
            for v in values {
                out.extend_from_slice(sep);
                out.extend_from_slice(v.as_bytes());
            }
            Some(out)
        })
        .collect()
}

/// Declared names as header names; a name that is not one can never be
/// present, and is kept as an unmatchable placeholder so slot indices hold.
pub(crate) fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-turnout-invalid-slot-name"))
        })
        .collect()
}
