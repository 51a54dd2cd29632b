//! ACME state shared by every instance: the account, each name's
//! certificate, the list of names (on-demand ones included), a claim per
//! name so that exactly one instance orders it, and HTTP-01 answers any
//! instance can serve.
//!
//! Keys: `{prefix}acme:account`, `{prefix}acme:cert:{name}`,
//! `{prefix}acme:names` (a set), `{prefix}acme:lock:{name}` (the claim:
//! its holder's id, with a TTL of the longest order), and
//! `{prefix}acme:http01:{token}` (TTL: the longest order).
//!
//! The disk store (`acme.store`) stays underneath: every write goes to
//! both, and a read the shared store cannot answer (down, or never given
//! the entry) is answered from disk — so an instance keeps its own
//! certificates through a Redis outage, and one that ordered during an
//! outage publishes its certificate to Redis at the next read.
//!
//! The [`Store`] trait is synchronous: `acme/` calls it off the event loop
//! (`spawn_blocking`), and these calls wait at most [`super::SLOW_CALL`].

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;

use super::{Cluster, SLOW_CALL, Unavailable};
use crate::acme::{ChallengeFuture, SharedChallenges};
use crate::acme::{Claim, DiskStore, Store, StoreError};

/// Releases a claim only if this instance still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How long a published HTTP-01 answer lives at most (an order's bound).
const ANSWER_TTL: Duration = Duration::from_secs(300);

/// ACME's store on a [`Cluster`], over the disk one.
#[derive(Debug)]
pub struct RedisAcmeStore {
    cluster: Arc<Cluster>,
    disk: DiskStore,
    /// What this process writes into a claim: its instance name and pid
    /// (two processes with one instance name still exclude each other).
    holder: String,
}

impl RedisAcmeStore {
    /// The shared store, with `disk` underneath.
    pub fn new(cluster: Arc<Cluster>, disk: DiskStore) -> Self {
        let holder = format!("{}/{}", cluster.config.instance, std::process::id());
        Self {
            cluster,
            disk,
            holder,
        }
    }

    fn key(&self, what: std::fmt::Arguments<'_>) -> String {
        self.cluster.key(format_args!("acme:{what}"))
    }

    fn get(&self, key: String) -> Result<Option<String>, Unavailable> {
        self.cluster
            .client
            .call_blocking(SLOW_CALL, move |mut c| async move { c.get(key).await })
    }

    /// Writes `value` at `key` (and adds `name` to the list), best effort
    /// once the disk has it: logged, never failing the caller.
    fn publish(&self, key: String, value: String, name: Option<String>) {
        let names = self.key(format_args!("names"));
        let result = self
            .cluster
            .client
            .call_blocking(SLOW_CALL, move |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.atomic().set(&key, value);
                if let Some(n) = name {
                    pipe.sadd(names, n);
                }
                pipe.query_async::<()>(&mut c).await
            });
        if let Err(e) = result {
            tracing::warn!(target: "turnout::cluster", error = %e,
                "ACME state kept on disk only: the cluster store did not take it");
        }
    }

    /// Copies a certificate another instance ordered to this one's disk
    /// when the disk holds another (or none): an instance restarted while
    /// Redis is down (or emptied) still serves it. Best effort: a failed
    /// write is logged, the certificate is served all the same.
    fn keep_on_disk(&self, name: &str, pem: &str) {
        match self.disk.certificate(name) {
            Ok(Some(local)) if local == pem => {}
            _ => {
                if let Err(e) = self.disk.save_certificate(name, pem) {
                    tracing::warn!(target: "turnout::cluster", name, error = %e,
                        "the certificate from the cluster store is not kept on disk");
                }
            }
        }
    }
}

impl Store for RedisAcmeStore {
    fn account(&self) -> Result<Option<String>, StoreError> {
        match self.get(self.key(format_args!("account"))) {
            Ok(Some(json)) => Ok(Some(json)),
            Ok(None) => {
                let local = self.disk.account()?;
                if let Some(json) = &local {
                    self.publish(self.key(format_args!("account")), json.clone(), None);
                }
                Ok(local)
            }
            Err(_) => self.disk.account(),
        }
    }

    fn save_account(&self, json: &str) -> Result<(), StoreError> {
        self.disk.save_account(json)?;
        self.publish(self.key(format_args!("account")), json.to_owned(), None);
        Ok(())
    }

    fn certificate(&self, name: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(format_args!("cert:{name}"));
        match self.get(key.clone()) {
            Ok(Some(pem)) => {
                self.keep_on_disk(name, &pem);
                Ok(Some(pem))
            }
            Ok(None) => {
                let local = self.disk.certificate(name)?;
                if let Some(pem) = &local {
                    self.publish(key, pem.clone(), Some(name.to_owned()));
                }
                Ok(local)
            }
            Err(_) => self.disk.certificate(name),
        }
    }

