//! Time as errand sees it: one integer type and one injectable source.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
///
/// Stored as an integer so stores can index and compare it cheaply; written
/// on the wire as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// The longest span errand accepts anywhere a caller gives one: a delay, a
/// retry wait, a timeout, how far ahead `run_at` may be. Ten years is
/// longer than any job queue should hold a plan; past it a number is a
/// mistake (`1e12` seconds), and refused with a message, not stored as
/// the end of time.
pub const MAX_SPAN_SECS: f64 = 10.0 * 365.25 * 86_400.0;

/// The last instant RFC 3339 can write (year 9999).
const LAST_WRITABLE_MICROS: i64 = 253_402_300_799_999_999;
/// The first one (year 0000).
const FIRST_WRITABLE_MICROS: i64 = -62_167_219_200_000_000;

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_micros())
    }

    /// Instants outside years 0000–9999 (only reachable by saturating
    /// arithmetic) come out as the nearest writable one, never as 1970.
    pub fn to_datetime(self) -> DateTime<Utc> {
        let micros = self.0.clamp(FIRST_WRITABLE_MICROS, LAST_WRITABLE_MICROS);
        DateTime::from_timestamp_micros(micros).expect("within chrono's range")
    }

    /// Parses an RFC 3339 string, e.g. `2026-11-22T13:00:00Z`.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|at| Self::from_datetime(at.with_timezone(&Utc)))
            .filter(|at| (FIRST_WRITABLE_MICROS..=LAST_WRITABLE_MICROS).contains(&at.0))
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Saturates instead of overflowing: a far-future `run_at` stays far.
    pub fn plus(self, by: Duration) -> Self {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    pub fn minus(self, by: Duration) -> Self {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros))
    }

    /// `self` as people say it from `now`: `3s ago`, `5m ago`, `in 2h`,
    /// `4d ago` (for tables and pages, not for machines).
    pub fn relative_to(self, now: Timestamp) -> String {
        let micros = now.0.saturating_sub(self.0);
        let secs = micros.unsigned_abs() / 1_000_000;
        let amount = match secs {
            0..=59 => format!("{secs}s"),
            60..=3599 => format!("{}m", secs / 60),
            3600..=86_399 => format!("{}h", secs / 3600),
            _ => format!("{}d", secs / 86_400),
        };
        if micros >= 0 {
            format!("{amount} ago")
        } else {
            format!("in {amount}")
        }
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

/// Where every component gets "now" from.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(Utc::now())
    }
}

/// A clock that moves only when a test moves it.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            micros: AtomicI64::new(start.as_micros()),
        }
    }

    /// Starts at the real current time, so ids and timestamps look sane.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }

    pub fn set(&self, at: Timestamp) {
        self.micros.store(at.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_instants_are_written_as_the_nearest_rfc3339_time_not_1970() {
        let far = Timestamp::from_micros(i64::MAX).to_rfc3339();
        assert!(far.starts_with("9999-12-31T23:59:59"), "{far}");
        let early = Timestamp::from_micros(i64::MIN).to_rfc3339();
        assert!(early.starts_with("0000-01-01T00:00:00"), "{early}");
        let round = Timestamp::parse_rfc3339(&far).unwrap().to_rfc3339();
        assert_eq!(round, far);
    }

    #[test]
    fn rfc3339_round_trips_with_microseconds() {
        let at = Timestamp::from_micros(1_795_000_000_123_456);
        let text = at.to_rfc3339();
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(Timestamp::parse_rfc3339(&text), Some(at));
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_micros(1_000));
        assert_eq!(clock.now().as_micros(), 1_000);
        clock.advance(Duration::from_millis(2));
        assert_eq!(clock.now().as_micros(), 3_000);
    }

    #[test]
    fn add_saturates() {
        let far = Timestamp::from_micros(i64::MAX - 1).plus(Duration::from_secs(10));
        assert_eq!(far.as_micros(), i64::MAX);
    }
}
