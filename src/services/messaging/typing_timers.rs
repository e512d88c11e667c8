//! When typing notices run out: per room, the earliest time someone's typing ends, so one
//! task (see [`super::Messaging::run_typing_timers`]) expires them all, instead of a task
//! per notice that anyone could multiply by sending notices.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::util::now_ms;

/// Time after an expiry before it is acted on, so the entry has surely expired.
const SLACK_MS: u64 = 10;

#[derive(Default)]
pub(super) struct TypingTimers {
    /// Room → when to look at it next (milliseconds since the epoch).
    due: Mutex<HashMap<String, u64>>,
    changed: Notify,
}

impl TypingTimers {
    /// Looks at `room` once `until` has passed (or earlier, if it is due earlier).
    pub(super) fn expire_at(&self, room: &str, until: u64) {
        let at = until.saturating_add(SLACK_MS);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let earlier = match due.get_mut(room) {
            Some(current) if *current <= at => false,
            Some(current) => {
                *current = at;
                true
            }
            None => {
                due.insert(room.to_owned(), at);
                true
            }
        };
        drop(due);
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Waits until some rooms are due, and returns them (no longer timed).
    pub(super) async fn due(&self) -> Vec<String> {
        loop {
            let wait = {
                let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
                let now = now_ms();
                let ready: Vec<String> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(room, _)| room.clone())
                    .collect();
                if !ready.is_empty() {
                    for room in &ready {
                        due.remove(room);
                    }
                    return ready;
                }
                due.values().min().map(|at| Duration::from_millis(at - now))
            };
            match wait {
                Some(wait) => {
                    let _ = tokio::time::timeout(wait, self.changed.notified()).await;
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rooms_come_due_once_at_their_earliest_time() {
        let timers = TypingTimers::default();
        let now = now_ms();
        timers.expire_at("!late", now + 200);
        timers.expire_at("!soon", now + 20);
        timers.expire_at("!soon", now + 5_000);
        for _ in 0..1000 {
            timers.expire_at("!late", now + 200);
        }
        assert_eq!(timers.due().await, vec!["!soon".to_owned()]);
        assert_eq!(timers.due().await, vec!["!late".to_owned()]);
        assert!(timers.due.lock().unwrap().is_empty());
    }
}
