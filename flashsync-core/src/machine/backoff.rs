//! Retry back-off: exponential with "equal jitter", and rare retries for
//! failures that need someone to act.
//!
//! A transient failure's attempt `n` waits a uniformly random time in
//! `[c/2, c]` where `c = min(retry_max, retry_base * 2^(n-1))`. Half the
//! delay is fixed, so delays keep growing until the cap; half is random
//! (from the machine's seeded RNG), so a fleet of clients reconnecting after
//! an outage spreads out.
//!
//! A permanent failure (a wrong password, a missing permission or table, no
//! replica identity) will not pass by itself: retrying it every few seconds
//! only hammers the server (and fills its log with failed logins). It waits
//! at least `retry_permanent`, plus up to a quarter more of jitter, unless a
//! forced `sync()` retries it at once.

use crate::error::SourceErrorKind;
use crate::rng::Rng;
use crate::time::Millis;

use super::Config;

/// How soon a failure is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// It may pass by itself: a lost connection, a server restarting, a
    /// race with concurrent DDL or commits, a store hiccup.
    Transient,
    /// It needs someone to act: credentials, permissions, server settings,
    /// a missing relation, replica identity, an unsupported relation.
    Permanent,
}

impl Retry {
    /// The retry class of a source failure.
    pub fn of(kind: SourceErrorKind) -> Retry {
        match kind {
            SourceErrorKind::Refused
            | SourceErrorKind::RelationMissing
            | SourceErrorKind::ReplicaIdentity
            | SourceErrorKind::Unsupported => Retry::Permanent,
            SourceErrorKind::Connection
            | SourceErrorKind::Protocol
            | SourceErrorKind::Sink
            | SourceErrorKind::Other => Retry::Transient,
        }
    }
}

/// The delay before retry number `attempt` (1-based) of a failure.
pub(super) fn delay(cfg: &Config, attempt: u32, retry: Retry, rng: &mut Rng) -> Millis {
    let shift = attempt.saturating_sub(1).min(32);
    let ceiling = cfg.retry_base.0.saturating_mul(1u64 << shift).min(cfg.retry_max.0).max(2);
    let backoff = ceiling / 2 + rng.below(ceiling / 2 + 1);
    match retry {
        Retry::Transient => Millis(backoff),
        Retry::Permanent => {
            let rare = cfg.retry_permanent.0;
            Millis(backoff.max(rare.saturating_add(rng.below(rare / 4 + 1))))
        }
    }
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
            let d = delay(&cfg, attempt, Retry::Transient, &mut rng).0;
            let ceiling = (100u64 << (attempt - 1)).min(10_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
            assert!(d >= prev_max / 2);
            prev_max = ceiling;
        }
        assert!(delay(&cfg, 1000, Retry::Transient, &mut rng).0 <= 10_000);
    }

    #[test]
    fn permanent_failures_wait_at_least_retry_permanent() {
        let cfg = Config::default();
        assert_eq!(cfg.retry_permanent, Millis::from_secs(60));
        let mut rng = Rng::new(5);
        for attempt in 1..=40 {
            let d = delay(&cfg, attempt, Retry::Permanent, &mut rng).0;
            assert!((60_000..=75_000).contains(&d), "attempt {attempt}: {d}");
        }
        assert_eq!(Retry::of(SourceErrorKind::Refused), Retry::Permanent);
        assert_eq!(Retry::of(SourceErrorKind::RelationMissing), Retry::Permanent);
        assert_eq!(Retry::of(SourceErrorKind::Connection), Retry::Transient);
    }
}
