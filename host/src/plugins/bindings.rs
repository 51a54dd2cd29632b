//! wasmtime's generated bindings for `wit/plugin.wit` (0.3),
//! `wit/v0.2/plugin.wit` and `wit/v0.1/plugin.wit`, the per-Store state,
//! and the host side of the `host` interface for each.

use std::sync::Arc;

use turnout_plugin_sdk::host::HostApi;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The current contract (`wit/plugin.wit`, 0.3): 0.2 with the request
/// head packed.
pub(crate) mod v03 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
    });

    turnout_plugin_sdk::__wit_conversions!(crate::plugins::bindings::v03::turnout::plugin::types);
    turnout_plugin_sdk::__wit_conversions_v02!(
        crate::plugins::bindings::v03::turnout::plugin::types
    );
    turnout_plugin_sdk::__wit_request_head_v03!(
        crate::plugins::bindings::v03::turnout::plugin::types
    );
}

/// The 0.2 contract (`wit/v0.2/plugin.wit`): components built against it
/// keep loading and see every hook; their request head is lowered field by
/// field.
pub(crate) mod v02 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/v0.2",
    });

    turnout_plugin_sdk::__wit_conversions!(crate::plugins::bindings::v02::turnout::plugin::types);
    turnout_plugin_sdk::__wit_conversions_v02!(
        crate::plugins::bindings::v02::turnout::plugin::types
    );
    turnout_plugin_sdk::__wit_request_head_v02!(
        crate::plugins::bindings::v02::turnout::plugin::types
    );
}

/// The 0.1 contract (`wit/v0.1/plugin.wit`): components built against it
/// keep loading and answer the connection hooks; they never see requests.
pub(crate) mod v01 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/v0.1",
    });

    turnout_plugin_sdk::__wit_conversions!(crate::plugins::bindings::v01::turnout::plugin::types);

    /// 0.1's plugin info: hooks (less `request`, which 0.1 requests never
    /// reach) and ports; no HTTP ports, no interest.
    pub(crate) fn info_from_wit(
        i: self::turnout::plugin::types::PluginInfo,
    ) -> turnout_plugin_sdk::PluginInfo {
        use self::turnout::plugin::types::HookSet;
        use turnout_plugin_sdk::{Hooks, PortRange};
        let mut hooks = Hooks::NONE;
        for (ours, theirs) in [
            (Hooks::ADMIT, HookSet::ADMIT),
            (Hooks::ROUTE, HookSet::ROUTE),
            (Hooks::POLICY, HookSet::POLICY),
            (Hooks::ON_IDLE, HookSet::ON_IDLE),
        ] {
            if i.hooks.contains(theirs) {
                hooks = hooks | ours;
            }
        }
        let ranges = |r: Vec<self::turnout::plugin::types::PortRange>| -> Vec<PortRange> {
            r.into_iter()
                .map(|r| PortRange {
                    from: r.first,
                    to: r.last,
                })
                .collect()
        };
        let mut info = turnout_plugin_sdk::PluginInfo::new(i.name, i.version).hooks(hooks);
        info.listen = ranges(i.listen);
        info.tls_ports = ranges(i.tls_ports);
        info
    }
}

/// A component's bindings, by the contract version it was built against.
pub(crate) enum Bindings {
    V01(v01::Plugin),
    V02(v02::Plugin),
    V03(v03::Plugin),
}

/// A component linked ahead of instantiation, by contract version.
pub(crate) enum Pre {
    V01(v01::PluginPre<StoreState>),
    V02(v02::PluginPre<StoreState>),
    V03(v03::PluginPre<StoreState>),
}

impl Pre {
    pub(crate) fn instantiate(
        &self,
        store: &mut wasmtime::Store<StoreState>,
    ) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Pre::V01(p) => Bindings::V01(p.instantiate(store)?),
            Pre::V02(p) => Bindings::V02(p.instantiate(store)?),
            Pre::V03(p) => Bindings::V03(p.instantiate(store)?),
        })
    }
}

