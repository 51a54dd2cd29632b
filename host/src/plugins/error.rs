//! Typed errors of the plugin runtime.

use std::fmt;

/// Why a plugin could not be loaded. The previous version, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The wasmtime engine could not be set up.
    #[error("plugin runtime: {0}")]
    Engine(String),
    /// The plugin file could not be read.
    #[error("plugin {plugin:?}: cannot read {path}: {source}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a component, or it failed to compile.
    #[error("plugin {plugin:?} {message}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// Built against another version of the WIT contract.
    #[error(
        "plugin {plugin:?} was built against turnout:plugin@{found}, but this host speaks turnout:plugin@0.3.x (and 0.2.x, 0.1.x); rebuild it with turnout-plugin-sdk {expected}"
    )]
    IncompatibleVersion {
        /// Plugin name.
        plugin: String,
        /// The version it exports.
        found: String,
        /// The version this host speaks.
        expected: &'static str,
    },
    /// Not a Turnout plugin, or it imports something the host does not grant.
    #[error("plugin {plugin:?} cannot be linked: {message}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// Details.
        message: String,
    },
    /// `plugins.order` names a plugin that is not there.
    #[error(
        "plugin {plugin:?} is named in plugins.order but is neither embedded ({embedded}) nor a {plugin}.wasm in the plugins directory"
    )]
    NotFound {
        /// Plugin name.
        plugin: String,
        /// The embedded plugins, comma-separated.
        embedded: String,
    },
    /// `init` failed, trapped or ran out of time or memory.
    #[error("plugin {plugin:?} failed to initialise: {}", init_failure(failure))]
    Init {
        /// Plugin name.
        plugin: String,
        /// What happened.
        failure: CallFailure,
    },
}

/// The kinds of plugin failure, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The guest trapped (a panic is a trap).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The instance hit its memory cap.
    MemoryLimit,
    /// The guest answered something the host refuses.
    Malformed,
    /// `init` returned an error (on a fresh instance).
    Init,
    /// No instance could be created (pool exhausted, host error).
    Instantiate,
}

impl FailureKind {
    /// Every kind, in metrics order.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::MemoryLimit,
        FailureKind::Malformed,
        FailureKind::Init,
        FailureKind::Instantiate,
    ];

    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Malformed => "malformed",
            FailureKind::Init => "init",
            FailureKind::Instantiate => "instantiate",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `init: <message>` says "init" twice after "failed to initialise".
fn init_failure(f: &CallFailure) -> String {
    if f.kind == FailureKind::Init {
        f.message.clone()
    } else {
        f.to_string()
    }
}

impl LoadError {
    /// The plugin the error is about (`None` for the runtime itself).
    pub fn plugin(&self) -> Option<&str> {
        match self {
            LoadError::Engine(_) => None,
            LoadError::Read { plugin, .. }
            | LoadError::Compile { plugin, .. }
            | LoadError::IncompatibleVersion { plugin, .. }
            | LoadError::Link { plugin, .. }
            | LoadError::NotFound { plugin, .. }
            | LoadError::Init { plugin, .. } => Some(plugin),
        }
    }
}

/// One failed plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CallFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details (the trap message, what was malformed, …).
    pub message: String,
}

impl CallFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
