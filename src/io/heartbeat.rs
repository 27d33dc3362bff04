//! Signs of progress, for the recovery's watchdog: long work calls [`beat`] as it goes
//! (every progress update, every step-log entry), and the watchdog reboots a recovery
//! whose work has stopped moving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds after the epoch of the last beat.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Something moved.
pub fn beat() {
    let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
    LAST.fetch_max(now, Ordering::Relaxed);
}

/// How long since the last beat (or since the first call, when nothing beat yet).
pub fn since_last() -> Duration {
    let now = epoch().elapsed();
    now.saturating_sub(Duration::from_millis(LAST.load(Ordering::Relaxed)))
}

/// A watch on the heartbeat; dropping it stops the watch (the work is over).
#[must_use = "the watch stops when this is dropped"]
pub struct Watch(Arc<AtomicBool>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Starts a thread that calls `on_stall` once, with the time gone, when nothing beat for
/// `limit` while the returned [`Watch`] lives; it looks every `limit / 20` (at least
/// every 10 ms, at most every 5 s).
pub fn watch(limit: Duration, on_stall: impl FnOnce(Duration) + Send + 'static) -> Watch {
    beat();
    let stopped = Arc::new(AtomicBool::new(false));
    let every = (limit / 20).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let stop = Arc::clone(&stopped);
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let quiet = since_last();
        if quiet >= limit {
            on_stall(quiet);
            return;
        }
    });
    Watch(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    // One test: the heartbeat is global to the process.
    #[test]
    fn the_watchdog_fires_only_when_nothing_beats() {
        let (tx, rx) = mpsc::channel();
        let watching = watch(Duration::from_millis(300), move |quiet| {
            tx.send(quiet).unwrap()
        });
        // Beating keeps it quiet …
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            beat();
        }
        assert!(rx.try_recv().is_err(), "fired although work moved");
        // … silence does not.
        let quiet = rx.recv_timeout(Duration::from_secs(5)).expect("fired");
        assert!(quiet >= Duration::from_millis(300), "{quiet:?}");
        drop(watching);

        // A dropped watch never fires.
        let (tx, rx) = mpsc::channel();
        drop(watch(Duration::from_millis(100), move |quiet| {
            tx.send(quiet).unwrap()
        }));
        assert!(
            rx.recv_timeout(Duration::from_millis(600)).is_err(),
            "a stopped watch fired"
        );
    }
}
