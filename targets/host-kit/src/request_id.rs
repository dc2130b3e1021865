//! Request ids, the same on every native host: the client's `X-Request-Id` when it is
//! usable, else the host's own id for the request, unique within a process and across its
//! restarts. Audit records carry both, and the request id is forwarded to Gogs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The client's `X-Request-Id` from its `values`, when it sent exactly one that is 1-128
/// visible ASCII characters (a value that is not text should be given as "").
pub fn from_client<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<String> {
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let usable = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    usable.then(|| value.to_owned())
}

/// The next id of this process: its start time (`now_nanos`, read at the first call
/// only, so later requests do not read the clock for it) and a counter, in hex.
pub fn next_id(now_nanos: impl FnOnce() -> u64) -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let boot = *BOOT.get_or_init(now_nanos);
    format!("{boot:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::{from_client, next_id};

    #[test]
    fn only_one_printable_id_of_at_most_128_characters_is_taken() {
        assert_eq!(from_client(["abc-1"].into_iter()), Some("abc-1".into()));
        assert_eq!(from_client(["a", "b"].into_iter()), None);
        assert_eq!(from_client(std::iter::empty()), None);
        assert_eq!(from_client([""].into_iter()), None);
        assert_eq!(from_client(["has space"].into_iter()), None);
        let long = "x".repeat(129);
        assert_eq!(from_client([long.as_str()].into_iter()), None);
        assert_eq!(
            from_client([&long[..128]].into_iter()).map(|v| v.len()),
            Some(128)
        );
    }

    #[test]
    fn ids_differ_and_keep_the_first_calls_time() {
        let (first, second) = (next_id(|| 0xabc), next_id(|| unreachable!()));
        assert_ne!(first, second);
        assert_eq!(first.split('-').next(), second.split('-').next());
    }
}
