//! The Flowform core: the one definition pipeline ([`compile`]) that turns
//! sources into an immutable [`Bundle`], and the pure decision function of the
//! state machine ([`decide`]).
//!
//! Invariant: nothing here does I/O or reads a clock or a random source. Time,
//! identifiers and the actor are passed in, so every decision is deterministic
//! and replayable. The runtime commits what the core decides.

pub mod bundle;
pub mod calendar;
pub mod deadlines;
pub mod decide;
pub mod diff;
pub mod graph;
pub mod instance;
pub mod ledger;
pub mod links;
pub mod migrate;
pub mod records;
pub mod replay;
pub mod reports;
pub mod schedules;
pub mod time;
pub mod timers;
pub mod visibility;

pub use bundle::{Bundle, compile};
pub use decide::{AvailableTransition, Outcome, Reads, Rejection, available_transitions, start, start_with, transition, transition_with};
pub use flowform_forms::{FieldError, Lang};
pub use instance::{Actor, Assignment, Change, Effect, Event, EventKind, Instance};
pub use time::{Time, TimeError};
