//! Which request headers a host may pass on to the origin. Every host forwards the same
//! way, so the rule lives here rather than in each of them.

use alloc::{string::String, vec::Vec};

use crate::decision::Decision;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus `host`,
/// which the host sets for the origin.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Headers that say which client the request came from. Only the host knows, so a
/// client's own copies never pass: the host sets each from the peer address (Gogs reads
/// `X-Real-IP`, then `X-Forwarded-For`, for its logs and `TRUSTED_PROXY_IPS`).
pub const CLIENT_ADDRESS: &[&str] = &["x-forwarded-for", "x-real-ip", "forwarded"];

/// The [`CLIENT_ADDRESS`] headers a host sets on every forwarded request, for the peer
/// address it saw (`Forwarded` is only removed: it needs more than an address).
pub fn client_address_headers(peer_ip: &str) -> [(&'static str, String); 2] {
    [
        ("x-forwarded-for", peer_ip.into()),
        ("x-real-ip", peer_ip.into()),
    ]
}

/// Are `a` and `b` the same header name the way some servers and gateways read names:
/// case-insensitive, with `_` taken for `-` (CGI and nginx `underscores_in_headers` map
/// `X_WEBAUTH_USER` onto `X-WEBAUTH-USER`)? Compared in place: this runs for every header
/// of every forwarded request.
fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// The header names listed in `Connection` values (lowercase): hop-by-hop as well.
pub fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// May request header `name` go to the origin? Not if it is hop-by-hop, named by
/// `Connection` (`connection` from [`connection_tokens`]), in the decision's `strip` list
/// or [`CLIENT_ADDRESS`] (which the host sets), in any case and with `_` for `-`.
pub fn may_forward(name: &str, connection: &[String], strip: &[String]) -> bool {
    let is = |n: &str| same_header(n, name);
    !(HOP_BY_HOP.iter().any(|n| is(n))
        || connection.iter().any(|n| is(n))
        || strip.iter().any(|n| is(n))
        || CLIENT_ADDRESS.iter().any(|n| is(n)))
}

/// May response header `name` go back to the client? Not if it is hop-by-hop or named by
/// the response's `Connection`.
pub fn may_return(name: &str, connection: &[String]) -> bool {
    !(HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || connection.iter().any(|c| c.eq_ignore_ascii_case(name)))
}

impl Decision {
    /// [`may_forward`] with this decision's `strip` list.
    pub fn forwards_header(&self, name: &str, connection: &[String]) -> bool {
        may_forward(name, connection, &self.strip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn hop_by_hop_and_stripped_headers_stay_behind() {
        let connection = connection_tokens(["keep-alive, X-Secret", " Upgrade"]);
        assert_eq!(connection, ["keep-alive", "x-secret", "upgrade"]);
        let strip = ["authorization".to_string(), "x-webauth-user".to_string()];
        for name in [
            "Connection",
            "TE",
            "Transfer-Encoding",
            "Host",
            "X-Secret",
            "X_Secret",
            "Authorization",
            "X-WEBAUTH-USER",
            "X_WEBAUTH_USER",
            "x_webauth-user",
            "X-Forwarded-For",
            "X_Forwarded_For",
            "X-Real-IP",
            "x_real_ip",
            "Forwarded",
        ] {
            assert!(
                !may_forward(name, &connection, &strip),
                "{name} must not be forwarded"
            );
        }
        for name in [
            "Content-Type",
            "Git-Protocol",
            "Accept",
            "Content-Length",
            "Cookie",
        ] {
            assert!(
                may_forward(name, &connection, &strip),
                "{name} must be forwarded"
            );
        }
        assert!(!may_return("Transfer-Encoding", &[]));
        assert!(may_return("Content-Type", &[]));
    }
}
