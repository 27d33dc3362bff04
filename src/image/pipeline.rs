//! An ordered parallel map with bounded memory: the calling thread produces jobs and
//! consumes results in order (all stream I/O happens there), worker threads do the CPU
//! work in between.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// Runs `work` over the jobs `next` yields on `threads` worker threads and hands the
/// results to `done` in job order. At most `window` jobs are in flight (produced but not
/// yet consumed), which bounds memory. Stops at the first error of `next` or `done`;
/// a panic in `work` is re-raised here.
pub fn ordered<J, T, E>(
    threads: usize,
    window: usize,
    mut next: impl FnMut() -> Result<Option<J>, E>,
    work: impl Fn(J) -> T + Sync,
    mut done: impl FnMut(T) -> Result<(), E>,
) -> Result<(), E>
where
    J: Send,
    T: Send,
{
    let window = window.max(1) as u64;
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::channel::<(u64, J)>();
    let job_rx = Mutex::new(job_rx);
    let (result_tx, result_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let (job_rx, result_tx, work, stop) = (&job_rx, result_tx.clone(), &work, &stop);
            scope.spawn(move || loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, job)) = job else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = catch_unwind(AssertUnwindSafe(|| work(job)));
                if result_tx.send((seq, result)).is_err() {
                    break;
                }
            });
        }
        drop(result_tx);

        let mut pending = BTreeMap::new();
        let (mut sent, mut consumed, mut exhausted) = (0u64, 0u64, false);
        let outcome = 'run: loop {
            while !exhausted && sent - consumed < window {
                match next() {
                    Ok(Some(job)) => {
                        // Workers outlive this loop, so the channel is open.
                        let _ = job_tx.send((sent, job));
                        sent += 1;
                    }
                    Ok(None) => exhausted = true,
                    Err(e) => break 'run Err(e),
                }
            }
            if consumed == sent {
                break Ok(());
            }
            let Ok((seq, result)) = result_rx.recv() else {
                unreachable!("workers stay alive while jobs are pending");
            };
            let result = result.unwrap_or_else(|panic| resume_unwind(panic));
            pending.insert(seq, result);
            let mut failed = None;
            while let Some(result) = pending.remove(&consumed) {
                consumed += 1;
                if let Err(e) = done(result) {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        stop.store(true, Ordering::Relaxed);
        drop(job_tx);
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_with_bounded_flight() {
        let mut produced = 0u64;
        let mut out = Vec::new();
        let max_flight = std::cell::Cell::new(0u64);
        let consumed = std::cell::Cell::new(0u64);
        ordered(
            3,
            4,
            || {
                if produced == 100 {
                    return Ok::<_, ()>(None);
                }
                produced += 1;
                max_flight.set(max_flight.get().max(produced - consumed.get()));
                Ok(Some(produced))
            },
            |n| {
                // Uneven work so results arrive out of order.
                std::thread::sleep(std::time::Duration::from_micros((n * 7919) % 500));
                n * 2
            },
            |n| {
                consumed.set(consumed.get() + 1);
                out.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out, (1..=100).map(|n| n * 2).collect::<Vec<_>>());
        assert!(max_flight.get() <= 4, "{} in flight", max_flight.get());
    }

    #[test]
    fn stops_at_the_first_error_in_order() {
        let mut next = 0u64;
        let mut seen = Vec::new();
        let err = ordered(
            2,
            4,
            || {
                next += 1;
                Ok(Some(next))
            },
            |n| n,
            |n| {
                seen.push(n);
                if n == 5 {
                    Err(format!("failed at {n}"))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert_eq!(err, "failed at 5");
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }
}
