//! The one wasmtime `Engine` and `Linker`, with Turnout's safe defaults fixed
//! here: component model, epoch interruption (a ticker thread), the pooling
//! allocator where the machine allows it. The on-disk cache of compiled
//! components is `cache.rs`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::Linker;
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
    /// Created mode 0700 if missing; a directory not owned by the effective
    /// user, or writable by group or others, is not used (a warning says
    /// why) — its files are mapped as native code.
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
    /// Cache directories already warned about, so a refused one is logged
    /// once rather than for every plugin (see `cache.rs`).
    pub(super) cache_warned: Mutex<HashSet<PathBuf>>,
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
            cache_warned: Mutex::default(),
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
    use std::path::Path;

    use crate::plugins::cache::private_dir;

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

    /// What was logged while `f` ran on this thread.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer({
                let buf = buf.clone();
                move || buf.clone()
            })
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    fn cached_runtime(dir: &Path) -> Arc<Runtime> {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.to_path_buf()),
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    fn guard_bytes() -> &'static [u8] {
        crate::plugins::embedded()
            .into_iter()
            .find(|e| e.name == "guard")
            .expect("guard is embedded")
            .bytes
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_missing_cache_directory_is_created_private_and_used() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache/turnout");
        let rt = cached_runtime(&dir);
        let log = logged(|| {
            rt.compile("guard", guard_bytes()).unwrap();
            rt.compile("guard", guard_bytes()).unwrap(); // from the cache
        });
        assert!(!log.contains("WARN"), "{log}");
        for d in [&dir, &tmp.path().join("cache")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}: {mode:04o}", d.display());
        }
        let files = entries(&dir);
        assert!(
            matches!(&files[..], [f] if f.ends_with(".cwasm")),
            "{files:?}"
        );
        let file = std::fs::metadata(dir.join(&files[0])).unwrap();
        assert_eq!(file.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_cache_directory_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let rt = cached_runtime(&dir);
        let log = logged(|| {
            // Loads, by compiling; twice, and warned about once.
            for _ in 0..2 {
                rt.load_plugin(
                    "guard",
                    guard_bytes(),
                    "{}",
                    crate::plugins::FailurePolicy::default(),
                    Arc::new(turnout_plugin_sdk::testing::FakeHost::new()),
                )
                .unwrap();
            }
        });
        assert!(
            entries(&dir).is_empty(),
            "nothing written: {:?}",
            entries(&dir)
        );
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert!(
            matches!(&warnings[..], [w] if w.contains("not using the compilation cache")
                && w.contains(&dir.display().to_string())
                && w.contains("writable by group and others (mode 0777)")),
            "{log}"
        );

        // Group-writable is refused too; a private directory is then used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(
            private_dir(&dir),
            Err("it is writable by its group (mode 0770)".to_owned())
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&dir), Ok(()));
        rt.compile("guard", guard_bytes()).unwrap();
        assert_eq!(entries(&dir).len(), 1);
    }

    #[test]
    fn a_cache_path_that_is_not_a_directory_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(
            private_dir(&file)
                .unwrap_err()
                .starts_with("cannot create it")
        );
    }

    #[test]
    fn a_cache_directory_of_another_user_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        assert_eq!(private_dir(&dir), Ok(()));
        // Only root can give a directory away (CI runs as root).
        if std::os::unix::fs::chown(&dir, Some(65534), None).is_err() {
            return;
        }
        let euid = rustix::process::geteuid().as_raw();
        assert_eq!(
            private_dir(&dir),
            Err(format!(
                "it is owned by uid 65534, not by this process's user (uid {euid})"
            ))
        );
    }
}
