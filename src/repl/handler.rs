//! The user-mode helpers DRBD calls (`handlers { }` in the config). The engine only says which
//! one is due ([`crate::repl::Action::RunHandler`]); the driver runs it with DRBD's environment
//! and, for the handlers whose answer matters (fence-peer), feeds the exit code back.

/// A handler by its config name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handler {
    /// Any split brain, before the policies are applied.
    InitialSplitBrain,
    /// Split brain left unresolved.
    SplitBrain,
    /// rr-conflict `call-pri-lost`: this Primary would have to become SyncTarget.
    PriLost,
    /// `call-pri-lost-after-sb` picked this Primary as the victim and it could not demote.
    PriLostAfterSb,
    /// Before a resync makes this node's data Inconsistent (LVM snapshot scripts).
    BeforeResyncTarget,
    /// After this node finished a resync as the target.
    AfterResyncTarget,
    /// Before this node starts a resync as the source.
    BeforeResyncSource,
    /// An online verify ended with blocks found out of sync.
    OutOfSync,
    /// An established connection went down.
    Disconnected,
    /// The peer must be fenced before this node may go on (`fencing resource-only` and up).
    FencePeer,
    /// The peer is reachable again and UpToDate: remove the fence.
    UnfencePeer,
    /// The backing device failed (`on-io-error call-local-io-error`).
    LocalIoError,
    /// This Primary lost quorum.
    QuorumLost,
}

impl Handler {
    /// The key in `handlers { }` and the word DRBD logs.
    pub fn name(self) -> &'static str {
        match self {
            Handler::InitialSplitBrain => "initial-split-brain",
            Handler::SplitBrain => "split-brain",
            Handler::PriLost => "pri-lost",
            Handler::PriLostAfterSb => "pri-lost-after-sb",
            Handler::BeforeResyncTarget => "before-resync-target",
            Handler::AfterResyncTarget => "after-resync-target",
            Handler::BeforeResyncSource => "before-resync-source",
            Handler::OutOfSync => "out-of-sync",
            Handler::Disconnected => "disconnected",
            Handler::FencePeer => "fence-peer",
            Handler::UnfencePeer => "unfence-peer",
            Handler::LocalIoError => "local-io-error",
            Handler::QuorumLost => "quorum-lost",
        }
    }
}

impl std::fmt::Display for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
