//! One loaded plugin version: its `InstancePre`, a pool of warm instances,
//! and the guarded call path every hook goes through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use turnout_plugin_sdk::host::HostApi;
use turnout_plugin_sdk::{
    AdmitDecision, CertificateDecision, Connection, Hooks, IdleDecision, IdleStats, Peer,
    PluginInfo, Policy, PolicyDecision, RequestDecision, RequestHead, ResponseDecision,
    ResponseHead, RouteDecision, Routed,
};
use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{
    Bindings, Budget, Pre, StoreState, each_version, http_versions, v01, v02, v03,
};
use super::engine::Runtime;
use super::error::{CallFailure, FailureKind, LoadError};
use super::metrics::PluginMetrics;
use super::validate;

pub use crate::config::FailurePolicy;

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into the binary.
    Embedded,
    /// A file in the plugins directory.
    File(std::path::PathBuf),
}

struct Instance {
    store: Store<StoreState>,
    bindings: Bindings,
    calls: u64,
}

/// A plugin version that compiled, linked and initialised.
pub struct LoadedPlugin {
    name: String,
    info: PluginInfo,
    origin: Origin,
    sha256: String,
    loaded_at: SystemTime,
    failure_policy: FailurePolicy,
    config: String,
    runtime: Arc<Runtime>,
    pre: Pre,
    host: Arc<dyn HostApi>,
    pool: Mutex<Vec<Instance>>,
    metrics: PluginMetrics,
    deadline_ticks: u64,
    init_ticks: u64,
    /// Failures are logged at most once a second.
    failure_log: crate::metrics::LogThrottle,
    /// The interest's header names, parsed once.
    request_slots: Vec<http::header::HeaderName>,
    response_slots: Vec<http::header::HeaderName>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.info.version)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn classify(store: &Store<StoreState>, e: &wasmtime::Error, otherwise: FailureKind) -> CallFailure {
    if store.data().limiter.memory_limit_hit {
        let max = store.data().limiter.max_memory;
        return CallFailure::new(
            FailureKind::MemoryLimit,
            format!("memory limit of {max} bytes reached"),
        );
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            CallFailure::new(FailureKind::Deadline, "deadline exceeded")
        }
        Some(_) => {
            let mut msg = format!("{e:#}");
            msg.truncate(1_000);
            CallFailure::new(FailureKind::Trap, msg)
        }
        None => CallFailure::new(otherwise, format!("{e:#}")),
    }
}

/// Everything needed to make instances, before a [`LoadedPlugin`] exists.
pub(crate) struct Prepared<'a> {
    pub(crate) runtime: &'a Arc<Runtime>,
    pub(crate) pre: &'a Pre,
    pub(crate) host: &'a Arc<dyn HostApi>,
    pub(crate) config: &'a str,
    pub(crate) init_ticks: u64,
}

impl Prepared<'_> {
    /// A fresh instance with `init` already run.
    fn instantiate(&self) -> Result<(Instance, PluginInfo), CallFailure> {
        let _running = self.runtime.enter_call();
        let mut store = Store::new(
            &self.runtime.engine,
            StoreState::new(self.host.clone(), self.runtime.config.max_memory),
        );
        store.limiter(|s| &mut s.limiter);
        if self.runtime.config.deadlines {
            // See `Budget`: a deadline reached while the thread was
            // descheduled extends the call once more instead of failing it.
            let tick = self.runtime.config.epoch_tick.max(Duration::from_micros(1));
            store.epoch_deadline_callback(move |mut ctx| {
                let budget = &mut ctx.data_mut().budget;
                if !budget.extend() {
                    return Err(wasmtime::Trap::Interrupt.into());
                }
                Ok(wasmtime::UpdateDeadline::Continue(
                    u64::try_from(budget.limit.as_nanos().div_ceil(tick.as_nanos()))
                        .unwrap_or(u64::MAX)
                        .saturating_add(1),
                ))
            });
            store.data_mut().budget = Budget::start(self.runtime.config.init_deadline);
            store.set_epoch_deadline(self.init_ticks);
        }
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e, FailureKind::Instantiate))?;
        let info = http_versions!(
            &bindings,
            |g, _conv, http| g
                .call_init(&mut store, self.config)
                .map(|r| r.map(http::info_from_wit)),
            |old| old
                .turnout_plugin_hooks()
                .call_init(&mut store, self.config)
                .map(|r| r.map(v01::info_from_wit))
        )
        .map_err(|e| classify(&store, &e, FailureKind::Init))?
        .map_err(|msg| CallFailure::new(FailureKind::Init, msg))?;
        validate::info(&info).map_err(|m| CallFailure::new(FailureKind::Malformed, m))?;
        Ok((
            Instance {
                store,
                bindings,
                calls: 0,
            },
            info,
        ))
    }
}

