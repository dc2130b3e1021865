use chrono::{DateTime, Utc};

/// A point in time, in nanoseconds since the Unix epoch. Hosts read their clock and pass
/// this in; the engine never reads time itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl UnixTime {
    /// The epoch itself.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// Whole seconds since the epoch (saturating far in the future).
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(secs.saturating_mul(NANOS_PER_SEC))
    }

    /// Milliseconds since the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        UnixTime(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        UnixTime(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / NANOS_PER_SEC
    }

    /// Whole seconds from `earlier` to this time; 0 if `earlier` is later (a clock that
    /// stepped back).
    pub const fn secs_since(self, earlier: UnixTime) -> u64 {
        self.0.saturating_sub(earlier.0) / NANOS_PER_SEC
    }

    pub(crate) fn to_chrono(self) -> DateTime<Utc> {
        // u64 nanoseconds end in 2554, well inside chrono's range.
        let secs = i64::try_from(self.as_secs()).unwrap_or(i64::MAX);
        let nanos = u32::try_from(self.0 % NANOS_PER_SEC).unwrap_or(0);
        DateTime::from_timestamp(secs, nanos).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
