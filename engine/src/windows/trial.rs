//! The session gap's trial: a sample of users whose events are kept as the scan gives them, then
//! counted with each candidate gap, so the tuning compares gaps without scanning again.

use super::local::HourRow;
use super::sessions::Sessions;

/// Users the trial keeps at most: past this, it halves its sample (at least half as many stay).
pub(super) const MOST_USERS: usize = 16_000;

/// One scanned event of a sampled user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Event {
    pub number: u32,
    pub ts: i64,
    pub hour: i32,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy)]
enum Status {
    Unseen,
    Out,
    /// In the sample, with its id's hash (which decides whether it stays when the sample halves).
    In(u64),
}

/// The sample's users, numbered from 0 in the order the scan met them, and their rows.
#[derive(Debug, Default)]
pub(super) struct Sampled {
    pub names: Vec<String>,
    pub rows: Vec<HourRow>,
}

/// Users are sampled by a hash of their id: those whose hash's top `level` bits are clear (all
/// of them at level 0). Whether a user is in depends on their id only, so the sample is the
/// same whatever order the scan meets them in, and a user is in for all their events or none.
#[derive(Debug)]
pub(super) struct Trial {
    level: u32,
    /// Per user number.
    status: Vec<Status>,
    users_in: usize,
    events: Vec<Event>,
}

impl Trial {
    pub(super) fn new() -> Trial {
        Trial {
            level: 0,
            status: Vec::new(),
            users_in: 0,
            events: Vec::new(),
        }
    }

    /// Takes a run of `events` of user `number` (whose id `name` gives) if the user is sampled.
    pub(super) fn take<'a>(
        &mut self,
        number: u32,
        name: impl FnOnce() -> &'a str,
        events: impl Iterator<Item = Event>,
    ) {
        let user = number as usize;
        if self.status.len() <= user {
            self.status.resize(user + 1, Status::Unseen);
        }
        if let Status::Unseen = self.status[user] {
            let hash = hash_id(name());
            self.status[user] = if sampled(hash, self.level) {
                self.users_in += 1;
                Status::In(hash)
            } else {
                Status::Out
            };
            if self.users_in > MOST_USERS {
                self.halve();
            }
        }
        if let Status::In(_) = self.status[user] {
            self.events.extend(events);
        }
    }

    /// Reads these users' status all at once (see `Sessions::touch`).
    pub(super) fn touch(&self, numbers: impl Iterator<Item = u32>) {
        let sum = numbers.fold(0usize, |sum, number| {
            sum ^ match self.status.get(number as usize) {
                Some(Status::In(_)) => 1,
                _ => 0,
            }
        });
        std::hint::black_box(sum);
    }

    /// Raises the level until the sample is small enough again, dropping the events of users
    /// no longer in it.
    fn halve(&mut self) {
        while self.users_in > MOST_USERS {
            self.level += 1;
            for status in &mut self.status {
                if let Status::In(hash) = *status
                    && !sampled(hash, self.level)
                {
                    *status = Status::Out;
                    self.users_in -= 1;
                }
            }
        }
        let status = &self.status;
        self.events
            .retain(|event| matches!(status[event.number as usize], Status::In(_)));
    }

    /// Users in the sample.
    pub(super) fn users(&self) -> usize {
        self.users_in
    }

    /// The sample's events counted in sessions of `gap_minutes` (0: each event), those after
    /// `counted_after_ms`, its users numbered anew from 0 (`names` are the scan's).
    pub(super) fn counted(
        &self,
        gap_minutes: u32,
        counted_after_ms: i64,
        names: &[String],
    ) -> Sampled {
        let mut local = vec![u32::MAX; self.status.len()];
        let mut sampled = Sampled::default();
        let mut sessions = Sessions::with_gap(gap_minutes, counted_after_ms);
        for event in &self.events {
            let number = &mut local[event.number as usize];
            if *number == u32::MAX {
                *number = sampled.names.len() as u32;
                sampled.names.push(names[event.number as usize].clone());
            }
            let hour = i64::from(event.hour);
            sessions.count(&mut sampled.rows, *number, event.ts, hour, event.weight);
        }
        sampled
    }
}

fn sampled(hash: u64, level: u32) -> bool {
    level == 0 || hash >> (64 - level.min(63)) == 0
}

/// A well-mixed hash of a user id, the same on every run and machine (FNV-1a, then a finaliser
/// so that the top bits depend on every byte).
fn hash_id(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn event(number: u32, ts: i64) -> Event {
        Event {
            number,
            ts,
            hour: (ts / (60 * MIN)) as i32,
            weight: 1.0,
        }
    }

    fn names(users: usize) -> Vec<String> {
        (0..users).map(|i| format!("oUser{i:07}")).collect()
    }

    #[test]
    fn a_small_store_is_tried_whole_and_a_large_one_on_a_bounded_sample_of_whole_users() {
        let small = names(500);
        let mut trial = Trial::new();
        for (number, name) in small.iter().enumerate() {
            let number = number as u32;
            trial.take(number, || name, [event(number, 0)].into_iter());
        }
        assert_eq!(trial.users(), 500);
        assert_eq!(trial.events.len(), 500);

        let large = names(100_000);
        let mut trial = Trial::new();
        // Each user seen twice, in two passes (two slices of days).
        for pass in 0..2 {
            for (number, name) in large.iter().enumerate() {
                let number = number as u32;
                let events = [event(number, pass * 60 * MIN)].into_iter();
                trial.take(number, || name, events);
            }
        }
        let users = trial.users();
        assert!(
            (MOST_USERS / 2..=MOST_USERS).contains(&users),
            "{users} users sampled"
        );
        // Every sampled user has both their events, and nobody else any.
        assert_eq!(trial.events.len(), 2 * users);
        let mut counts = std::collections::HashMap::new();
        for event in &trial.events {
            *counts.entry(event.number).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n == 2));
        assert_eq!(counts.len(), users);
    }

    #[test]
    fn the_sample_counts_each_gap_as_the_scan_would() {
        let name = "u".to_string();
        let names = ["nobody".to_string(), name.clone()];
        let mut trial = Trial::new();
        // A burst of three events 5 minutes apart, then one two hours later.
        let times = [0, 5 * MIN, 10 * MIN, 130 * MIN];
        // The scan numbered the user 1; the sample numbers its users from 0.
        trial.take(1, || &name, times.iter().map(|&ts| event(1, ts)));
        let rows = |gap, after| {
            let sampled = trial.counted(gap, after, &names);
            assert_eq!(sampled.names, ["u"]);
            sampled.rows
        };
        assert_eq!(rows(0, i64::MIN), [(0, 0, 3.0, 3), (0, 2, 1.0, 1)]);
        assert_eq!(rows(30, i64::MIN), [(0, 0, 1.0, 3), (0, 2, 1.0, 1)]);
        // Events up to the counted span's start only say a session is open.
        assert_eq!(rows(0, 5 * MIN), [(0, 0, 1.0, 1), (0, 2, 1.0, 1)]);
    }
}