    fn save_certificate(&self, name: &str, pem: &str) -> Result<(), StoreError> {
        let disk = self.disk.save_certificate(name, pem);
        self.publish(
            self.key(format_args!("cert:{name}")),
            pem.to_owned(),
            Some(name.to_owned()),
        );
        disk
    }

    fn names(&self) -> Result<Vec<String>, StoreError> {
        let key = self.key(format_args!("names"));
        let mut names = self.disk.names()?;
        match self
            .cluster
            .client
            .call_blocking(SLOW_CALL, move |mut c| async move {
                c.smembers::<_, Vec<String>>(key).await
            }) {
            Ok(shared) => names.extend(shared),
            Err(e) => tracing::warn!(target: "turnout::cluster", error = %e,
                "listing ACME names: the cluster store's are left out"),
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn describe(&self, name: Option<&str>) -> String {
        match name {
            Some(n) => format!(
                "redis {} (and {})",
                self.key(format_args!("cert:{n}")),
                self.disk.describe(Some(n))
            ),
            None => format!(
                "redis {}* (and {})",
                self.key(format_args!("")),
                self.disk.describe(None)
            ),
        }
    }

    fn claim(&self, name: &str, ttl: Duration) -> Claim {
        let key = self.key(format_args!("lock:{name}"));
        let holder = self.holder.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let result = self
            .cluster
            .client
            .call_blocking(SLOW_CALL, move |mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await?;
                if set.is_some() {
                    return Ok(true);
                }
                // Ours already (a retry of our own order)?
                let now: Option<String> = c.get(&key).await?;
                Ok(now.as_deref() == Some(holder.as_str()))
            });
        match result {
            Ok(true) => Claim::Ours,
            Ok(false) => Claim::Theirs,
            Err(e) => {
                tracing::warn!(target: "turnout::cluster", name, error = %e,
                    "cannot claim the order in the cluster store: ordering here (another instance may too)");
                Claim::Ours
            }
        }
    }

    fn release(&self, name: &str) {
        let key = self.key(format_args!("lock:{name}"));
        let holder = self.holder.clone();
        // A claim left behind expires with its TTL: failing here is benign.
        let _ = self
            .cluster
            .client
            .call_blocking(SLOW_CALL, move |mut c| async move {
                redis::Script::new(RELEASE)
                    .key(key)
                    .arg(holder)
                    .invoke_async::<i64>(&mut c)
                    .await
            });
    }

    fn shared_challenges(&self) -> Option<Arc<dyn SharedChallenges>> {
        Some(Arc::new(RedisChallenges {
            cluster: self.cluster.clone(),
        }))
    }
}

/// HTTP-01 answers in the cluster store.
#[derive(Debug)]
struct RedisChallenges {
    cluster: Arc<Cluster>,
}

impl RedisChallenges {
    fn key(&self, token: &str) -> String {
        self.cluster.key(format_args!("acme:http01:{token}"))
    }
}

impl SharedChallenges for RedisChallenges {
    fn post<'a>(&'a self, token: &'a str, key_authorization: &'a str) -> ChallengeFuture<'a, ()> {
        let key = self.key(token);
        let value = key_authorization.to_owned();
        let ttl = u64::try_from(ANSWER_TTL.as_millis()).unwrap_or(u64::MAX);
        Box::pin(async move {
            let stored = self
                .cluster
                .client
                .call(SLOW_CALL, move |mut c| async move {
                    c.pset_ex::<_, _, ()>(key, value, ttl).await
                })
                .await;
            if let Err(e) = stored {
                tracing::warn!(target: "turnout::cluster", error = %e,
                    "HTTP-01 answer not shared: only this instance can answer the validation");
            }
        })
    }

    fn withdraw(&self, token: &str) {
        let key = self.key(token);
        let cluster = self.cluster.clone();
        // From a drop: in the background, on the cluster's own thread.
        self.cluster.client.handle.spawn(async move {
            let _ = cluster
                .client
                .call(
                    SLOW_CALL,
                    move |mut c| async move { c.del::<_, ()>(key).await },
                )
                .await;
        });
    }

    fn lookup<'a>(&'a self, token: &'a str) -> ChallengeFuture<'a, Option<String>> {
        let key = self.key(token);
        Box::pin(async move {
            self.cluster
                .client
                .call(SLOW_CALL, move |mut c| async move {
                    c.get::<_, Option<String>>(key).await
                })
                .await
                .ok()
                .flatten()
        })
    }
}
