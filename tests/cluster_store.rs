//! The cluster store against a real `redis-server`, below the proxy: the
//! plugin key-value store keeps the memory store's semantics (TTL,
//! counters, not-a-counter, saturation, eviction, one space per plugin),
//! the connection rate window is shared, ACME's claims exclude each other
//! and its state is visible from another instance, and an outage is
//! answered locally at once and recovered from.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use turnout::acme::{Claim, DiskStore, Store};
use turnout::cluster::{Cluster, RedisAcmeStore, State};
use turnout::config::cluster::ClusterConfig;
use turnout_plugin_sdk::KvError;
use turnout_tests::cluster::eventually;
use turnout_tests::redis::Redis;

fn config(url: &str, prefix: &str, instance: &str) -> ClusterConfig {
    ClusterConfig {
        redis: url.to_owned(),
        prefix: prefix.to_owned(),
        instance: instance.to_owned(),
        // Generous: a loaded CI machine must not make a call time out.
        timeout: Duration::from_millis(500),
        kv_read_cache: Duration::ZERO,
        heartbeat: Duration::from_millis(200),
    }
}

async fn connected(url: &str, prefix: &str, instance: &str) -> Arc<Cluster> {
    let c = Cluster::start(config(url, prefix, instance)).unwrap();
    assert!(
        c.wait_connected(Duration::from_secs(10)).await,
        "connects to {url}"
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_kv_store_keeps_the_memory_stores_semantics() {
    let redis = Redis::start();
    let c = connected(&redis.url(), "kv-test:", "a").await;
    let other = connected(&redis.url(), "kv-test:", "b").await;
    // The plugin host imports are synchronous: called off the runtime.
    let (kv, kv_b) = (c.shared_kv(), other.shared_kv());
    tokio::task::spawn_blocking(move || {
        // Counters with a TTL on creation; seen by another instance.
        assert_eq!(kv.increment("p", "n", 2, Some(300), 100), Ok(Ok(2)));
        assert_eq!(kv_b.increment("p", "n", -5, None, 100), Ok(Ok(-3)));
        assert_eq!(kv_b.get("p", "n"), Ok(Some((-3i64).to_le_bytes().to_vec())));
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(kv.increment("p", "n", 1, None, 100), Ok(Ok(1)), "expired");

        // Bytes are not a counter; eight bytes are one (as in memory).
        kv.set("p", "s", b"abc", None, 100).unwrap();
        assert_eq!(kv.get("p", "s"), Ok(Some(b"abc".to_vec())));
        assert_eq!(
            kv.increment("p", "s", 1, None, 100),
            Ok(Err(KvError::NotACounter))
        );
        kv.set("p", "eight", &7i64.to_le_bytes(), None, 100)
            .unwrap();
        assert_eq!(kv.increment("p", "eight", 1, None, 100), Ok(Ok(8)));
        // Saturates at the i64 bounds, exactly.
        assert_eq!(
            kv.increment("p", "m", i64::MAX, None, 100),
            Ok(Ok(i64::MAX))
        );
        assert_eq!(kv.increment("p", "m", 1, None, 100), Ok(Ok(i64::MAX)));
        assert_eq!(kv.get("p", "m"), Ok(Some(i64::MAX.to_le_bytes().to_vec())));

        // Delete says whether it was there.
        assert_eq!(kv.delete("p", "s"), Ok(true));
        assert_eq!(kv.delete("p", "s"), Ok(false));
        assert_eq!(kv.get("p", "s"), Ok(None));

        // A TTL on set; one space per plugin.
        kv.set("p", "t", b"x", Some(200), 100).unwrap();
        kv.set("q", "t", b"y", None, 100).unwrap();
        assert_eq!(kv.get("q", "t"), Ok(Some(b"y".to_vec())));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(kv.get("p", "t"), Ok(None));
        assert_eq!(kv.get("q", "t"), Ok(Some(b"y".to_vec())));

        // Past max entries the oldest write goes.
        for k in ["e1", "e2", "e3", "e4"] {
            kv.set("bounded", k, b"v", None, 3).unwrap();
            // The index orders writes by their millisecond: one apart.
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(kv.get("bounded", "e1"), Ok(None), "evicted");
        for k in ["e2", "e3", "e4"] {
            assert_eq!(kv.get("bounded", k), Ok(Some(b"v".to_vec())), "{k}");
        }
    })
    .await
    .unwrap();
    assert_eq!(c.state(), State::Up);
    assert!(c.view().round_trips > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_counted_by_every_instance_together() {
    let redis = Redis::start();
    let a = connected(&redis.url(), "rate-test:", "a").await;
    let b = connected(&redis.url(), "rate-test:", "b").await;
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(a.count_connection(ip).await, Ok(1));
    assert_eq!(b.count_connection(ip).await, Ok(2));
    assert_eq!(a.count_connection(ip).await, Ok(3));
    // IPv4-mapped IPv6 is the same client.
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(b.count_connection(mapped).await, Ok(4));
    assert_eq!(
        b.count_connection("192.0.2.2".parse().unwrap()).await,
        Ok(1)
    );
}

/// The window slides by the second, whichever instance counts, with
/// clocks that disagree, and after a pause longer than the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_connection_window_slides_and_keeps_its_total() {
    let redis = Redis::start();
    let a = connected(&redis.url(), "slide-test:", "a").await;
    let b = connected(&redis.url(), "slide-test:", "b").await;
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let t = 1_800_000_000;
    assert_eq!(a.count_connection_at(ip, t).await, Ok(1));
    assert_eq!(b.count_connection_at(ip, t).await, Ok(2));
    assert_eq!(a.count_connection_at(ip, t + 30).await, Ok(3));
    assert_eq!(b.count_connection_at(ip, t + 59).await, Ok(4));
    // Second t leaves the window at t + 60: its two connections go.
    assert_eq!(a.count_connection_at(ip, t + 60).await, Ok(3));
    // b's clock is 10 s behind a's: counted all the same, and taken out
    // again when the window passes the second it landed in.
    assert_eq!(b.count_connection_at(ip, t + 50).await, Ok(4));
    // At t + 95 the window starts at t + 36: t + 30 goes.
    assert_eq!(a.count_connection_at(ip, t + 95).await, Ok(4));
    // Long after (the key would have expired; here it has not, as no real
    // time passed): everything before is gone, in one count or a few.
    assert_eq!(a.count_connection_at(ip, t + 400).await, Ok(1));
    assert_eq!(b.count_connection_at(ip, t + 401).await, Ok(2));
    let key = "slide-test:rate:198.51.100.7";
    let fields: Vec<String> = redis.query(::redis::cmd("HKEYS").arg(key));
    assert!(
        fields.len() <= 4,
        "the hash keeps only the window's seconds: {fields:?}"
    );
    let total: Option<String> = redis.query(::redis::cmd("HGET").arg(key).arg("total"));
    assert_eq!(total.as_deref(), Some("2"));
    let ttl: i64 = redis.query(::redis::cmd("PTTL").arg(key));
    assert!(
        (60_000..=61_000).contains(&ttl),
        "expires 61 s after its last write: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_claims_exclude_each_other_and_state_is_shared() {
    let redis = Redis::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = RedisAcmeStore::new(
        connected(&redis.url(), "acme-test:", "a").await,
        DiskStore::open(dir_a.path()).unwrap(),
    );
    let b = RedisAcmeStore::new(
        connected(&redis.url(), "acme-test:", "b").await,
        DiskStore::open(dir_b.path()).unwrap(),
    );
    tokio::task::spawn_blocking(move || {
        let ttl = Duration::from_secs(30);
        assert_eq!(a.claim("a.test", ttl), Claim::Ours);
        assert_eq!(a.claim("a.test", ttl), Claim::Ours, "its own claim again");
        assert_eq!(b.claim("a.test", ttl), Claim::Theirs);
        b.release("a.test");
        assert_eq!(b.claim("a.test", ttl), Claim::Theirs, "not b's to release");
        a.release("a.test");
        assert_eq!(b.claim("a.test", ttl), Claim::Ours);

        a.save_account("{\"id\": 1}").unwrap();
        assert_eq!(b.account().unwrap().as_deref(), Some("{\"id\": 1}"));
        a.save_certificate("a.test", "PEM-A").unwrap();
        assert_eq!(b.certificate("a.test").unwrap().as_deref(), Some("PEM-A"));
        assert_eq!(b.names().unwrap(), vec!["a.test".to_owned()]);
        assert!(
            b.describe(Some("a.test"))
                .contains("acme-test:acme:cert:a.test")
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_answered_locally_and_recovered_from() {
    let mut redis = Redis::start();
    let c = connected(&redis.url(), "outage-test:", "a").await;
    let kv = c.shared_kv();
    redis.kill();
    let probe = kv.clone();
    // The first call after the kill finds it gone; later ones are not
    // even sent.
    tokio::task::spawn_blocking(move || {
        let _ = probe.increment("p", "n", 1, None, 100);
        assert!(probe.increment("p", "n", 1, None, 100).is_err());
    })
    .await
    .unwrap();
    assert_eq!(c.state(), State::Down);
    let v = c.view();
    assert!(
        v.errors >= 1 && v.fallbacks >= 1 && v.went_down == 1,
        "{v:?}"
    );
    assert!(c.instances().await.is_err());
    redis.restart();
    eventually("the store is up again", Duration::from_secs(15), || async {
        (c.state() == State::Up).then_some(())
    })
    .await;
    let probe = kv.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(probe.increment("p", "n", 1, None, 100), Ok(Ok(1)));
    })
    .await
    .unwrap();
    assert_eq!(c.view().went_up, 2, "connected, then back");
    // Its heartbeat is written again (Redis came back empty).
    let listed = eventually(
        "its heartbeat is listed again",
        Duration::from_secs(10),
        || async {
            let listed = c.instances().await.unwrap();
            (listed.len() == 1).then_some(listed)
        },
    )
    .await;
    assert_eq!(listed[0].instance, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_does_not_stop_a_start() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Cluster::start(config(&format!("redis://127.0.0.1:{port}/0"), "x:", "a")).unwrap();
    assert!(!c.wait_connected(Duration::from_secs(5)).await);
    assert_eq!(c.state(), State::Down);
    let kv = c.shared_kv();
    tokio::task::spawn_blocking(move || assert!(kv.get("p", "k").is_err()))
        .await
        .unwrap();
    assert!(c.view().fallbacks >= 1);
}
