//! Pure functions from specs and observed CouchDB state to steps. No I/O, no clock, no
//! randomness: the controller and the `plan` command feed them what they read.

pub mod access;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod database;
pub mod grant;
pub mod listing;
pub mod onchange;
pub mod ownership;
pub mod secret_template;
pub mod security;
pub mod server;
pub mod share;
pub mod tenancy;
pub mod user;
