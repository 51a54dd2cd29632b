//! The ACME tests' server itself: `pebble` and `pebble-challtestsrv` start
//! on free ports, pebble's directory answers over HTTPS trusted through
//! the test CA, every name resolves to 127.0.0.1 only, and the root that
//! signs issued certificates can be fetched.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use turnout_tests::pebble::{self, PebbleOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_serves_its_directory_and_issuing_root() {
    // Nothing validates here; the ports are held so they name no one else.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = PebbleOptions::new(
        http.local_addr().unwrap().port(),
        tls.local_addr().unwrap().port(),
    );
    let check = async {
        let pebble = pebble::start(opts).await;
        assert!(pebble.directory_url().starts_with("https://127.0.0.1:"));
        assert_eq!(
            std::fs::read_to_string(pebble.directory_ca_path()).unwrap(),
            pebble.directory_ca_pem()
        );

        let dir = pebble.directory().await;
        for key in ["newNonce", "newAccount", "newOrder"] {
            let url = dir[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {dir}"));
            assert!(url.starts_with("https://127.0.0.1:"), "{key}: {url}");
        }

        let root = pebble.issuing_root_pem().await;
        assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
        assert_ne!(root, pebble.directory_ca_pem());

        assert_eq!(
            pebble.resolve("app.example.test").await,
            [IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
    };
    tokio::time::timeout(Duration::from_secs(60), check)
        .await
        .expect("pebble smoke test in time");
}
