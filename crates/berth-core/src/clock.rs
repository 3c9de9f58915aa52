//! Time through an injected clock, so tests control it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch. Every timestamp Berth stores has this resolution, which is
/// the resolution AgentCore orders events by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Epoch seconds as the JSON number rest-json uses for `timestamp` members.
    pub fn epoch_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// From epoch seconds (possibly fractional), rounding to the millisecond.
    pub fn from_epoch_seconds(seconds: f64) -> Option<Timestamp> {
        let millis = (seconds * 1000.0).round();
        (millis.is_finite() && (0.0..=253_402_300_799_000.0).contains(&millis)).then_some(Timestamp(millis as i64))
    }

    /// ISO-8601 with milliseconds, as the services with `timestampFormat: iso8601` emit it.
    pub fn to_iso8601(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let format = time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                );
                t.format(&format).unwrap_or_default()
            }
            Err(_) => String::new(),
        }
    }
}

/// The source of "now". Services get one injected; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since_epoch.as_millis() as i64)
    }
}

/// A clock that only moves when told to.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn set(&self, to: Timestamp) {
        self.0.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso8601_with_millis() {
        assert_eq!(Timestamp(1_714_564_800_123).to_iso8601(), "2024-05-01T12:00:00.123Z");
    }

    #[test]
    fn converts_fractional_epoch_seconds() {
        assert_eq!(
            Timestamp::from_epoch_seconds(1_714_564_800.123_456),
            Some(Timestamp(1_714_564_800_123))
        );
        assert_eq!(Timestamp::from_epoch_seconds(-1.0), None);
        assert_eq!(Timestamp::from_epoch_seconds(f64::NAN), None);
        assert_eq!(Timestamp::from_epoch_seconds(1e300), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(10));
        assert_eq!(clock.now(), Timestamp(10));
        clock.advance(5);
        assert_eq!(clock.now(), Timestamp(15));
    }
}
