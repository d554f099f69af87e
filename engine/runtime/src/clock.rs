//! Where the runtime gets the time from. The core never reads a clock.

use std::sync::Mutex;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;

    /// The time as the core and the store carry it: whole milliseconds,
    /// the store's precision, so that what a command answers and keeps in
    /// memory equals what is read back from disk later.
    fn time(&self) -> flowform_core::Time {
        let now = self.now();
        flowform_core::Time::from_millis(now.as_millisecond()).unwrap_or(flowform_core::Time::from(now))
    }
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that moves only when told to, for tests and simulations.
pub struct ManualClock(Mutex<jiff::Timestamp>);

impl ManualClock {
    pub fn new(at: jiff::Timestamp) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn advance(&self, by: jiff::SignedDuration) {
        if let Ok(mut t) = self.0.lock() {
            *t = t.checked_add(by).unwrap_or(*t);
        }
    }

    pub fn set(&self, at: jiff::Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = at;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        self.0.lock().map(|t| *t).unwrap_or_else(|p| *p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_in_whole_milliseconds() {
        let clock = ManualClock::new("2026-12-01T13:33:11.123456789Z".parse().unwrap());
        assert_eq!(clock.time().to_string(), flowform_core::Time::from_millis(clock.now().as_millisecond()).unwrap().to_string());
        assert_eq!(clock.time(), flowform_core::Time::from("2026-12-01T13:33:11.123Z".parse::<jiff::Timestamp>().unwrap()));
        let now = SystemClock.time();
        assert_eq!(flowform_core::Time::from_millis(now.millis()), Some(now));
    }
}