/// Runs `$body` with `$g` the version's `hooks` guest and `$conv` its
/// conversion module (`wit_conv`), for the hooks every version has.
macro_rules! each_version {
    ($bindings:expr, |$g:ident, $conv:ident| $body:expr) => {
        match $bindings {
            $crate::plugins::bindings::Bindings::V01(p) => {
                let $g = p.turnout_plugin_hooks();
                use $crate::plugins::bindings::v01::wit_conv as $conv;
                $body
            }
            $crate::plugins::bindings::Bindings::V02(p) => {
                let $g = p.turnout_plugin_hooks();
                use $crate::plugins::bindings::v02::wit_conv as $conv;
                $body
            }
            $crate::plugins::bindings::Bindings::V03(p) => {
                let $g = p.turnout_plugin_hooks();
                use $crate::plugins::bindings::v03::wit_conv as $conv;
                $body
            }
        }
    };
}
pub(crate) use each_version;

/// Runs `$body` for the hooks 0.2 added (and 0.3 kept), with `$g` the
/// `hooks` guest and `$conv`/`$http` the version's `wit_conv`/`wit_http`;
/// a 0.1 component's bindings go to `$v01` instead, as `$old`.
macro_rules! http_versions {
    ($bindings:expr, |$g:ident, $conv:ident, $http:ident| $body:expr, |$old:ident| $v01:expr) => {
        match $bindings {
            $crate::plugins::bindings::Bindings::V01($old) => $v01,
            $crate::plugins::bindings::Bindings::V02(p) => {
                let $g = p.turnout_plugin_hooks();
                // Not every hook converts an argument.
                #[allow(unused_imports)]
                use $crate::plugins::bindings::v02::{wit_conv as $conv, wit_http as $http};
                $body
            }
            $crate::plugins::bindings::Bindings::V03(p) => {
                let $g = p.turnout_plugin_hooks();
                // Not every hook converts an argument.
                #[allow(unused_imports)]
                use $crate::plugins::bindings::v03::{wit_conv as $conv, wit_http as $http};
                $body
            }
        }
    };
}
pub(crate) use http_versions;

/// Caps one instance's linear memories (each) and tables, and remembers
/// whether the cap was hit so the failure is reported as a memory limit
/// rather than a generic trap.
pub(crate) struct Limiter {
    pub(crate) max_memory: usize,
    pub(crate) max_table_elements: usize,
    pub(crate) memory_limit_hit: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_limit_hit = true;
            // An error (rather than Ok(false)) stops the guest right here
            // instead of letting it run its out-of-memory path first.
            wasmtime::bail!("memory limit of {} bytes reached", self.max_memory);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

/// The running call's time budget. A deadline is `limit` of wall time,
/// but one reached while the calling thread was mostly descheduled (a
/// loaded machine) is not held against the plugin: at the first deadline
/// the thread's CPU clock is read, the call gets another `limit`, and it
/// traps at the next one only if it was on the CPU for at least half of
/// that window. A looping plugin is thus stopped after about twice the
/// limit; wall time is capped at [`WALL_FACTOR`] × the limit whatever
/// happens. Reading the CPU clock is a syscall, so it is read only at
/// deadlines, never on a call's normal path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) limit: std::time::Duration,
    wall_start: std::time::Instant,
    /// The thread's CPU time at the last deadline.
    cpu_mark: Option<std::time::Duration>,
}

/// Wall-clock backstop, as a multiple of the limit.
pub(crate) const WALL_FACTOR: u32 = 10;

/// CPU time this thread has used.
fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Budget {
    /// A budget of `limit` starting now.
    pub(crate) fn start(limit: std::time::Duration) -> Self {
        Self::start_at(limit, std::time::Instant::now())
    }

    /// A budget of `limit` starting at `wall_start`: a call's own start,
    /// one clock read less per call. (Read before the call takes its
    /// instance, so the wall-clock backstop — [`WALL_FACTOR`] × `limit` —
    /// also counts creating one when the pool is empty, far below it.)
    pub(crate) fn start_at(limit: std::time::Duration, wall_start: std::time::Instant) -> Self {
        Self {
            limit,
            wall_start,
            cpu_mark: None,
        }
    }

    /// At an epoch deadline: `false` when the call must stop; `true` when
    /// it gets another `limit`.
    pub(crate) fn extend(&mut self) -> bool {
        if self.wall_start.elapsed() >= self.limit * WALL_FACTOR {
            return false;
        }
        let now = thread_cpu();
        match self.cpu_mark.replace(now) {
            None => true,
            Some(mark) => now.saturating_sub(mark) < self.limit / 2,
        }
    }
}

