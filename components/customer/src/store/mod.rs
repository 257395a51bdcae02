//! The customer database behind the `domain::Store` port.

pub mod mysql;
