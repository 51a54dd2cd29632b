//! The certificate index terminated handshakes look up
//! (`turnout::tls::CertStore`): 10 000 certificates, each for its own name,
//! plus wildcards — loading them all, and one lookup by SNI (exact hit,
//! wildcard hit, miss). Resolution is two hash lookups, whatever the count.
//!
//! `cargo bench -p turnout-benches --bench tls_certificates`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use turnout::config::TlsConfig;
use turnout::config::tls::{CertSource, Pem, Protocol, TlsRoute, Upstream, Versions};
use turnout::tls::{CertStore, provider};

const COUNT: usize = 10_000;

/// One route per certificate; every tenth is a wildcard. One key for all
/// (generating 10 000 keys would only slow the setup).
fn config() -> TlsConfig {
    let key = rcgen::KeyPair::generate().expect("key");
    let key_pem = key.serialize_pem();
    let routes = (0..COUNT)
        .map(|i| {
            let name = if i % 10 == 0 {
                format!("*.w{i}.example.com")
            } else {
                format!("h{i}.example.com")
            };
            let cert = rcgen::CertificateParams::new(vec![name.clone()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            TlsRoute {
                index: i,
                name: format!("r{i}"),
                reencrypt: false,
                domains: vec![name],
                ports: vec![(443, 443)],
                certificate: Some(CertSource {
                    cert: Pem::Text(cert.pem()),
                    key: Pem::Text(key_pem.clone()),
                    ca: None,
                    at: format!("routes[{i}].action.tls.certificate"),
                }),
                acme: false,
                versions: Versions::ALL,
                protocol: Protocol::Tcp,
                upstream: Upstream::default(),
            }
        })
        .collect();
    TlsConfig {
        routes,
        default_certificate: None,
        handshake_timeout: Duration::from_secs(10),
    }
}

fn benches(c: &mut Criterion) {
    let config = config();
    let provider = provider();
    let mut g = c.benchmark_group("tls_certificates");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("load-10000", |b| {
        b.iter(|| CertStore::load(black_box(&config), &provider))
    });
    g.finish();

    let (store, report) = CertStore::load(&config, &provider);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(store.certs().len(), COUNT);
    let mut g = c.benchmark_group("tls_certificates/resolve-of-10000");
    g.measurement_time(Duration::from_secs(3));
    for (case, sni) in [
        ("exact", "h5555.example.com"),
        ("wildcard", "api.w5550.example.com"),
        ("miss", "nobody.example.org"),
    ] {
        let expect_hit = case != "miss";
        assert_eq!(
            store.resolve(Some(sni), 443).is_some(),
            expect_hit,
            "{case}"
        );
        g.bench_function(case, |b| {
            b.iter(|| store.resolve(black_box(Some(sni)), 443))
        });
    }
    g.finish();
}

criterion_group!(tls_certificates, benches);
criterion_main!(tls_certificates);
