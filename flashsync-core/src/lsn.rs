//! Log sequence numbers: positions in an origin's ordered change log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in an origin's change log (a Postgres WAL location for the
/// Postgres source).
///
/// LSNs are totally ordered; a commit's LSN is the position just past its
/// commit record, so "applied through `lsn`" means every commit whose LSN is
/// `<= lsn` is reflected locally. Displayed and parsed in Postgres' `X/Y` hex
/// form.
///
/// ```
/// use flashsync_core::Lsn;
/// let lsn: Lsn = "16/B374D848".parse().unwrap();
/// assert_eq!(lsn.0, 0x16_B374_D848);
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position, before any change.
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not an `X/Y` hexadecimal LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.chars().take(64).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for v in [0u64, 1, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX] {
            let s = Lsn(v).to_string();
            assert_eq!(s.parse::<Lsn>(), Ok(Lsn(v)));
        }
        for bad in ["", "/", "1/", "/1", "x/1", "1/2/3", "123456789/0", "-1/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }
}