/// Inputs of [`LoadedPlugin::load`].
pub(crate) struct LoadArgs {
    pub(crate) name: String,
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) origin: Origin,
    pub(crate) config: String,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) host: Arc<dyn HostApi>,
}

impl LoadedPlugin {
    /// Compiles (or loads from cache), checks the WIT version, links,
    /// instantiates one instance and runs `init` on it.
    pub(crate) fn load(runtime: &Arc<Runtime>, args: LoadArgs) -> Result<Arc<Self>, LoadError> {
        let component = runtime.compile(&args.name, &args.bytes)?;
        let minor = check_wit_version(runtime, &args.name, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .and_then(|pre| {
                // 0.2.0 grew within its version (e.g. `approve-certificate`):
                // a component built with an older SDK lacks an export.
                let stale = |e: wasmtime::Error| {
                    e.context(format!(
                        "its hooks do not match this host's turnout:plugin@0.{minor}.0; \
                         rebuild it with turnout-plugin-sdk {WIT_VERSION}"
                    ))
                };
                Ok(match minor {
                    1 => Pre::V01(v01::PluginPre::new(pre)?),
                    2 => Pre::V02(v02::PluginPre::new(pre).map_err(stale)?),
                    _ => Pre::V03(v03::PluginPre::new(pre).map_err(stale)?),
                })
            })
            .map_err(|e| LoadError::Link {
                plugin: args.name.clone(),
                message: format!("{e:#}"),
            })?;
        let init_ticks = runtime.ticks(runtime.config.init_deadline);
        let prepared = Prepared {
            runtime,
            pre: &pre,
            host: &args.host,
            config: &args.config,
            init_ticks,
        };
        let (instance, info) = prepared.instantiate().map_err(|failure| LoadError::Init {
            plugin: args.name.clone(),
            failure,
        })?;
        let plugin = Arc::new(Self {
            sha256: hex_sha256(&args.bytes),
            name: args.name,
            origin: args.origin,
            loaded_at: SystemTime::now(),
            failure_policy: args.failure_policy,
            config: args.config,
            runtime: runtime.clone(),
            pre,
            host: args.host,
            pool: Mutex::new(Vec::new()),
            metrics: PluginMetrics::default(),
            deadline_ticks: runtime.ticks(runtime.config.call_deadline),
            init_ticks,
            failure_log: crate::metrics::LogThrottle::new(std::time::Duration::from_secs(1)),
            request_slots: super::request::header_names(&info.interest.request_headers),
            response_slots: super::request::header_names(&info.interest.response_headers),
            info,
        });
        plugin.metrics.instance_created();
        plugin.give_back(instance);
        Ok(plugin)
    }

    /// The name the operator knows it by (file stem or embedded name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What `init` returned.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The declared request header names, in slot order.
    pub(crate) fn request_slots(&self) -> &[http::header::HeaderName] {
        &self.request_slots
    }

    /// The declared response headers' values in `headers`, in slot order.
    pub fn response_slots(&self, headers: &http::HeaderMap) -> Vec<Option<Vec<u8>>> {
        super::request::fill(&self.response_slots, headers)
    }

    /// The declared request headers' values in `headers`, in slot order.
    pub fn request_slot_values(&self, headers: &http::HeaderMap) -> Vec<Option<Vec<u8>>> {
        super::request::fill(&self.request_slots, headers)
    }

    /// Embedded or file.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Hex SHA-256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// Its failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// Call statistics.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// Whether it implements `hook`.
    pub fn implements(&self, hook: Hooks) -> bool {
        self.info.hooks.contains(hook)
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, inst: Instance) {
        if inst.calls >= self.runtime.config.max_calls_per_instance {
            self.metrics.instance_dropped();
            return;
        }
        let mut pool = self.lock_pool();
        if pool.len() < self.runtime.config.max_idle_instances {
            pool.push(inst);
        } else {
            drop(pool);
            self.metrics.instance_dropped();
        }
    }

    fn take(&self) -> Result<Instance, CallFailure> {
        if let Some(inst) = self.lock_pool().pop() {
            return Ok(inst);
        }
        let prepared = Prepared {
            runtime: &self.runtime,
            pre: &self.pre,
            host: &self.host,
            config: &self.config,
            init_ticks: self.init_ticks,
        };
        let (inst, _info) = prepared.instantiate()?;
        self.metrics.instance_created();
        Ok(inst)
    }

    fn call<R>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&Bindings, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let start = Instant::now();
        let _running = self.runtime.enter_call();
        let result = self.take().and_then(|mut inst| {
            if self.runtime.config.deadlines {
                inst.store.data_mut().budget =
                    Budget::start_at(self.runtime.config.call_deadline, start);
                inst.store.set_epoch_deadline(self.deadline_ticks);
            }
            match f(&inst.bindings, &mut inst.store) {
                Ok(v) => {
                    inst.calls += 1;
                    self.give_back(inst);
                    Ok(v)
                }
                Err(e) => {
                    // A trapped instance cannot be entered again; an
                    // interrupted one may hold broken invariants. Drop it.
                    let failure = classify(&inst.store, &e, FailureKind::Trap);
                    self.metrics.instance_dropped();
                    Err(failure)
                }
            }
        });
        self.metrics.record_call(start.elapsed());
        result.inspect_err(|failure| self.failed(hook, failure))
    }

