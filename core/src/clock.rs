//! An injectable clock, so leases, key windows and retention are testable
//! without sleeping.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use idem::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_060));
//! ```

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's real clock. The default everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemTime::now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch, as stored in the SQL tables. Times
/// before the epoch clamp to 0 and times past `i64::MAX` ms clamp to it.
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The inverse of [`to_millis`]; negative values clamp to the epoch.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_and_clamp() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_millis(to_millis(t)), t);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_millis(-5), UNIX_EPOCH);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(UNIX_EPOCH);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.now(), UNIX_EPOCH + Duration::from_secs(5));
    }
}
