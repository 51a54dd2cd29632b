//! The native harness: each hook reaches the plugin, with what the host
//! would hand it, and a panic is reported as a trap.

use std::net::SocketAddr;

use super::{CallError, Harness, addr};
use crate::prelude::*;

/// Declares nothing and overrides no hook.
struct Silent;

impl Plugin for Silent {
    fn init(_config: &str) -> Result<Self, InitError> {
        Ok(Silent)
    }
    fn info(&self) -> PluginInfo {
        PluginInfo::new("silent", "0.1.0").hooks(Hooks::NONE)
    }
}

/// Approves `*.example.com` for clients in 10/8, refuses the rest with
/// the name and client it saw, panics for `panic.test`.
struct Approver;

impl Plugin for Approver {
    fn init(_config: &str) -> Result<Self, InitError> {
        Ok(Approver)
    }
    fn info(&self) -> PluginInfo {
        PluginInfo::new("approver", "0.1.0").hooks(Hooks::APPROVE_CERTIFICATE)
    }
    fn approve_certificate(&self, name: &str, client: SocketAddr) -> CertificateDecision {
        let ours = IpList::parse(&["10.0.0.0/8"]).expect("valid list");
        if name == "panic.test" {
            panic!("asked for {name}");
        }
        if glob_match("*.example.com", name) && ours.matches(client.ip()) {
            CertificateDecision::Approve
        } else {
            CertificateDecision::refuse(format!("{name} from {client}"))
        }
    }
}

#[test]
fn a_plugin_that_does_not_implement_approve_certificate_passes() {
    let mut h = Harness::native::<Silent>("{}").unwrap();
    assert_eq!(
        h.approve_certificate("a.example.com", addr("10.0.0.1:5000")),
        CertificateDecision::Pass
    );
}

#[test]
fn approve_certificate_gets_the_name_and_the_client() {
    let mut h = Harness::native::<Approver>("{}").unwrap();
    assert_eq!(h.info().hooks, Hooks::APPROVE_CERTIFICATE);
    assert_eq!(
        h.approve_certificate("a.example.com", addr("10.1.2.3:5000")),
        CertificateDecision::Approve
    );
    assert_eq!(
        h.approve_certificate("a.example.org", addr("10.1.2.3:5000")),
        CertificateDecision::Refuse("a.example.org from 10.1.2.3:5000".into())
    );
    assert_eq!(
        h.approve_certificate("a.example.com", addr("[2001:db8::1]:443")),
        CertificateDecision::Refuse("a.example.com from [2001:db8::1]:443".into())
    );
    // As the host (and the wasm harness) hands it: a mapped IPv6 client is IPv4.
    assert_eq!(
        h.approve_certificate("b.example.com", addr("[::ffff:10.0.0.9]:1")),
        CertificateDecision::Approve
    );
}

#[test]
fn a_panic_in_approve_certificate_is_a_trap() {
    let mut h = Harness::native::<Approver>("{}").unwrap();
    match h.try_approve_certificate("panic.test", addr("10.0.0.1:1")) {
        Err(CallError::Trap(msg)) => assert_eq!(msg, "asked for panic.test"),
        other => panic!("expected a trap, got {other:?}"),
    }
    // The harness (like the host) keeps serving after a failed call.
    assert_eq!(
        h.approve_certificate("c.example.com", addr("10.0.0.1:1")),
        CertificateDecision::Approve
    );
}
