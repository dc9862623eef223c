//! Retry back-off: exponential with "equal jitter".
//!
//! Attempt `n` waits a uniformly random time in `[c/2, c]` where
//! `c = min(retry_max, retry_base * 2^(n-1))`. Half the delay is fixed, so
//! delays keep growing until the cap; half is random (from the machine's
//! seeded RNG), so a fleet of clients reconnecting after an outage spreads out.

use crate::rng::Rng;
use crate::time::Millis;

use super::Config;

/// The delay before retry number `attempt` (1-based).
pub(super) fn delay(cfg: &Config, attempt: u32, rng: &mut Rng) -> Millis {
    let shift = attempt.saturating_sub(1).min(32);
    let ceiling = cfg.retry_base.0.saturating_mul(1u64 << shift).min(cfg.retry_max.0).max(2);
    Millis(ceiling / 2 + rng.below(ceiling / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let cfg = Config { retry_base: Millis(100), retry_max: Millis(10_000), ..Config::default() };
        let mut rng = Rng::new(3);
        let mut prev_max = 0;
        for attempt in 1..=7 {
            let d = delay(&cfg, attempt, &mut rng).0;
            let ceiling = (100u64 << (attempt - 1)).min(10_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
            assert!(d >= prev_max / 2);
            prev_max = ceiling;
        }
        assert!(delay(&cfg, 1000, &mut rng).0 <= 10_000);
    }
}
