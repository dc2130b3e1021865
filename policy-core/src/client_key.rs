//! Rate-limit subjects for anonymous callers, keyed by address. One client must not be
//! able to spread itself over many keys: an IPv4 address written as IPv4-mapped IPv6 is
//! the IPv4 address, and IPv6 clients (who commonly get a whole /64) share a key per
//! prefix.

use alloc::{format, string::String};
use core::net::{IpAddr, Ipv6Addr};

/// Default IPv6 prefix length anonymous callers are grouped by.
pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The subject for an anonymous caller at `client_ip` (as the host saw it).
pub(crate) fn anonymous(client_ip: Option<&str>, ipv6_prefix: u8) -> String {
    let Some(text) = client_ip else {
        return String::from("anon:unknown");
    };
    // Hosts may pass a bracketed or zone-qualified form; neither names another client.
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    let bare = bare.split_once('%').map_or(bare, |(addr, _zone)| addr);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("anon:{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("anon:{v4}"),
            None => format!("anon:{}/{ipv6_prefix}", mask(v6, ipv6_prefix)),
        },
        // Whatever a host passed that is no address, it must not become a key per value.
        Err(_) => String::from("anon:unparsed"),
    }
}

fn mask(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let kept = match u32::from(prefix.min(128)) {
        0 => 0,
        p => bits & (u128::MAX << (128 - p)),
    };
    Ipv6Addr::from(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_one_key() {
        assert_eq!(anonymous(Some("192.0.2.7"), 64), "anon:192.0.2.7");
        assert_eq!(anonymous(Some("::ffff:192.0.2.7"), 64), "anon:192.0.2.7");
        assert_eq!(anonymous(Some("[::ffff:c000:207]"), 64), "anon:192.0.2.7");
        assert_eq!(
            anonymous(Some("2001:db8:1:2:aaaa::1"), 64),
            "anon:2001:db8:1:2::/64"
        );
        assert_eq!(
            anonymous(Some("2001:db8:1:2:ffff::9"), 64),
            "anon:2001:db8:1:2::/64"
        );
        assert_eq!(
            anonymous(Some("2001:db8:1:2:ffff::9"), 48),
            "anon:2001:db8:1::/48"
        );
        assert_eq!(anonymous(Some("fe80::1%eth0"), 128), "anon:fe80::1/128");
        assert_eq!(anonymous(Some("not an address"), 64), "anon:unparsed");
        assert_eq!(anonymous(None, 64), "anon:unknown");
    }
}
