//! The bridge: everything a distributed provider does that is not about its broker.

pub(crate) mod settings;
