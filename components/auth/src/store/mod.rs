//! Storage adapters for the domain's `Store` trait (defined in `domain::ports`).

pub mod mysql;
