//! The open-loop load generator of `rapr bench`: a fixed request rate spread over a fixed number
//! of connections, each connection sending at its own evenly spaced instants (wrk2's model).
//!
//! Latency is charged from the instant a request *should* have been sent whenever the system
//! under test made the connection late (its previous answer came back after that instant). That
//! is the coordinated-omission correction: a stall of 100 ms shows as every request that should
//! have gone out during it waiting, not as one slow request. When the connection was idle and
//! only the generator's own timer fired late, latency is charged from the actual send, so timer
//! granularity never shows up as the system's latency. Sleeps end ~1 ms early and the last stretch
//! is covered by yielding, because tokio's timers fire on millisecond ticks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A future returned by a caller.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One connection's request maker: sends one request and reads its whole answer.
pub trait Caller: Send {
    /// One request/response; `Err` counts as an error (transport failure or unexpected status).
    fn call(&mut self) -> CallFuture<'_>;
}

/// Makes a connected caller (one per connection).
pub type Connect = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Box<dyn Caller>, String>> + Send>> + Send + Sync>;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests per second over all connections.
    pub qps: u64,
    /// Concurrent connections (each with at most one request in flight).
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time sent before measuring starts (same rate, not recorded).
    pub warmup: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Latencies in nanoseconds, corrected for coordinated omission.
    pub hist: Histogram<u64>,
    /// Failed requests in the measured window.
    pub errors: u64,
    /// The first error seen, to show what went wrong.
    pub first_error: Option<String>,
    /// From the start of the measured window to its last answer (longer than the flags'
    /// duration when the system under test fell behind the rate).
    pub window: Duration,
}

impl LoadResult {
    /// Requests answered successfully per second in the measured window.
    pub fn achieved_qps(&self) -> f64 {
        self.hist.len() as f64 / self.window.as_secs_f64()
    }

    /// A percentile in microseconds.
    pub fn p_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A latency histogram in nanoseconds: 100 ns to 60 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    // Invariant: these bounds are valid (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(100, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Connects every connection, then runs warm-up and the measured window at the fixed rate.
/// `progress` is called about once a second with (seconds elapsed, requests done so far).
pub async fn run(load: Load, connect: Connect, progress: &(dyn Fn(f64, u64) + Sync)) -> Result<LoadResult, String> {
    let conns = load.connections.max(1);
    let mut callers = Vec::with_capacity(conns);
    for _ in 0..conns {
        callers.push(connect().await?);
    }
    let interval = Duration::from_secs_f64(conns as f64 / load.qps.max(1) as f64);
    let begin = Instant::now() + Duration::from_millis(20);
    let measure_from = begin + load.warmup;
    let end = measure_from + load.duration;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for (i, caller) in callers.into_iter().enumerate() {
        let first = begin + interval.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(connection(caller, first, interval, measure_from, end, Arc::clone(&done))));
    }
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            progress(begin.elapsed().as_secs_f64(), done.load(std::sync::atomic::Ordering::Relaxed));
        }
    };
    let joined = async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.map_err(|e| format!("load task failed: {e}"))?);
        }
        Ok::<_, String>(out)
    };
    let parts = tokio::select! {
        r = joined => r?,
        _ = watch => unreachable!("the progress loop never ends"),
    };
    let mut hist = histogram();
    let (mut errors, mut first_error, mut window) = (0, None, load.duration);
    for p in parts {
        hist.add(&p.hist).map_err(|e| format!("merging histograms: {e}"))?;
        errors += p.errors;
        first_error = first_error.or(p.first_error);
        window = window.max(p.window);
    }
    Ok(LoadResult { hist, errors, first_error, window })
}

/// One connection's loop: send at `first`, `first + interval`, ... until `end`.
async fn connection(mut caller: Box<dyn Caller>, first: Instant, interval: Duration, measure_from: Instant, end: Instant, done: Arc<std::sync::atomic::AtomicU64>) -> LoadResult {
    let mut hist = histogram();
    let (mut errors, mut first_error) = (0u64, None);
    let mut due = first;
    let mut last_done = Instant::now();
    let mut window = Duration::ZERO;
    while due < end {
        wait_until(due).await;
        let sent = Instant::now();
        // Late because the previous answer was late: charge from the due time (the correction).
        let origin = if last_done > due { due } else { sent };
        let outcome = caller.call().await;
        let now = Instant::now();
        if due >= measure_from {
            window = now - measure_from;
            match outcome {
                Ok(()) => {
                    let ns = u64::try_from((now - origin).as_nanos()).unwrap_or(u64::MAX);
                    hist.saturating_record(ns.max(100));
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        last_done = now;
        due += interval;
    }
    LoadResult { hist, errors, first_error, window }
}

/// Sleeps until ~1 ms before `at`, then yields until it passes (timer ticks are 1 ms wide).
async fn wait_until(at: Instant) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > Duration::from_micros(1500) {
        tokio::time::sleep_until((at - Duration::from_millis(1)).into()).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Duration);

    impl Caller for Fixed {
        fn call(&mut self) -> CallFuture<'_> {
            let d = self.0;
            Box::pin(async move {
                tokio::time::sleep(d).await;
                Ok(())
            })
        }
    }

    fn connect(d: Duration) -> Connect {
        Arc::new(move || Box::pin(async move { Ok(Box::new(Fixed(d)) as Box<dyn Caller>) }))
    }

    #[tokio::test]
    async fn sends_at_the_fixed_rate() {
        let load = Load { qps: 400, connections: 4, duration: Duration::from_secs(1), warmup: Duration::from_millis(100) };
        let r = run(load, connect(Duration::ZERO), &|_, _| {}).await.unwrap();
        assert_eq!(r.errors, 0);
        assert!((390..=410).contains(&r.hist.len()), "{} requests", r.hist.len());
    }

    #[tokio::test]
    async fn a_slow_system_is_charged_for_the_requests_it_delayed() {
        // One connection due every 10 ms, each answer takes 30 ms: the backlog grows, and the
        // corrected latency grows with it instead of staying at 30 ms.
        let load = Load { qps: 100, connections: 1, duration: Duration::from_millis(600), warmup: Duration::ZERO };
        let r = run(load, connect(Duration::from_millis(30)), &|_, _| {}).await.unwrap();
        assert!(r.hist.max() > 300_000_000, "max {} ns", r.hist.max());
        assert!(r.hist.min() >= 29_000_000);
    }
}
