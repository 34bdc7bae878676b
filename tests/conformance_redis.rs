//! The conformance suite against `RedisPubSub`, on the real Redis (`REDIS_URL`, default
//! `127.0.0.1:6379`): every check runs on two instances sharing one channel prefix, and again
//! on one. Skips with a printed reason when Redis is unreachable, fails instead under
//! `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;

distributed_backend!(Redis, redis);
conformance_suite!(Redis);

/// The same checks on one instance alone.
mod single_instance {
    use super::conformance;

    distributed_backend!(Redis, redis, single);
    conformance_suite!(Redis);
}
