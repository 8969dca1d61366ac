//! The sync engine: links between endpoints and the hub, run as plan, then execute.
//!
//! - [`spec`]: what endpoints and links are (direction, conflict and deletion policies,
//!   transforms), as stored and as declared.
//! - [`plan`]: a pure function of (link state, remote snapshot, hub) giving the actions of a run;
//!   printable as a dry run; guarded against mass deletion.
//! - [`run`]: lists the endpoint, fetches what changed, matches new items to hub contacts (UID,
//!   then email, then phone, through blind indexes), plans and executes in crash-safe batches,
//!   and records the run with sealed per-item events.
//! - [`inbox`] and [`outbox`]: webhook sources and destinations, kept in the store.
//! - [`transform`]: field renames, drops and masks on the way out; merging of matched contacts.
//!
//! The engine never logs contact data and never depends on the web server.

pub mod accounts;
pub mod catalog;
pub mod connect;
mod gather;
pub mod grants;
pub mod inbox;
pub mod outbox;
pub mod plan;
pub mod run;
pub mod spec;
pub mod transform;

pub use catalog::{ApplyFile, CatalogError, Change, Endpoint, Link};
pub use plan::{Action, Plan, PlanError};
pub use run::{
    Counts, DEFAULT_BATCH, Engine, LinkDef, RunError, RunOptions, RunReport, process_holder,
};
pub use spec::{ConflictPolicy, DeleteVsEdit, Deletions, Direction, EndpointSpec, LinkSpec};
