//! The conformance suite against `NatsPubSub`, on the real NATS server (`NATS_URL`, default
//! `127.0.0.1:4222`): every check runs on two instances sharing one subject prefix, and again
//! on one. Skips with a printed reason when the server is unreachable, fails instead under
//! `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "nats")]

#[macro_use]
mod conformance;

distributed_backend!(Nats, nats);
conformance_suite!(Nats);

/// The same checks on one instance alone.
mod single_instance {
    use super::conformance;

    distributed_backend!(Nats, nats, single);
    conformance_suite!(Nats);
}
