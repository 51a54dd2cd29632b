//! `approve-certificate` across the chain: through the embedded `routes`
//! plugin, and (with the `testing` feature, which builds them) the probe,
//! misbehave and 0.1 guests under `tests/guests/`. The first answer that is
//! not `pass` wins, nobody answering refuses, a plugin that does not declare
//! the hook is never called, failures follow the failure policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use turnout_plugin_sdk::testing::FakeHost;

use super::*;
use crate::plugins::{FailureKind, Runtime, RuntimeConfig};

fn runtime(deadline: Duration) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        call_deadline: deadline,
        cache_dir: None,
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn embedded(name: &str) -> &'static [u8] {
    crate::plugins::embedded()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is embedded"))
        .bytes
}

fn load(
    rt: &Arc<Runtime>,
    name: &str,
    bytes: &[u8],
    config: &str,
    policy: FailurePolicy,
) -> Arc<LoadedPlugin> {
    rt.load_plugin(name, bytes, config, policy, Arc::new(FakeHost::new()))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// A `routes` config: one terminate route per `(domain, certificate)`.
fn routes(routes: &[(&str, &str)]) -> String {
    let list: Vec<String> = routes
        .iter()
        .map(|(domain, certificate)| {
            format!(
                r#"{{ "match": {{ "ports": 443, "domains": "{domain}" }},
                     "action": {{ "type": "forward", "targets": [{{ "host": "10.0.0.1", "port": 80 }}],
                                 "tls": {{ "mode": "terminate", "certificate": {certificate} }} }} }}"#
            )
        })
        .collect();
    format!(r#"{{"routes": [{}]}}"#, list.join(","))
}

const AUTO: &str = r#""auto""#;
const FILES: &str = r#"{ "key": "k.pem", "cert": "c.pem" }"#;

fn client() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

fn approve(plugin: &str) -> Approval {
    Approval::Approve {
        plugin: plugin.to_owned(),
    }
}

fn calls(p: &LoadedPlugin) -> u64 {
    p.metrics().snapshot().calls
}

#[test]
fn the_first_answer_that_is_not_pass_wins() {
    let rt = runtime(Duration::from_secs(1));
    let guard = load(&rt, "guard", embedded("guard"), "{}", FailurePolicy::Closed);
    let first = load(
        &rt,
        "first",
        embedded("routes"),
        &routes(&[("a.example.com", AUTO), ("b.example.com", FILES)]),
        FailurePolicy::Closed,
    );
    let second = load(
        &rt,
        "second",
        embedded("routes"),
        &routes(&[("*.example.com", AUTO)]),
        FailurePolicy::Closed,
    );
    let chain = Chain::new(vec![guard.clone(), first.clone(), second.clone()]);
    assert!(!guard.implements(Hooks::APPROVE_CERTIFICATE));
    assert!(first.implements(Hooks::APPROVE_CERTIFICATE));

    assert_eq!(
        chain.approve_certificate("a.example.com", client()),
        approve("first")
    );
    // The name is normalised before any plugin sees it.
    assert_eq!(
        chain.approve_certificate(" A.Example.COM. ", client()),
        approve("first")
    );
    assert_eq!(calls(&second), 0, "an answer ends the asking");
    // `first` lists it without "auto": its refusal wins over `second`.
    assert_eq!(
        chain.approve_certificate("b.example.com", client()),
        Approval::Refuse {
            plugin: "first".into(),
            reason: "no-auto-route".into()
        }
    );
    assert!(
        !chain
            .approve_certificate("b.example.com", client())
            .is_approved()
    );
    // `first` does not list it and passes; `second` covers it.
    assert_eq!(
        chain.approve_certificate("c.example.com", client()),
        approve("second")
    );
    assert!(
        chain
            .approve_certificate("c.example.com", client())
            .is_approved()
    );
    // Nobody lists it: everyone passes, which refuses.
    assert_eq!(
        chain.approve_certificate("example.org", client()),
        Approval::NoAnswer
    );
    assert!(!Approval::NoAnswer.is_approved());
    // Nothing to ask about.
    let before = calls(&first);
    assert_eq!(chain.approve_certificate(".", client()), Approval::NoAnswer);
    assert_eq!(chain.approve_certificate("", client()), Approval::NoAnswer);
    assert_eq!(calls(&first), before);
    assert_eq!(calls(&guard), 0, "guard does not declare the hook");
}

