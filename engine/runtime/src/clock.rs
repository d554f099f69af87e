//! Where the runtime gets the time from. The core never reads a clock.

use std::sync::Mutex;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;

    /// The time as the core and the store carry it.
    fn time(&self) -> flowform_core::Time {
        flowform_core::Time::from(self.now())
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
