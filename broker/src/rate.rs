//! Rate limits that mean what they say: per capability and per caller, in
//! requests per minute, counted over a sliding minute (the weighted sum of
//! the current and the previous fixed minute, so a burst at a minute's
//! edge cannot double the rate), with state that is plain data so the
//! daemon keeps it across requests, processes and restarts. A limit is
//! checked and counted in one step: a refused request is not counted, an
//! allowed one always is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What is being counted: a capability as a whole, or one caller of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    Capability(String),
    Caller(String, u32),
}

/// One key's two windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    /// The minute (seconds since the epoch / 60) `current` counts.
    minute: u64,
    current: u32,
    previous: u32,
}

/// The counters of every key; serialise it to keep it across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limiter {
    windows: BTreeMap<Key, Window>,
}

/// A refusal: which limit, and in how many seconds a request may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub key: Key,
    pub limit: u32,
    pub retry_after_secs: u64,
}

impl Limiter {
    /// Counts one request at `now` (seconds since the epoch) against every
    /// `(key, per_minute)` given, or counts nothing and says which limit
    /// refused it. All limits are checked before any is counted.
    pub fn admit(&mut self, now: u64, limits: &[(Key, u32)]) -> Result<(), Limited> {
        for (key, limit) in limits {
            let w = self.windows.get(key).copied().unwrap_or_default().at(now);
            if w.estimate(now) + 1.0 > f64::from(*limit) {
                return Err(Limited {
                    key: key.clone(),
                    limit: *limit,
                    retry_after_secs: 60 - now % 60,
                });
            }
        }
        for (key, _) in limits {
            let w = self.windows.entry(key.clone()).or_default();
            *w = w.at(now);
            w.current = w.current.saturating_add(1);
        }
        Ok(())
    }

    /// Drops keys that have counted nothing for two minutes, so the state
    /// stays the size of the active callers.
    pub fn prune(&mut self, now: u64) {
        let minute = now / 60;
        self.windows.retain(|_, w| w.minute + 1 >= minute);
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

impl Window {
    /// The window moved on to `now`'s minute. A clock that went back keeps
    /// the counts it has (a step back must not reset a limit).
    fn at(self, now: u64) -> Window {
        let minute = now / 60;
        match minute.checked_sub(self.minute) {
            None | Some(0) => self,
            Some(1) => Window {
                minute,
                current: 0,
                previous: self.current,
            },
            Some(_) => Window {
                minute,
                current: 0,
                previous: 0,
            },
        }
    }

    /// Requests in the minute up to `now`: all of this minute's and the
    /// share of the previous minute's that the sliding minute still covers.
    fn estimate(&self, now: u64) -> f64 {
        let elapsed = (now % 60) as f64 / 60.0;
        f64::from(self.current) + f64::from(self.previous) * (1.0 - elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> Key {
        Key::Capability("openai/chat".into())
    }

    #[test]
    fn a_limit_holds_within_a_minute_and_frees_up_after() {
        let mut l = Limiter::default();
        let t0 = 60 * 1000;
        for i in 0..5 {
            assert!(l.admit(t0 + i, &[(cap(), 5)]).is_ok(), "request {i}");
        }
        let e = l.admit(t0 + 10, &[(cap(), 5)]).unwrap_err();
        assert_eq!((e.limit, e.retry_after_secs), (5, 50));
        // The sliding minute: right after the edge the previous minute
        // still counts almost fully.
        assert!(l.admit(t0 + 61, &[(cap(), 5)]).is_err());
        // Two minutes on, everything has slid out.
        assert!(l.admit(t0 + 125, &[(cap(), 5)]).is_ok());
    }

    #[test]
    fn a_burst_at_the_edge_does_not_double_the_rate() {
        let mut l = Limiter::default();
        let edge = 60 * 2000;
        let mut admitted = 0;
        for t in (edge - 2)..(edge + 2) {
            for _ in 0..10 {
                if l.admit(t, &[(cap(), 10)]).is_ok() {
                    admitted += 1;
                }
            }
        }
        assert!(
            admitted <= 11,
            "{admitted} requests in four seconds against 10/min"
        );
    }

    #[test]
    fn a_refusal_by_one_limit_counts_against_none() {
        let mut l = Limiter::default();
        let t = 60 * 3000;
        let alice = Key::Caller("openai/chat".into(), 1000);
        let bob = Key::Caller("openai/chat".into(), 1001);
        assert!(l.admit(t, &[(cap(), 3), (alice.clone(), 1)]).is_ok());
        assert!(l.admit(t, &[(cap(), 3), (alice.clone(), 1)]).is_err());
        assert!(l.admit(t, &[(cap(), 3), (bob.clone(), 1)]).is_ok());
        // Alice's refusal did not use up the capability's third place.
        assert!(l
            .admit(
                t,
                &[(cap(), 3), (Key::Caller("openai/chat".into(), 1002), 1)]
            )
            .is_ok());
        assert!(l
            .admit(
                t,
                &[(cap(), 3), (Key::Caller("openai/chat".into(), 1003), 1)]
            )
            .is_err());
    }

    #[test]
    fn state_survives_a_round_trip_and_a_clock_step_back() {
        let mut l = Limiter::default();
        let t = 60 * 4000;
        for _ in 0..3 {
            l.admit(t, &[(cap(), 3)]).unwrap();
        }
        let saved = postcard::to_stdvec(&l).unwrap();
        let mut restored: Limiter = postcard::from_bytes(&saved).unwrap();
        assert_eq!(restored, l);
        assert!(restored.admit(t + 1, &[(cap(), 3)]).is_err());
        assert!(
            restored.admit(t - 600, &[(cap(), 3)]).is_err(),
            "a clock step back reset the limit"
        );
        restored.prune(t + 600);
        assert!(restored.is_empty());
    }
}
