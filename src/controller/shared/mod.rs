//! What several kinds use.

pub(crate) mod access;
pub(crate) mod backups;
pub(crate) mod credentials;
pub(crate) mod grant_passes;
pub(crate) mod last_pass;
pub(crate) mod ledger;
pub(crate) mod servers;
pub(crate) mod tenancy;
pub(crate) mod unmanaged;
pub(crate) mod users_known;

pub(crate) use crate::controller::runtime::keys::ServerKey;
