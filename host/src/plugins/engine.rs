//! The one wasmtime `Engine` and `Linker`, with Turnout's safe defaults fixed
//! here: component model, epoch interruption (a ticker thread), the pooling
//! allocator where the machine allows it, and an on-disk cache of compiled
//! components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{self, StoreState};
use super::error::LoadError;

/// Runtime settings; the defaults are what `turnout run` uses.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Budget of one hook call. A call still running at the deadline gets
    /// one more if its thread was mostly descheduled (a loaded machine);
    /// one that kept the CPU busy traps, so a loop ends after about twice
    /// this, and never later than 10× in wall time.
    pub call_deadline: Duration,
    /// Budget of `init` (instantiation included), counted the same way.
    pub init_deadline: Duration,
    /// Cap on each linear memory of an instance.
    pub max_memory: usize,
    /// Calls an instance serves before it is replaced by a fresh one.
    pub max_calls_per_instance: u64,
    /// Idle warm instances kept per plugin.
    pub max_idle_instances: usize,
    /// Use the pooling allocator if the machine allows it.
    pub pooling: bool,
    /// Component instances the pool can hold (all plugins together).
    pub pool_capacity: u32,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Epoch tick; deadlines are rounded up to whole ticks, plus one. See
    /// [`RuntimeConfig::tick_for`].
    pub epoch_tick: Duration,
    /// Call deadlines (epoch interruption). Turn off only to measure what
    /// they cost: without them a looping plugin hangs its caller.
    pub deadlines: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            // Warm calls take about two microseconds: 10 ms of CPU is a
            // plugin gone wrong, not a slow one.
            call_deadline: Duration::from_millis(10),
            init_deadline: Duration::from_secs(1),
            max_memory: 16 << 20,
            max_calls_per_instance: 100_000,
            max_idle_instances: 8,
            pooling: true,
            pool_capacity: 256,
            cache_dir: default_cache_dir(),
            epoch_tick: Self::tick_for(Duration::from_millis(10)),
            deadlines: true,
        }
    }
}

impl RuntimeConfig {
    /// The epoch tick for a call deadline: a quarter of it, between 1 and
    /// 5 ms. A deadline of 4 ms or more then fires within a quarter of its
    /// length late (10 ms: 2.5 ms ticks, a call traps 10–12.5 ms after it
    /// starts); shorter ones within 1 ms. While calls run the ticker thread
    /// wakes once per tick, and on a busy proxy 1 ms ticks were 2.4 % of
    /// its CPU (`benches/results/2026-11-21-profile.md`).
    pub fn tick_for(deadline: Duration) -> Duration {
        (deadline / 4).clamp(Duration::from_millis(1), Duration::from_millis(5))
    }
}

/// `$TURNOUT_CACHE_DIR`, else `$XDG_CACHE_HOME/turnout`, else `~/.cache/turnout`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TURNOUT_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("turnout"))
}

/// The engine, linker and settings every plugin shares. One per process.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) pooling: bool,
    ticker: Ticker,
}

fn base_config(cfg: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(cfg.deadlines)
        // Plugins are synchronous and never use component-model async; turning
        // it off keeps instantiation cheap.
        .concurrency_support(false)
        // Copy-on-write init images cost more than they save at this size.
        .memory_init_cow(false);
    c
}

fn pooling_config(cfg: &RuntimeConfig) -> PoolingAllocationConfig {
    let n = cfg.pool_capacity.max(1);
    let mut p = PoolingAllocationConfig::new();
    // A wasip2 Rust guest is one component of a few core instances and
    // memories (the program plus WASI adapter shims).
    p.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .max_memory_size(cfg.max_memory)
        .decommit_batch_size(64);
    p
}

