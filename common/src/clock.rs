//! The injected clock. Wall-clock time is derived from tokio's clock, so a test that pauses
//! and advances tokio time moves every timestamp the system writes (leases, wake-ups, events).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    pub fn to_proto(self) -> mc_proto::prost_types::Timestamp {
        mc_proto::prost_types::Timestamp {
            seconds: self.0.div_euclid(1000),
            nanos: i32::try_from(self.0.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }
    }

    pub fn from_proto(t: &mc_proto::prost_types::Timestamp) -> Timestamp {
        Timestamp(
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000),
        )
    }

    /// RFC 3339 in UTC, for humans.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }

    /// The UTC day as `YYYY-MM-DD`.
    pub fn utc_day(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
            Err(_) => "invalid-day".to_string(),
        }
    }

    /// Start of the UTC day containing this instant.
    pub fn utc_midnight(self) -> Timestamp {
        Timestamp(self.0 - self.0.rem_euclid(86_400_000))
    }
}

/// The source of "now" for everything that writes or compares times.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

struct ClockInner {
    origin_wall_ms: i64,
    origin: tokio::time::Instant,
    offset_ms: AtomicI64,
    /// A manual clock: only `advance` moves it.
    manual: bool,
}

impl Clock {
    /// A clock anchored to the system's wall time now.
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    pub fn system() -> Clock {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Clock::starting_at(Timestamp(wall))
    }

    /// A clock that reads `start` now and moves with tokio's clock.
    pub fn starting_at(start: Timestamp) -> Clock {
        Clock {
            inner: Arc::new(ClockInner {
                origin_wall_ms: start.0,
                origin: tokio::time::Instant::now(),
                offset_ms: AtomicI64::new(0),
                manual: false,
            }),
        }
    }

    /// A clock that reads `start` until `advance` moves it, and only then: for unit tests
    /// of leases and timeouts that do real I/O (a database on another thread), where
    /// tokio's paused clock would jump ahead on its own while the I/O runs.
    pub fn manual(start: Timestamp) -> Clock {
        Clock {
            inner: Arc::new(ClockInner {
                origin_wall_ms: start.0,
                origin: tokio::time::Instant::now(),
                offset_ms: AtomicI64::new(0),
                manual: true,
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed_ms = if self.inner.manual {
            0
        } else {
            let elapsed = tokio::time::Instant::now().duration_since(self.inner.origin);
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        };
        Timestamp(
            self.inner
                .origin_wall_ms
                .saturating_add(elapsed_ms)
                .saturating_add(self.inner.offset_ms.load(Ordering::Relaxed)),
        )
    }

    /// Moves this clock (and every clone of it) forward, for tests of leases and timeouts.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.inner.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now().to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moves_with_tokio_time_and_advance() {
        let c = Clock::starting_at(Timestamp(1_000));
        assert_eq!(c.now(), Timestamp(1_000));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.now(), Timestamp(3_000));
        c.clone().advance(Duration::from_millis(500));
        assert_eq!(c.now(), Timestamp(3_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_moves_only_when_advanced() {
        let c = Clock::manual(Timestamp(1_000));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.now(), Timestamp(1_000), "tokio's time does not move it");
        c.advance(Duration::from_millis(250));
        assert_eq!(c.clone().now(), Timestamp(1_250));
    }

    #[test]
    fn proto_round_trip_and_days() {
        let t = Timestamp(1_700_000_123_456);
        assert_eq!(Timestamp::from_proto(&t.to_proto()), t);
        assert_eq!(t.utc_day(), "2023-11-14");
        assert_eq!(Timestamp(-1).to_proto().seconds, -1);
        assert_eq!(t.utc_midnight().utc_day(), "2023-11-14");
        assert!(t.to_rfc3339().starts_with("2023-11-14T22:15:23"));
    }
}
