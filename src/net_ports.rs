//! Free TCP ports on loopback for the processes rapr starts itself: `rapr bench`'s sidecars and
//! apps, and the integration tests' sidecars and private servers.
//!
//! Picking a port by binding port 0 and releasing it races: the kernel hands the same port to the
//! next outgoing connection or `bind(0)` of any process before ours binds it. So ports come from
//! the range *below* the kernel's ephemeral range (`ip_local_port_range`), which outgoing
//! connections never take; a process-wide cursor walks that range from a random start, so one
//! process never gets the same port twice (until it has used the whole range) and concurrent
//! processes (nextest runs each test in its own) rarely meet; each candidate is bound once to
//! skip ports something listens on. Two processes can still pick the same port: a start whose
//! port was taken is retried with fresh ones ([`is_addr_in_use`] recognises the failure).
//! Depends on nothing else in the crate.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Lowest port handed out: above the well-known and most registered service ports.
const FLOOR: u16 = 20_000;

/// The range ports are picked from, and where this process's cursor started.
struct Pool {
    low: u16,
    len: u32,
    cursor: AtomicU32,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (low, high) = range_below_ephemeral(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default());
        let len = u32::from(high - low);
        // RandomState is seeded per process: a random start without a dependency.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let start = (h.finish() % u64::from(len)) as u32;
        Pool { low, len, cursor: AtomicU32::new(start) }
    })
}

/// `[low, high)` below the ephemeral range read from `ip_local_port_range` ("32768\t60999"), or
/// a fixed range when that range leaves too little room below it.
fn range_below_ephemeral(text: &str) -> (u16, u16) {
    let eph_low = text.split_whitespace().next().and_then(|v| v.parse::<u16>().ok()).unwrap_or(32_768);
    if eph_low >= FLOOR + 2_000 {
        (FLOOR, eph_low)
    } else {
        // Ephemeral ports start low: take the top of the port space instead; the bind check
        // and the start retry still hold.
        (61_000, 65_535)
    }
}

/// The next `n` ports from `candidates` that nothing is bound to on loopback. They are held
/// together while picked, so the answer never holds the same port twice.
fn pick(candidates: impl Iterator<Item = u16>, n: usize) -> std::io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for port in candidates {
        if held.len() == n {
            break;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no free port on 127.0.0.1"));
    }
    held.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// `N` distinct free TCP ports on loopback, never handed out before in this process.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let p = pool();
    let candidates = std::iter::from_fn(|| {
        let i = p.cursor.fetch_add(1, Ordering::Relaxed) % p.len;
        // i < len <= 65535 - low, so the sum fits.
        Some(p.low + i as u16)
    })
    .take(p.len as usize);
    let ports = pick(candidates, N)?;
    ports.try_into().map_err(|_| std::io::Error::other("port count"))
}

/// One free TCP port on loopback, never handed out before in this process.
pub fn free_port() -> std::io::Result<u16> {
    free_ports::<1>().map(|[p]| p)
}

/// Whether a process's output or an error says a port it was given was taken ("Address already
/// in use", Go's and Rust's wording alike).
pub fn is_addr_in_use(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("address already in use") || t.contains("addrinuse") || t.contains("address in use")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn never_the_same_port_twice_and_never_ephemeral() {
        let (low, high) = {
            let p = pool();
            (p.low, u32::from(p.low) + p.len)
        };
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let [a, b, c] = free_ports::<3>().unwrap();
            for port in [a, b, c] {
                assert!(seen.insert(port), "{port} handed out twice");
                assert!(port >= low && u32::from(port) < high, "{port} outside {low}..{high}");
            }
        }
        assert!(seen.insert(free_port().unwrap()));
    }

    #[test]
    fn ports_something_listens_on_are_skipped() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let spare = TcpListener::bind("127.0.0.1:0").unwrap();
        let spare_port = spare.local_addr().unwrap().port();
        drop(spare);
        assert_eq!(pick([busy_port, spare_port].into_iter(), 1).unwrap(), vec![spare_port]);
        assert!(pick([busy_port].into_iter(), 1).is_err(), "no candidate left");
    }

    #[test]
    fn the_range_sits_below_the_kernels_ephemeral_ports() {
        assert_eq!(range_below_ephemeral("32768\t60999\n"), (20_000, 32_768));
        assert_eq!(range_below_ephemeral("10000 65535"), (61_000, 65_535));
        assert_eq!(range_below_ephemeral(""), (20_000, 32_768));
    }

    #[test]
    fn recognises_address_in_use() {
        assert!(is_addr_in_use("cannot listen for the HTTP API on 127.0.0.1:5: Address already in use (os error 98)"));
        assert!(is_addr_in_use("listen tcp 127.0.0.1:80: bind: address already in use"));
        assert!(!is_addr_in_use("connection refused"));
    }
}