    /// Counts a failure and logs it, at most once a second per plugin (with
    /// the number of lines held back) so a broken plugin cannot flood the log.
    pub(crate) fn failed(&self, hook: &'static str, failure: &CallFailure) {
        self.metrics.record_failure(failure.kind);
        let Some(suppressed) = self.failure_log.allow() else {
            return;
        };
        tracing::warn!(
            plugin = %self.name,
            hook,
            kind = %failure.kind,
            suppressed,
            "plugin call failed: {}",
            failure.message
        );
    }

    fn malformed<T>(&self, hook: &'static str, check: Result<T, String>) -> Result<T, CallFailure> {
        check.map_err(|m| {
            let failure = CallFailure::new(FailureKind::Malformed, m);
            self.failed(hook, &failure);
            failure
        })
    }

    /// Calls `admit`.
    pub fn admit(&self, peer: &Peer) -> Result<AdmitDecision, CallFailure> {
        let d = self.call("admit", |b, s| {
            each_version!(b, |g, conv| g
                .call_admit(s, conv::peer_to_wit(peer))
                .map(conv::admit_from_wit))
        })?;
        self.malformed("admit", validate::admit(&d)).map(|()| d)
    }

    /// Calls `route`.
    pub fn route(&self, conn: &Connection) -> Result<RouteDecision, CallFailure> {
        let d = self.call("route", |b, s| {
            each_version!(b, |g, conv| g
                .call_route(s, &conv::connection_to_wit(conn))
                .map(conv::route_from_wit))
        })?;
        self.malformed("route", validate::route(&d)).map(|()| d)
    }

