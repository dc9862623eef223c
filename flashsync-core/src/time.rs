//! Time as data. The core never reads a clock: every input carries `now`.

use std::fmt;
use std::ops::{Add, Sub};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, as given by whoever
/// drives the machine (the tokio driver reads the system clock, the simulator
/// its virtual clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

/// The time an input happens at, on two clocks: `wall` (milliseconds since
/// the Unix epoch, which can jump when the system clock is set) stamps the
/// records users read (`updated_at`, `last_success_at`, events); `mono`
/// (milliseconds on a clock that never jumps, from any origin) runs
/// deadlines and back-off, so setting the system clock neither fires every
/// retry at once nor delays one by hours.
///
/// A bare [`Timestamp`] converts into a `Now` whose two clocks agree (what
/// the simulator and tests use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// The wall clock.
    pub wall: Timestamp,
    /// The monotonic clock.
    pub mono: Millis,
}

impl From<Timestamp> for Now {
    fn from(wall: Timestamp) -> Now {
        Now { wall, mono: Millis(wall.0) }
    }
}

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    /// `n` seconds.
    pub const fn from_secs(n: u64) -> Millis {
        Millis(n.saturating_mul(1000))
    }
}

impl Add<Millis> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Millis) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Millis;
    fn sub(self, rhs: Timestamp) -> Millis {
        Millis(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's
        // algorithm), so status output is readable without a date crate.
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, (rem / 60) % 60, rem % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_795_953_845_123).to_string(), "2026-11-29T12:04:05.123Z");
    }
}
