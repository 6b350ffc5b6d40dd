//! A fresh [`Epoch`] for this process. The types themselves, `Epoch` and `Revision`, are the
//! protocol's (`cattail_proto`); only drawing a random epoch is the server's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cattail_proto::{EPOCH_LEN, Epoch};

/// A fresh epoch from the operating system's random source.
///
/// If that source fails (it practically never does on Linux), this falls back to xxh3 of the
/// wall clock, the process id and a process-wide counter: unique enough to tell processes
/// apart, which is all an epoch promises.
pub fn random_epoch() -> Epoch {
    let mut bytes = [0u8; EPOCH_LEN];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = fallback_random();
    }
    Epoch::from_array(bytes)
}

fn fallback_random() -> [u8; EPOCH_LEN] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = Vec::with_capacity(32);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&seed).to_le_bytes()
}
