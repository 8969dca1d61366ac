//! The audit log: typed events in a hash-chained, append-only log, and its verification.
//!
//! - [`AuditEvent`]: who ([`Actor`]) did what ([`Action`]) to which [`Resource`], from where,
//!   with which [`Outcome`] and [`ReasonCode`]. Built only from parsed ids and closed enums.
//! - Chains: one per workspace; installation-wide events (logins, user administration,
//!   workspace creation and deletion) go in the chain of [`WorkspaceId::NIL`](sealsync_types::WorkspaceId::NIL).
//! - [`AuditLog`]: appends entries (`seq` 1, 2, …), each carrying an HMAC-SHA256 over its chain,
//!   position, time, key version, the previous entry's MAC and the event. A head row names the
//!   newest entry under a MAC of its own. The MAC key is an installation key wrapped by the
//!   master key ([`AuditKeys`], versioned), so whoever can edit the database but does not hold
//!   the master key cannot rewrite history without [`AuditLog::verify`] noticing.
//! - [`VerifyReport`] and [`Problem`]: what verification found, in plain words.
//!
//! Limits: a MAC chain shows edits, removals and reordering, but someone who kept an old head
//! row can put it back after removing the entries written since; anchoring the head outside
//! the database (a copy elsewhere, an export) closes that.
//!
//! Never puts a secret, an email or a contact field in an event, an error or a log line; never
//! updates or deletes an entry; never prints or clones key material.

mod chain;
mod event;
mod verify;

pub use chain::{AuditEntry, AuditKeys, AuditLog};
pub use event::{
    Action, Actor, ActorKind, AuditEvent, MAX_ID_LEN, Outcome, ReasonCode, Resource, ResourceKind,
};
pub use verify::{Anchor, Problem, VerifyReport};

use sealsync_types::WorkspaceId;

/// Why an audit operation failed. Messages name chains and positions, never event contents or
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A value was refused when building an event. The value itself is not repeated.
    #[error("invalid {field}: {why}")]
    Invalid {
        field: &'static str,
        why: &'static str,
    },
    #[error("no audit key was given")]
    NoKeys,
    #[error("audit key version {0} is not available (was it retired?)")]
    UnknownKeyVersion(u32),
    /// Appending kept losing to concurrent writers.
    #[error("audit chain {chain} is too busy: gave up after {attempts} attempts")]
    Contended { chain: WorkspaceId, attempts: u32 },
    /// The chain's head row is missing or fails its MAC; appending would hide what happened.
    #[error(
        "audit chain {chain} is damaged ({what}); nothing was appended. Run `sealsync audit verify`"
    )]
    Damaged {
        chain: WorkspaceId,
        what: &'static str,
    },
    /// A stored row cannot be read back as an entry.
    #[error("audit chain {chain}, entry {seq}: {what}")]
    Corrupt {
        chain: WorkspaceId,
        seq: u64,
        what: &'static str,
    },
    #[error("audit database error: {0}")]
    Db(String),
}

impl AuditError {
    /// A database error, keeping only the database's own message (never bound values).
    pub(crate) fn db(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) => AuditError::Db(d.message().to_owned()),
            other => AuditError::Db(other.to_string()),
        }
    }
}
