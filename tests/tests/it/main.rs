//! The cross-crate behaviour tests, linked as one binary (one link instead
//! of one per file keeps CI's build short). Run one area with
//! `cargo test -p flowform-tests --test it access::`.

mod access;
mod api;
mod authorization;
mod browser;
mod diagnostics;
mod diff;
mod docs;
mod generic;
mod links;
mod openapi;
mod properties;
mod records;
mod reload;
mod reload_under_load;
mod replay;
mod reports;
mod scenarios;
mod schema;
mod simulation;
mod timers;
mod web;