impl Runtime {
    /// Builds the engine (pooling if possible) and linker, and starts the
    /// epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, LoadError> {
        let mut pooling = false;
        let mut engine = None;
        if config.pooling {
            let mut c = base_config(&config);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&config)));
            match Engine::new(&c) {
                Ok(e) => {
                    pooling = true;
                    engine = Some(e);
                }
                // Typically a small address-space limit (ulimit -v) or a
                // kernel without enough virtual memory: the on-demand
                // allocator is slower to instantiate but works everywhere.
                Err(e) => tracing::warn!(
                    error = %e,
                    "pooling allocator unavailable; falling back to on-demand allocation"
                ),
            }
        }
        let engine = match engine {
            Some(e) => e,
            None => {
                Engine::new(&base_config(&config)).map_err(|e| LoadError::Engine(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        bindings::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        let ticker = Ticker::start(&engine, config.epoch_tick)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            config,
            pooling,
            ticker,
        }))
    }

    /// Marks a plugin call (or `init`) in progress until the guard drops:
    /// the epoch ticker runs only while there is one.
    pub(crate) fn enter_call(&self) -> InFlight<'_> {
        self.ticker.enter()
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Loads one component outside any [`super::PluginSet`] (tests, benches,
    /// tools): compile or cache, version check, link, `init`.
    pub fn load_plugin(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        config: &str,
        failure_policy: super::FailurePolicy,
        host: Arc<dyn turnout_plugin_sdk::host::HostApi>,
    ) -> Result<Arc<super::LoadedPlugin>, LoadError> {
        super::loaded::LoadedPlugin::load(
            self,
            super::loaded::LoadArgs {
                name: name.to_owned(),
                bytes: Arc::from(bytes),
                origin: super::Origin::Embedded,
                config: config.to_owned(),
                failure_policy,
                host,
            },
        )
    }

    /// Epoch ticks for a deadline: rounded up, plus one because the current
    /// tick may be about to end.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        u64::try_from(d.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Compiles `bytes`, or loads the cached compilation of the same bytes
    /// by an engine with the same settings.
    pub(crate) fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(&self.engine, bytes)
                .map_err(|e| compile_error(plugin, bytes, e));
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name), in
            // a directory only this user writes; wasmtime re-checks the
            // header and refuses an artifact from other settings.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(
                    plugin, path = %path.display(), error = %e,
                    "ignoring unusable cached compilation; recompiling"
                ),
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| compile_error(plugin, bytes, e))?;
        if let Err(e) = write_atomically(dir, &path, &compiled) {
            tracing::warn!(plugin, dir = %dir.display(), error = %e, "cannot write the compilation cache");
        }
        // SAFETY: `compiled` was produced just above by this very engine.
        #[allow(unsafe_code)]
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| compile_error(plugin, bytes, e))
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut h = Sha256::new();
        h.update(bytes);
        h.update(engine_hash.finish().to_le_bytes());
        h.finalize()
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn compile_error(plugin: &str, bytes: &[u8], e: wasmtime::Error) -> LoadError {
    let what = if bytes.starts_with(b"\0asm\x01\0\0\0") {
        "is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2`"
            .to_owned()
    } else if !bytes.starts_with(b"\0asm") {
        "is not WebAssembly".to_owned()
    } else {
        format!("failed to compile: {e:#}")
    };
    LoadError::Compile {
        plugin: plugin.to_owned(),
        message: what,
    }
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Time without a call in flight before the ticker parks.
const IDLE: Duration = Duration::from_millis(100);

/// Advances the engine's epoch every tick while plugin calls run; after
/// [`IDLE`] with none it parks, so an idle proxy does not wake
/// hundreds of times a second. A call entering wakes it (see
/// [`Ticker::enter`]); it also wakes once a second to notice the engine was
/// dropped, and then stops.
struct Ticker {
    shared: Arc<TickerShared>,
}

#[derive(Default)]
struct TickerShared {
    in_flight: AtomicUsize,
    parked: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// A plugin call (or `init`) in progress; keeps the ticker ticking.
pub(crate) struct InFlight<'a>(&'a TickerShared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, LoadError> {
        let weak = engine.weak();
        let shared = Arc::new(TickerShared::default());
        let s = shared.clone();
        let idle_ticks =
            u32::try_from(IDLE.as_nanos().div_ceil(tick.as_nanos().max(1))).unwrap_or(u32::MAX);
        let handle = std::thread::Builder::new()
            .name("turnout-epoch".into())
            .spawn(move || {
                let mut quiet = 0u32;
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    if s.in_flight.load(Ordering::SeqCst) == 0 {
                        quiet += 1;
                    } else {
                        quiet = 0;
                    }
                    if quiet < idle_ticks {
                        std::thread::sleep(tick);
                        continue;
                    }
                    // Announce the park, then look again: a call that
                    // entered in between either sees `parked` and unparks
                    // us, or is seen here (both sides use SeqCst).
                    s.parked.store(true, Ordering::SeqCst);
                    if s.in_flight.load(Ordering::SeqCst) == 0 {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                    s.parked.store(false, Ordering::SeqCst);
                    quiet = 0;
                }
            })
            // Without the ticker no deadline would ever fire: refuse to run.
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Ticker { shared })
    }

    fn enter(&self) -> InFlight<'_> {
        let s = &*self.shared;
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst)
            && let Some(t) = s.thread.get()
        {
            t.unpark();
        }
        InFlight(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded wait for `cond`, polling every millisecond (up to 5 s).
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_deadline_within_1_to_5_ms() {
        let ms = Duration::from_millis;
        let tick = super::RuntimeConfig::tick_for;
        assert_eq!(tick(ms(10)), Duration::from_micros(2500));
        assert_eq!(tick(ms(1)), ms(1));
        assert_eq!(tick(ms(10_000)), ms(5));
        // The default deadline traps within 10–12.5 ms.
        let rt = super::Runtime::new(super::RuntimeConfig {
            cache_dir: None,
            ..super::RuntimeConfig::default()
        })
        .unwrap();
        assert_eq!(rt.ticks(ms(10)), 5);
    }

    #[test]
    fn the_ticker_parks_when_idle_and_ticks_again_for_a_call() {
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: None,
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let shared = rt.ticker.shared.clone();
        assert!(
            eventually(|| shared.parked.load(Ordering::SeqCst)),
            "parks with no call in flight"
        );
        let call = rt.enter_call();
        assert!(
            eventually(|| !shared.parked.load(Ordering::SeqCst)),
            "a call wakes it"
        );
        // While the call is in flight it keeps ticking rather than parking.
        std::thread::sleep(IDLE * 2);
        assert!(!shared.parked.load(Ordering::SeqCst));
        drop(call);
        assert!(eventually(|| shared.parked.load(Ordering::SeqCst)));
    }
}
