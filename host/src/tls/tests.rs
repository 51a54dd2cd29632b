//! Certificate loading and resolution, with certificates rcgen makes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::tls::{CertSource, Pem, Protocol, TlsRoute, Upstream, Versions};

struct Made {
    cert: String,
    key: String,
}

fn make(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> Made {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    Made {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn ecdsa(names: &[&str]) -> Made {
    make(names, &rcgen::PKCS_ECDSA_P256_SHA256)
}

fn source(m: &Made, at: &str) -> CertSource {
    CertSource {
        cert: Pem::Text(m.cert.clone()),
        key: Pem::Text(m.key.clone()),
        ca: None,
        at: at.to_owned(),
    }
}

fn route(name: &str, port: u16, domains: &[&str], cert: Option<CertSource>) -> TlsRoute {
    TlsRoute {
        index: 0,
        name: name.to_owned(),
        reencrypt: false,
        domains: domains.iter().map(|s| s.to_string()).collect(),
        ports: vec![(port, port)],
        certificate: cert,
        acme: false,
        versions: Versions::ALL,
        protocol: Protocol::Tcp,
        upstream: Upstream::default(),
    }
}

fn config(routes: Vec<TlsRoute>, default: Option<CertSource>) -> TlsConfig {
    TlsConfig {
        routes,
        default_certificate: default,
        handshake_timeout: Duration::from_secs(10),
    }
}

fn same(a: &Arc<rustls::sign::CertifiedKey>, b: &Arc<rustls::sign::CertifiedKey>) -> bool {
    a.cert[0] == b.cert[0]
}

#[test]
fn exact_beats_wildcard_and_a_wildcard_covers_one_label() {
    let exact = ecdsa(&["a.example.com"]);
    let wild = ecdsa(&["*.example.com"]);
    let (store, report) = CertStore::load(
        &config(
            vec![
                route("wild", 443, &["*.example.com"], Some(source(&wild, "w"))),
                route("exact", 443, &["a.example.com"], Some(source(&exact, "e"))),
            ],
            None,
        ),
        &provider(),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let key_of = |i: usize| store.certs()[i].cert.key.clone();
    let got = |sni: &str| store.resolve(Some(sni), 443).unwrap();
    assert!(same(&got("a.example.com"), &key_of(1)), "exact wins");
    assert!(same(&got("b.example.com"), &key_of(0)), "wildcard");
    // Deeper than the wildcard covers, or another name: nothing.
    assert!(store.resolve(Some("x.y.example.com"), 443).is_none());
    assert!(store.resolve(Some("example.com"), 443).is_none());
}

#[test]
fn without_sni_the_ports_only_certificate_else_the_default() {
    let a = ecdsa(&["a.test"]);
    let b = ecdsa(&["b.test"]);
    let d = ecdsa(&["default.test"]);
    let routes = vec![
        route("a", 443, &["a.test"], Some(source(&a, "a"))),
        route("b", 443, &["b.test"], Some(source(&b, "b"))),
        route("c", 8443, &["a.test"], Some(source(&a, "c"))),
    ];
    let (store, _) = CertStore::load(&config(routes.clone(), None), &provider());
    assert!(store.resolve(None, 443).is_none(), "two on 443, no default");
    assert!(store.resolve(None, 8443).is_some(), "one on 8443");
    let (store, report) = CertStore::load(
        &config(routes, Some(source(&d, "defaultCertificate"))),
        &provider(),
    );
    assert!(report.errors.is_empty());
    let got = store.resolve(None, 443).unwrap();
    assert_eq!(got.cert[0], store.certs().last().unwrap().cert.key.cert[0]);
}

#[test]
fn rsa_ecdsa_and_ed25519_keys_load_and_names_are_read() {
    for alg in [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let m = make(&["k.test", "*.k.test"], alg);
        let loaded =
            certs::load(&source(&m, "x"), &provider()).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(loaded.names, ["k.test", "*.k.test"]);
        assert!(loaded.covers("a.k.test") && !loaded.covers("a.b.k.test"));
        assert!(loaded.days_left(std::time::SystemTime::now()) > 300);
    }
}

#[test]
fn broken_certificates_say_what_is_wrong_and_where() {
    let a = ecdsa(&["a.test"]);
    let b = ecdsa(&["b.test"]);
    let err = |s: CertSource| certs::load(&s, &provider()).unwrap_err().to_string();

    let mut mismatch = source(&a, "routes[0].action.tls.certificate");
    mismatch.key = Pem::Text(b.key.clone());
    let e = err(mismatch);
    assert!(
        e.starts_with("routes[0].action.tls.certificate.key: ") && e.contains("does not match"),
        "{e}"
    );

    let mut no_key = source(&a, "c");
    no_key.key = Pem::Text(a.cert.clone());
    assert!(err(no_key).contains("no private key"), "cert as key");

    let mut missing = source(&a, "c");
    missing.cert = Pem::File("/nonexistent/app.pem".into());
    let e = err(missing);
    assert!(
        e.starts_with("c.cert: cannot read /nonexistent/app.pem"),
        "{e}"
    );

    let mut garbage = source(&a, "c");
    garbage.cert =
        Pem::Text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into());
    assert!(err(garbage).starts_with("c.cert: inline PEM"), "garbage");
}

#[test]
fn files_are_read_and_a_chain_with_ca_is_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = ecdsa(&["chain.test"]);
    let ca = ecdsa(&["ca.test"]);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let source = CertSource {
        cert: Pem::File(write("leaf.pem", &leaf.cert)),
        key: Pem::File(write("leaf.key", &leaf.key)),
        ca: Some(Pem::File(write("ca.pem", &ca.cert))),
        at: "x".into(),
    };
    let loaded = certs::load(&source, &provider()).unwrap();
    assert_eq!(loaded.key.cert.len(), 2, "leaf then the ca");
    assert_eq!(loaded.files.len(), 3);
    assert!(loaded.files.iter().all(|f| f.starts_with(dir.path())));
    assert_eq!(certs::files_of(&source).len(), 3);
    assert!(Path::new(&loaded.source).ends_with("leaf.pem"));
}

#[test]
fn ten_thousand_certificates_resolve_by_index() {
    // One key for all (generating 10 000 keys is slow); the index is what
    // is measured.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut routes = Vec::new();
    for i in 0..10_000 {
        let name = format!("h{i}.example.com");
        let cert = rcgen::CertificateParams::new(vec![name.clone()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let m = Made {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        routes.push(route(
            &format!("r{i}"),
            443,
            &[&name],
            Some(source(&m, "x")),
        ));
    }
    let started = std::time::Instant::now();
    let (store, report) = CertStore::load(&config(routes, None), &provider());
    eprintln!("10 000 certificates loaded in {:?}", started.elapsed());
    assert!(report.errors.is_empty());
    let started = std::time::Instant::now();
    for i in (0..10_000).step_by(7) {
        let got = store
            .resolve(Some(&format!("h{i}.example.com")), 443)
            .unwrap();
        assert!(same(&got, &store.certs()[i].cert.key));
    }
    eprintln!("1 429 lookups in {:?}", started.elapsed());
}
