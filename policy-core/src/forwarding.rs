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

/// The header names listed in `Connection` values (lowercase): hop-by-hop as well.
pub fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// May request header `name` (any case) go to the origin? Not if it is hop-by-hop, named
/// by `Connection` (`connection` from [`connection_tokens`]), in the decision's `strip`
/// list, or `X-Forwarded-For` (the host sets its own from the peer address).
pub fn may_forward(name: &str, connection: &[String], strip: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&lower.as_str())
        || connection.contains(&lower)
        || strip.contains(&lower)
        || lower == "x-forwarded-for")
}

/// May response header `name` go back to the client? Not if it is hop-by-hop or named by
/// the response's `Connection`.
pub fn may_return(name: &str, connection: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&lower.as_str()) || connection.contains(&lower))
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
            "Authorization",
            "X-WEBAUTH-USER",
            "X-Forwarded-For",
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