    /// Calls `policy`.
    pub fn policy(
        &self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> Result<PolicyDecision, CallFailure> {
        self.call("policy", |b, s| {
            each_version!(b, |g, conv| g
                .call_policy(
                    s,
                    &conv::connection_to_wit(conn),
                    &conv::routed_to_wit(route),
                    conv::policy_to_wit(defaults),
                )
                .map(conv::policy_decision_from_wit))
        })
    }

    /// Calls `on-idle`.
    pub fn on_idle(
        &self,
        conn: &Connection,
        stats: &IdleStats,
    ) -> Result<IdleDecision, CallFailure> {
        self.call("on-idle", |b, s| {
            each_version!(b, |g, conv| g
                .call_on_idle(
                    s,
                    &conv::connection_to_wit(conn),
                    &conv::idle_stats_to_wit(stats),
                )
                .map(conv::idle_from_wit))
        })
    }

    /// Calls `request` with the request's headers, which the plugin reads
    /// through `header`/`header-names` during the call (moved into the
    /// instance's state and back, never copied). `head` is `mut` for the
    /// same reason: a 0.2 plugin's head strings are moved into the call and
    /// back (a 0.3 plugin's are packed into a buffer the Store keeps). A
    /// 0.1 plugin passes.
    pub fn request(
        &self,
        head: &mut RequestHead,
        headers: &mut http::HeaderMap,
    ) -> Result<RequestDecision, CallFailure> {
        let d = self.call("request", |b, s| {
            // The headers are lent to the call (for the `header` imports)
            // and come back whatever it returns.
            s.data_mut().headers = std::mem::take(headers);
            let r = match b {
                Bindings::V01(_) => Ok(RequestDecision::Pass),
                Bindings::V02(p) => {
                    // The head's strings are lent too, and come back.
                    let arg = v02::wit_head::request_head_lend(head);
                    let r = p.turnout_plugin_hooks().call_request(&mut *s, &arg);
                    v02::wit_head::request_head_restore(head, arg);
                    r.map(v02::wit_http::request_from_wit)
                }
                Bindings::V03(p) => {
                    // Packed into the Store's buffer, which comes back.
                    let buf = std::mem::take(&mut s.data_mut().packed);
                    let arg = v03::wit_head::request_head_to_wit(head, buf);
                    let r = p.turnout_plugin_hooks().call_request(&mut *s, &arg);
                    s.data_mut().packed = arg.packed;
                    r.map(v03::wit_http::request_from_wit)
                }
            };
            *headers = std::mem::take(&mut s.data_mut().headers);
            r
        })?;
        let upstreams = self.info.interest.upstreams.len();
        self.malformed("request", validate::request(&d, upstreams))
            .map(|()| d)
    }

    /// Calls `response`. A 0.1 plugin passes.
    pub fn response(&self, head: &ResponseHead) -> Result<ResponseDecision, CallFailure> {
        let d = self.call("response", |b, s| {
            http_versions!(
                b,
                |g, _conv, http| g
                    .call_response(s, &http::response_head_to_wit(head))
                    .map(http::response_from_wit),
                |_old| Ok(ResponseDecision::Pass)
            )
        })?;
        self.malformed("response", validate::response(&d))
            .map(|()| d)
    }

    /// Calls `approve-certificate` with `name` as given (the chain
    /// normalises it). A 0.1 plugin passes: 0.1 has no such hook.
    pub fn approve_certificate(
        &self,
        name: &str,
        client: SocketAddr,
    ) -> Result<CertificateDecision, CallFailure> {
        let d = self.call("approve-certificate", |b, s| {
            http_versions!(
                b,
                |g, conv, http| g
                    .call_approve_certificate(s, name, conv::addr_to_wit(client))
                    .map(http::certificate_from_wit),
                |_old| Ok(CertificateDecision::Pass)
            )
        })?;
        self.malformed("approve-certificate", validate::certificate(&d))
            .map(|()| d)
    }
}

/// The WIT package version this host speaks.
pub const WIT_VERSION: &str = turnout_plugin_sdk::WIT_VERSION;

/// The contract minor version the component was built against (1 to 3),
/// or why it cannot be loaded.
fn check_wit_version(
    runtime: &Runtime,
    plugin: &str,
    component: &Component,
) -> Result<u32, LoadError> {
    let ty = component.component_type();
    let mut hooks_version = None;
    for (name, _) in ty.exports(&runtime.engine) {
        if let Some(rest) = name.strip_prefix("turnout:plugin/hooks") {
            hooks_version = Some(rest.strip_prefix('@').unwrap_or("(unversioned)").to_owned());
        }
    }
    let Some(version) = hooks_version else {
        return Err(LoadError::Link {
            plugin: plugin.to_owned(),
            message: "it does not export turnout:plugin/hooks; is it a Turnout plugin (built with turnout-plugin-sdk)?"
                .to_owned(),
        });
    };
    let incompatible = |found: String| LoadError::IncompatibleVersion {
        plugin: plugin.to_owned(),
        found,
        expected: WIT_VERSION,
    };
    let minor = compatible(&version).ok_or_else(|| incompatible(version))?;
    // Every import of our package must be of the same version as the hooks.
    let mixed = ty
        .imports(&runtime.engine)
        .filter_map(|(name, _)| name.strip_prefix("turnout:plugin/"))
        .filter_map(|rest| rest.split_once('@').map(|(_, v)| v.to_owned()))
        .find(|v| compatible(v) != Some(minor));
    match mixed {
        Some(v) => Err(incompatible(v)),
        None => Ok(minor),
    }
}

/// The minor version of a supported `0.1.x` / `0.2.x` / `0.3.x` (semver's rule for
/// 0.x: the minor is the compatibility line).
fn compatible(version: &str) -> Option<u32> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("0"), Some(minor @ ("1" | "2" | "3")), Some(patch), None)
            if patch.bytes().all(|b| b.is_ascii_digit()) && !patch.is_empty() =>
        {
            minor.parse().ok()
        }
        _ => None,
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_compatibility_follows_semver_for_0x() {
        assert_eq!(super::compatible("0.1.0"), Some(1));
        assert_eq!(super::compatible("0.1.7"), Some(1));
        assert_eq!(super::compatible("0.2.0"), Some(2));
        assert_eq!(super::compatible("0.2.13"), Some(2));
        assert_eq!(super::compatible("0.3.0"), Some(3));
        assert_eq!(super::compatible("0.4.0"), None);
        assert_eq!(super::compatible("1.1.0"), None);
        assert_eq!(super::compatible("0.2"), None);
        assert_eq!(super::compatible("garbage"), None);
    }
}