#[test]
fn without_auto_routes_nobody_is_asked() {
    let rt = runtime(Duration::from_secs(1));
    let files = load(
        &rt,
        "routes",
        embedded("routes"),
        &routes(&[("a.example.com", FILES)]),
        FailurePolicy::Closed,
    );
    assert!(!files.implements(Hooks::APPROVE_CERTIFICATE));
    let chain = Chain::new(vec![files.clone()]);
    assert_eq!(
        chain.approve_certificate("a.example.com", client()),
        Approval::NoAnswer
    );
    assert_eq!(calls(&files), 0);
    assert_eq!(
        Chain::default().approve_certificate("a.example.com", client()),
        Approval::NoAnswer
    );
}

/// The guests, built for wasm32-wasip2 (cargo caches them).
#[cfg(feature = "testing")]
mod guests {
    use super::*;

    fn guest(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/guests")
            .join(name);
        let wasm = crate::plugins::build_plugin(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::read(wasm).unwrap()
    }

    fn misbehave(rt: &Arc<Runtime>, how: &str, policy: FailurePolicy) -> Arc<LoadedPlugin> {
        let config = format!(r#"{{"approve": "{how}"}}"#);
        load(rt, "misbehave", &guest("misbehave"), &config, policy)
    }

    #[test]
    fn the_name_and_the_client_cross_intact() {
        let rt = runtime(Duration::from_secs(1));
        let probe = load(&rt, "probe", &guest("probe"), "{}", FailurePolicy::Closed);
        assert!(probe.implements(Hooks::APPROVE_CERTIFICATE));
        let chain = Chain::new(vec![probe]);
        assert_eq!(
            chain.approve_certificate("x.probe.test", client()),
            approve("probe")
        );
        for (client, seen) in [
            ("[2001:db8::7]:443", "[2001:db8::7]:443"),
            // IPv4-mapped IPv6 is delivered as IPv4.
            ("[::ffff:10.1.2.3]:5000", "10.1.2.3:5000"),
        ] {
            assert_eq!(
                chain.approve_certificate("Other.Test.", client.parse().unwrap()),
                Approval::Refuse {
                    plugin: "probe".into(),
                    reason: format!("other.test from {seen}")
                }
            );
        }
    }

    #[test]
    fn a_0_1_plugin_never_has_the_hook() {
        let rt = runtime(Duration::from_secs(1));
        let legacy = load(
            &rt,
            "legacy",
            &guest("legacy-v01"),
            "{}",
            FailurePolicy::Closed,
        );
        assert!(!legacy.implements(Hooks::APPROVE_CERTIFICATE));
        assert_eq!(
            legacy.approve_certificate("a.example.com", client()),
            Ok(CertificateDecision::Pass)
        );
        let chain = Chain::new(vec![legacy]);
        assert_eq!(
            chain.approve_certificate("a.example.com", client()),
            Approval::NoAnswer
        );
    }

    #[test]
    fn a_failure_follows_the_failure_policy() {
        let rt = runtime(Duration::from_millis(50));
        let routes = load(
            &rt,
            "routes",
            embedded("routes"),
            &super::routes(&[("a.example.com", AUTO)]),
            FailurePolicy::Closed,
        );
        for (how, kind) in [
            ("panic", FailureKind::Trap),
            ("malformed", FailureKind::Malformed),
            ("loop", FailureKind::Deadline),
        ] {
            let closed = misbehave(&rt, how, FailurePolicy::Closed);
            let chain = Chain::new(vec![closed.clone(), routes.clone()]);
            assert_eq!(
                chain.approve_certificate("a.example.com", client()),
                Approval::Failed {
                    plugin: "misbehave".into()
                },
                "{how}: closed refuses"
            );
            assert_eq!(closed.metrics().failures(kind), 1, "{how}");
            let failure = closed
                .approve_certificate("a.example.com", client())
                .unwrap_err();
            assert_eq!(failure.kind, kind, "{how}: {failure}");

            let open = misbehave(&rt, how, FailurePolicy::Open);
            let chain = Chain::new(vec![open, routes.clone()]);
            assert_eq!(
                chain.approve_certificate("a.example.com", client()),
                approve("routes"),
                "{how}: open is a pass"
            );
        }
        // A working plugin's refusal is a refusal, not a failure.
        let refuses = misbehave(&rt, "refuse", FailurePolicy::Closed);
        let chain = Chain::new(vec![refuses.clone(), routes]);
        assert_eq!(
            chain.approve_certificate("a.example.com", client()),
            Approval::Refuse {
                plugin: "misbehave".into(),
                reason: "misbehave-refuses".into()
            }
        );
        assert!(
            FailureKind::ALL
                .iter()
                .all(|k| refuses.metrics().failures(*k) == 0)
        );
    }
}
