//! A deliberately bad plugin. Its config picks the misbehaviour:
//! `{"init": "slow" | "fail" | "panic" | "ok", "route": "loop" | "membomb" |
//! "panic" | "malformed" | "ok", "admit": "loop" | "ok", "approve": "loop" |
//! "panic" | "malformed" | "refuse" | "pass" | "ok"}`. It declares
//! `approve-certificate` only when `approve` is given.

use turnout_plugin_sdk::prelude::*;

/// See the crate docs.
pub struct Misbehave {
    route: String,
    admit: String,
    approve: Option<String>,
}

fn spin_forever() -> u64 {
    // `black_box` keeps the optimiser from proving the loop has no effect.
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
        if x == u64::MAX {
            return x;
        }
    }
}

impl Plugin for Misbehave {
    fn init(config: &str) -> Result<Self, InitError> {
        let v: serde_json::Value =
            serde_json::from_str(config).map_err(|e| InitError::new(e.to_string()))?;
        let get = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("ok").to_owned();
        match get("init").as_str() {
            "slow" => {
                spin_forever();
            }
            "fail" => return Err(InitError::new("bad config: the answer is not 42")),
            "panic" => panic!("panic during init"),
            _ => {}
        }
        Ok(Misbehave {
            route: get("route"),
            admit: get("admit"),
            approve: v.get("approve").map(|_| get("approve")),
        })
    }

    fn info(&self) -> PluginInfo {
        let hooks = match self.approve {
            Some(_) => Hooks::ROUTE | Hooks::ADMIT | Hooks::APPROVE_CERTIFICATE,
            None => Hooks::ROUTE | Hooks::ADMIT,
        };
        PluginInfo::new("misbehave", env!("CARGO_PKG_VERSION")).hooks(hooks)
    }

    fn approve_certificate(
        &self,
        name: &str,
        _client: std::net::SocketAddr,
    ) -> CertificateDecision {
        match self.approve.as_deref() {
            Some("loop") => {
                spin_forever();
            }
            Some("panic") => panic!("approve-certificate panicked on purpose for {name}"),
            // Longer than the host accepts for a reason.
            Some("malformed") => return CertificateDecision::Refuse("x".repeat(300)),
            Some("refuse") => return CertificateDecision::refuse("misbehave-refuses"),
            Some("pass") => return CertificateDecision::Pass,
            _ => {}
        }
        CertificateDecision::Approve
    }

    fn admit(&self, _peer: &Peer) -> AdmitDecision {
        if self.admit == "loop" {
            spin_forever();
        }
        AdmitDecision::Pass
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        match self.route.as_str() {
            "loop" => {
                spin_forever();
            }
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("route panicked on purpose for {:?}", conn.sni()),
            "malformed" => return RouteDecision::Forward(Forward::new("bad", Vec::new())),
            _ => {}
        }
        RouteDecision::Forward(Forward::new(
            "misbehave-ok",
            vec![Target::new("127.0.0.1", 9)],
        ))
    }
}

turnout_plugin_sdk::export_plugin!(Misbehave);
