//! Admission: how many of one kind of thing — client connections, D-Bus
//! requests in flight, runs — all callers together and each caller uid may
//! hold at once. One implementation for every front end (the socket
//! server, D-Bus, and the broker and gateway to come), so a limit means the
//! same wherever it is applied.
//!
//! [`Admission::try_admit`] either hands out a [`Ticket`], which gives the
//! place back when dropped (however the holder ends), or says which limit
//! is reached. A uid's first ticket may create a value shared by all of
//! that uid's tickets while any is held (the socket server keeps the
//! uid's request semaphore there); it is dropped with the last ticket.
//! [`Admission::admit`] waits for a place instead of refusing.
//! [`Admission::with_root_reserve`] keeps some places of the total for
//! uid 0 alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which limit refused a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// All callers together hold the most allowed.
    Total,
    /// This uid holds the most allowed.
    PerUid,
}

#[derive(Debug)]
struct Counts<S> {
    total: usize,
    per_uid: HashMap<u32, (usize, S)>,
}

/// The places of one kind, and their limits.
#[derive(Debug)]
pub struct Admission<S = ()> {
    max_total: usize,
    max_per_uid: usize,
    /// Places of `max_total` that only uid 0 may take.
    reserved_for_root: usize,
    counts: Mutex<Counts<S>>,
}

/// One admitted place; given back on drop.
#[derive(Debug)]
pub struct Ticket<S: Clone = ()> {
    admission: Arc<Admission<S>>,
    uid: u32,
    shared: S,
}

impl<S: Clone> Admission<S> {
    /// At most `max_total` places, at most `max_per_uid` of them for one uid
    /// (a limit of 0 admits nothing).
    pub fn new(max_total: usize, max_per_uid: usize) -> Arc<Self> {
        Self::with_root_reserve(max_total, max_per_uid, 0)
    }

    /// As [`Admission::new`], but uids other than 0 together hold at most
    /// `max_total - reserved` places (none if `reserved >= max_total`).
    pub fn with_root_reserve(max_total: usize, max_per_uid: usize, reserved: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_uid,
            reserved_for_root: reserved,
            counts: Mutex::new(Counts {
                total: 0,
                per_uid: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts<S>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for `uid`; `first` makes the uid's shared value when it holds
    /// no ticket yet.
    pub fn try_admit_with(
        self: &Arc<Self>,
        uid: u32,
        first: impl FnOnce() -> S,
    ) -> Result<Ticket<S>, Refusal> {
        let mut c = self.lock();
        let max_total = if uid == 0 {
            self.max_total
        } else {
            self.max_total.saturating_sub(self.reserved_for_root)
        };
        if c.total >= max_total {
            return Err(Refusal::Total);
        }
        let held = c.per_uid.get(&uid).map_or(0, |e| e.0);
        if held >= self.max_per_uid {
            return Err(Refusal::PerUid);
        }
        c.total += 1;
        let entry = c.per_uid.entry(uid).or_insert_with(|| (0, first()));
        entry.0 += 1;
        Ok(Ticket {
            admission: self.clone(),
            uid,
            shared: entry.1.clone(),
        })
    }

    /// Places held, all uids together.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// Places held by `uid`.
    pub fn held_by(&self, uid: u32) -> usize {
        self.lock().per_uid.get(&uid).map_or(0, |e| e.0)
    }
}

impl<S: Clone + Default> Admission<S> {
    /// A place for `uid`.
    pub fn try_admit(self: &Arc<Self>, uid: u32) -> Result<Ticket<S>, Refusal> {
        self.try_admit_with(uid, S::default)
    }
}

impl<S: Clone> Ticket<S> {
    /// The value shared by this uid's tickets.
    pub fn shared(&self) -> &S {
        &self.shared
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl<S: Clone> Drop for Ticket<S> {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(entry) = c.per_uid.get_mut(&self.uid) {
            entry.0 -= 1;
            if entry.0 == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_uid_and_in_total_and_places_come_back() {
        let a: Arc<Admission> = Admission::new(3, 2);
        let t1 = a.try_admit(1).unwrap();
        let t2 = a.try_admit(1).unwrap();
        assert_eq!(a.try_admit(1).unwrap_err(), Refusal::PerUid);
        let t3 = a.try_admit(2).unwrap();
        assert_eq!(a.try_admit(3).unwrap_err(), Refusal::Total);
        assert_eq!((a.active(), a.held_by(1), a.held_by(2)), (3, 2, 1));
        drop(t1);
        assert_eq!(a.held_by(1), 1);
        let t4 = a.try_admit(1).unwrap();
        drop((t2, t3, t4));
        assert_eq!((a.active(), a.held_by(1), a.held_by(2)), (0, 0, 0));
    }

    #[test]
    fn a_uids_shared_value_lives_while_any_of_its_tickets_does() {
        let a: Arc<Admission<Arc<u32>>> = Admission::new(10, 10);
        let mut made = 0;
        let t1 = a
            .try_admit_with(7, || {
                made += 1;
                Arc::new(42)
            })
            .unwrap();
        let t2 = a.try_admit_with(7, || unreachable!()).unwrap();
        assert!(Arc::ptr_eq(t1.shared(), t2.shared()));
        drop((t1, t2));
        let t3 = a.try_admit_with(7, || Arc::new(43)).unwrap();
        assert_eq!(**t3.shared(), 43);
        assert_eq!(made, 1);
    }

    #[test]
    fn places_reserved_for_root_are_taken_by_root_only() {
        let a: Arc<Admission> = Admission::with_root_reserve(4, 4, 2);
        let users: Vec<_> = (1..=2).map(|u| a.try_admit(u).unwrap()).collect();
        assert_eq!(a.try_admit(3).unwrap_err(), Refusal::Total);
        let root: Vec<_> = (0..2).map(|_| a.try_admit(0).unwrap()).collect();
        assert_eq!(a.try_admit(0).unwrap_err(), Refusal::Total);
        drop(root);
        // Others stop at the total less the reserve, whoever holds the rest.
        let r = a.try_admit(0).unwrap();
        assert_eq!(a.try_admit(3).unwrap_err(), Refusal::Total);
        drop((users, r));
        assert!(a.try_admit(3).is_ok());
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        let a: Arc<Admission> = Admission::new(0, 5);
        assert_eq!(a.try_admit(1).unwrap_err(), Refusal::Total);
        let b: Arc<Admission> = Admission::new(5, 0);
        assert_eq!(b.try_admit(1).unwrap_err(), Refusal::PerUid);
    }
}
