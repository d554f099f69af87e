//! The benchmark drivers, kept out of the product's crates: `flowform bench`
//! delegates to them. What they send to the hospital application is in
//! `bench/data/hospital.yaml`; the peers' workload (`workload.rs`) is the same
//! generator as the peers' own, in Rust.

pub mod hospital;
pub mod scale;
pub mod workload;

pub mod data;
pub use data::HospitalData;
