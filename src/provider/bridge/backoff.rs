//! The reconnection backoff every broker connection uses.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::settings::BridgeSettings;

/// Exponential backoff with jitter: the first attempt is immediate, then `min`, doubling up to
/// `max`, each delay drawn between 75% and 100% of its nominal value so that instances
/// restarted together do not reconnect in lockstep.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, attempt: 0 }
    }

    /// The backoff the config asks for, starting at the first (immediate) attempt.
    pub(crate) fn from_settings(config: &BridgeSettings) -> Self {
        Self::new(config.reconnect_backoff_min, config.reconnect_backoff_max)
    }

    /// Waits out the next delay, then runs `attempt`.
    pub(crate) fn after_next_delay<F: std::future::Future>(
        &mut self,
        attempt: F,
    ) -> impl std::future::Future<Output = F::Output> {
        let delay = self.next_delay();
        async move {
            tokio::time::sleep(delay).await;
            attempt.await
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if attempt == 0 {
            return Duration::ZERO;
        }
        let nominal = self
            .min
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.max);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(attempt);
        let jitter = (hasher.finish() % 1024) as u32;
        nominal.mul_f64(0.75 + 0.25 * f64::from(jitter) / 1024.0)
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_immediately_doubles_and_caps() {
        let min = Duration::from_millis(20);
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new(min, max);
        assert_eq!(backoff.next_delay(), Duration::ZERO);
        let first = backoff.next_delay();
        assert!(first >= min.mul_f64(0.75) && first <= min, "{first:?}");
        for _ in 0..40 {
            assert!(backoff.next_delay() <= max);
        }
        assert!(backoff.next_delay() >= max.mul_f64(0.75));
    }
}
