//! The component export glue (wasm32 only): wit-bindgen's bindings and the
//! adapter that turns a [`Plugin`] into the `hooks` interface.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::plugin::Plugin;

#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_turnout_hooks",
        default_bindings_module: "::turnout_plugin_sdk::__private::bindings",
        runtime_path: "::turnout_plugin_sdk::__private::wit_bindgen::rt",
        bitflags_path: "::turnout_plugin_sdk::__private::wit_bindgen::rt::bitflags",
    });
}

crate::__wit_conversions!(crate::export::bindings::turnout::plugin::types);
crate::__wit_conversions_v02!(crate::export::bindings::turnout::plugin::types);
crate::__wit_request_head_v03!(crate::export::bindings::turnout::plugin::types);

use bindings::exports::turnout::plugin::hooks::Guest;
use bindings::turnout::plugin::types as wit;

thread_local! {
    // One plugin value per instance, created by `init`. Wasm instances are
    // single-threaded, so a thread-local is the instance's global.
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    // The request head handed to `Plugin::request`, refilled per call so its
    // strings and slots keep their allocations (see `crate::packed`).
    static HEAD: RefCell<Option<crate::RequestHead>> = const { RefCell::new(None) };
}

fn with_plugin<P: Plugin, R>(otherwise: R, f: impl FnOnce(&P) -> R) -> R {
    PLUGIN.with(
        |slot| match slot.borrow().as_ref().and_then(|b| b.downcast_ref::<P>()) {
            Some(p) => f(p),
            // The host calls `init` first; if it ever did not, "no opinion" is
            // the answer that cannot do harm.
            None => otherwise,
        },
    )
}

/// Implements the WIT `hooks` interface for a [`Plugin`]; used by
/// [`crate::export_plugin!`].
pub struct Adapter<P>(PhantomData<P>);

impl<P: Plugin> Guest for Adapter<P> {
    fn init(config: String) -> Result<wit::PluginInfo, String> {
        let plugin = P::init(&config).map_err(|e| e.0)?;
        let info = wit_http::info_to_wit(plugin.info());
        PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(info)
    }

    fn admit(peer: wit::Peer) -> wit::AdmitDecision {
        let peer = wit_conv::peer_from_wit(peer);
        wit_conv::admit_to_wit(with_plugin::<P, _>(crate::AdmitDecision::Pass, |p| {
            p.admit(&peer)
        }))
    }

    fn route(conn: wit::Connection) -> wit::RouteDecision {
        let conn = wit_conv::connection_from_wit(conn);
        wit_conv::route_to_wit(with_plugin::<P, _>(crate::RouteDecision::Pass, |p| {
            p.route(&conn)
        }))
    }

    fn policy(
        conn: wit::Connection,
        route: wit::Routed,
        defaults: wit::ConnectionPolicy,
    ) -> wit::PolicyDecision {
        let conn = wit_conv::connection_from_wit(conn);
        let route = wit_conv::routed_from_wit(route);
        let defaults = wit_conv::policy_from_wit(defaults);
        wit_conv::policy_decision_to_wit(with_plugin::<P, _>(crate::PolicyDecision::Pass, |p| {
            p.policy(&conn, &route, &defaults)
        }))
    }

    fn on_idle(conn: wit::Connection, stats: wit::IdleStats) -> wit::IdleDecision {
        let conn = wit_conv::connection_from_wit(conn);
        let stats = wit_conv::idle_stats_from_wit(stats);
        wit_conv::idle_to_wit(with_plugin::<P, _>(crate::IdleDecision::Pass, |p| {
            p.on_idle(&conn, &stats)
        }))
    }

    fn request(head: wit::RequestHead) -> wit::RequestDecision {
        HEAD.with(|slot| {
            let mut slot = slot.borrow_mut();
            let ours = slot.get_or_insert_with(|| {
                let nowhere = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
                crate::RequestHead::new(nowhere, 0, crate::Method::Get, "", "")
            });
            // Only a broken host packs a bad head: say so (the host logs it
            // with the plugin's name) and have no opinion, which cannot harm.
            if let Err(e) = wit_head::request_head_into(head, ours) {
                crate::host::log(crate::LogLevel::Error, &e.to_string());
                return wit::RequestDecision::Pass;
            }
            wit_http::request_to_wit(with_plugin::<P, _>(crate::RequestDecision::Pass, |p| {
                p.request(ours)
            }))
        })
    }

    fn response(head: wit::ResponseHead) -> wit::ResponseDecision {
        let head = wit_http::response_head_from_wit(head);
        wit_http::response_to_wit(with_plugin::<P, _>(crate::ResponseDecision::Pass, |p| {
            p.response(&head)
        }))
    }

    fn approve_certificate(name: String, client: wit::SocketAddress) -> wit::CertificateDecision {
        let client = wit_conv::addr_from_wit(client);
        wit_http::certificate_to_wit(with_plugin::<P, _>(crate::CertificateDecision::Pass, |p| {
            p.approve_certificate(&name, client)
        }))
    }
}
