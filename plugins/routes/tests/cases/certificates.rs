//! `approve-certificate`: names that routes with `certificate: "auto"`
//! list are approved, names only other routes list are refused, the rest
//! are passed on; the hook is declared only with such routes.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::addr;

use super::{Init, load};

const CERTIFICATES: &str = r#"{"routes": [
  { "name": "api", "match": { "ports": 443, "domains": ["api.example.com", "API2.Example.com."] },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 80 }],
                "tls": { "mode": "terminate", "certificate": "auto" } } },
  { "name": "apps", "match": { "ports": 8443, "domains": "*.apps.example.com" },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.2", "port": 443 }],
                "tls": { "mode": "terminate-and-reencrypt", "certificate": "auto" } } },
  { "name": "shop", "match": { "ports": 443, "domains": "shop-*.example.net" },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.3", "port": 80 }],
                "tls": { "mode": "terminate", "certificate": "auto" } } },
  { "name": "files", "match": { "ports": 443, "domains": ["www.example.com", "*.static.example.com"] },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.4", "port": 80 }],
                "tls": { "mode": "terminate",
                         "certificate": { "key": "/etc/k.pem", "cert": "/etc/c.pem" } } } },
  { "name": "default-cert", "match": { "ports": 443, "domains": "default.example.com" },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.5", "port": 80 }],
                "tls": { "mode": "terminate" } } },
  { "name": "pass", "match": { "ports": 443, "domains": ["legacy.example.com", "old.apps.example.com"] },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.6", "port": 443 }],
                "tls": { "mode": "passthrough", "certificate": "auto" } } },
  { "name": "off", "enabled": false, "match": { "ports": 443, "domains": "off.example.com" },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.7", "port": 80 }],
                "tls": { "mode": "terminate", "certificate": "auto" } } },
  { "name": "every-name", "match": { "ports": 9443 },
    "action": { "type": "forward", "targets": [{ "host": "10.0.0.8", "port": 80 }],
                "tls": { "mode": "terminate", "certificate": "auto" } } }
]}"#;

pub(crate) fn approval(init: Init<'_>) {
    let mut h = load(init, CERTIFICATES);
    assert!(
        h.info().hooks.contains(Hooks::APPROVE_CERTIFICATE),
        "auto routes list domains: {:?}",
        h.info().hooks
    );
    // Neither the port nor the client matters: the certificate is for the name.
    let client = addr("192.0.2.7:40000");
    let approve = CertificateDecision::Approve;
    let refuse = CertificateDecision::refuse("no-auto-route");
    for (name, want) in [
        // An exact name of an auto route, however the config spelt it.
        ("api.example.com", &approve),
        ("api2.example.com", &approve),
        // Covered by an auto route's wildcards, as SNI routing matches them.
        ("a.apps.example.com", &approve),
        ("a.b.apps.example.com", &approve),
        ("shop-eu.example.net", &approve),
        // An auto route covers it, whatever another route says.
        ("old.apps.example.com", &approve),
        // Only routes with another certificate, none, or passthrough list it.
        ("www.example.com", &refuse),
        ("img.static.example.com", &refuse),
        ("default.example.com", &refuse),
        ("legacy.example.com", &refuse),
        // Nobody lists it: not this plugin's to decide (the chain refuses).
        ("apps.example.com", &CertificateDecision::Pass),
        ("shop.example.net", &CertificateDecision::Pass),
        ("example.com", &CertificateDecision::Pass),
        ("unknown.test", &CertificateDecision::Pass),
        // A disabled route lists nothing.
        ("off.example.com", &CertificateDecision::Pass),
        ("", &CertificateDecision::Pass),
    ] {
        assert_eq!(&h.approve_certificate(name, client), want, "{name:?}");
    }
    // The host hands names lower-cased without a trailing dot; others
    // are read the same way.
    assert_eq!(
        h.approve_certificate("API.Example.COM.", addr("[2001:db8::1]:443")),
        CertificateDecision::Approve
    );
}

pub(crate) fn declared_only_with_auto_routes(init: Init<'_>) {
    /// A route on 443 with these `match` extras, `action.tls` and route keys.
    fn route(name: &str, domains: &str, tls: &str, extra: &str) -> String {
        format!(
            r#"{{ "name": "{name}", "match": {{ "ports": 443{domains} }}{extra},
                 "action": {{ "type": "forward", "targets": [{{ "host": "10.0.0.1", "port": 80 }}]{tls} }} }}"#
        )
    }
    let a = r#", "domains": "a.example.com""#;
    let file_cert =
        r#", "tls": { "mode": "terminate", "certificate": { "key": "k", "cert": "c" } }"#;
    let auto = r#", "tls": { "mode": "terminate", "certificate": "auto" }"#;
    let passthrough_auto = r#", "tls": { "mode": "passthrough", "certificate": "auto" }"#;
    for route in [
        route("plain", a, "", ""),
        route("files", a, file_cert, ""),
        route("passthrough", a, passthrough_auto, ""),
        // Auto, but no domains to approve.
        route("every-name", "", auto, ""),
        route("off", a, auto, r#", "enabled": false"#),
    ] {
        let config = format!(r#"{{"routes": [{route}]}}"#);
        let h = load(init, &config);
        assert!(
            !h.info().hooks.contains(Hooks::APPROVE_CERTIFICATE),
            "{config}: {:?}",
            h.info().hooks
        );
    }
    let config = format!(
        r#"{{"routes": [{}, {}]}}"#,
        route("files", r#", "domains": "b.example.com""#, file_cert, ""),
        route("auto", a, auto, "")
    );
    let mut h = load(init, &config);
    assert_eq!(
        h.info().hooks,
        Hooks::ROUTE | Hooks::REQUEST | Hooks::APPROVE_CERTIFICATE
    );
    assert_eq!(
        h.approve_certificate("a.example.com", addr("10.0.0.1:1")),
        CertificateDecision::Approve
    );
    assert_eq!(
        h.approve_certificate("b.example.com", addr("10.0.0.1:1")),
        CertificateDecision::refuse("no-auto-route")
    );
}
