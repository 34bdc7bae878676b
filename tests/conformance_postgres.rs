//! The conformance suite against `PostgresPubSub`, on the real PostgreSQL (`DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`): every check runs on two instances
//! sharing one channel prefix, and again on one. Skips with a printed reason when PostgreSQL is unreachable,
//! fails instead under `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

distributed_backend!(Postgres, postgres);
conformance_suite!(Postgres);

/// The same checks on one instance alone.
mod single_instance {
    use super::conformance;

    distributed_backend!(Postgres, postgres, single);
    conformance_suite!(Postgres);
}