/// Everything one Store owns. WASI gets an empty context: no env, args,
/// files, sockets or stdio, only what std needs to link.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    host: Arc<dyn HostApi>,
    pub(crate) budget: Budget,
    /// The request `request` is running for: moved in for the call and
    /// back out after it (never copied), for the `header` imports.
    pub(crate) headers: http::HeaderMap,
    /// The buffer a 0.3 request head is packed into, kept between calls.
    pub(crate) packed: Vec<u8>,
}

impl StoreState {
    pub(crate) fn new(host: Arc<dyn HostApi>, max_memory: usize) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory,
                max_table_elements: 100_000,
                memory_limit_hit: false,
            },
            host,
            budget: Budget::start(std::time::Duration::ZERO),
            headers: http::HeaderMap::new(),
            packed: Vec::new(),
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `host` functions every version has, for version `$v`.
macro_rules! shared_host_imports {
    ($v:ident) => {
        fn log(&mut self, level: $v::turnout::plugin::types::LogLevel, message: String) {
            self.host
                .log($v::wit_conv::log_level_from_wit(level), &message);
        }

        fn monotonic_now(&mut self) -> u64 {
            self.host.monotonic_now()
        }

        fn wall_now(&mut self) -> u64 {
            self.host.wall_now()
        }

        fn active_connections_for_ip(&mut self, ip: $v::turnout::plugin::types::IpAddress) -> u32 {
            self.host
                .active_connections_for_ip($v::wit_conv::ip_from_wit(ip))
        }

        fn active_connections_for_route(&mut self, route: String) -> u32 {
            self.host.active_connections_for_route(&route)
        }

        fn active_connections_total(&mut self) -> u32 {
            self.host.active_connections_total()
        }

        fn recent_connections_for_ip(&mut self, ip: $v::turnout::plugin::types::IpAddress) -> u32 {
            self.host
                .recent_connections_for_ip($v::wit_conv::ip_from_wit(ip))
        }

        fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
            self.host.kv_get(&key)
        }

        fn kv_set(
            &mut self,
            key: String,
            value: Vec<u8>,
            ttl: Option<u64>,
        ) -> Result<(), $v::turnout::plugin::types::KvError> {
            self.host
                .kv_set(&key, &value, ttl)
                .map_err($v::wit_conv::kv_error_to_wit)
        }

        fn kv_increment(
            &mut self,
            key: String,
            delta: i64,
            ttl: Option<u64>,
        ) -> Result<i64, $v::turnout::plugin::types::KvError> {
            self.host
                .kv_increment(&key, delta, ttl)
                .map_err($v::wit_conv::kv_error_to_wit)
        }

        fn kv_delete(&mut self, key: String) -> bool {
            self.host.kv_delete(&key)
        }
    };
}

impl v01::turnout::plugin::types::Host for StoreState {}
impl v02::turnout::plugin::types::Host for StoreState {}
impl v03::turnout::plugin::types::Host for StoreState {}

impl v01::turnout::plugin::host::Host for StoreState {
    shared_host_imports!(v01);
}

/// The `header` imports 0.2 added (0.3 kept them).
macro_rules! header_imports {
    () => {
        fn header(&mut self, name: String) -> Vec<Vec<u8>> {
            // A name that is not a header name is simply absent.
            match http::header::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => self
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect(),
                Err(_) => Vec::new(),
            }
        }

        fn header_names(&mut self) -> Vec<String> {
            self.headers.keys().map(|k| k.as_str().to_owned()).collect()
        }
    };
}

impl v02::turnout::plugin::host::Host for StoreState {
    shared_host_imports!(v02);
    header_imports!();
}

impl v03::turnout::plugin::host::Host for StoreState {
    shared_host_imports!(v03);
    header_imports!();
}

/// Registers the `host` interface and WASI (empty context) on `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // Every version's imports: their names differ by version, so 0.1, 0.2
    // and 0.3 components link against the same linker.
    v01::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    v02::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    v03::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}
