//! The values the edge keeps in the browser's cookie, signed with the session key (HMAC-SHA256
//! over the kind and the payload): a sign-in in progress ([`LoginTicket`]) or a session
//! ([`SessionTicket`]). Only a value the edge signed, of the kind expected and not expired,
//! is ever read back.

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

use crate::time::UnixTime;

/// The shortest session key the edge signs with: a guessable key would let anyone mint a
/// session for anyone.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// What a cookie value is; part of what is signed, so one kind never passes for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Login,
    Session,
}

impl Kind {
    const fn tag(self) -> &'static str {
        match self {
            Kind::Login => "l1",
            Kind::Session => "s1",
        }
    }
}

/// A sign-in under way: what the callback must match, and where to go after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginTicket {
    pub(crate) state: String,
    pub(crate) nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub(crate) verifier: String,
    /// The local path (and query) to return to.
    pub(crate) to: String,
    /// Unix seconds after which the sign-in must start again.
    pub(crate) exp: u64,
}

/// A signed-in browser: the identity its ID token established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionTicket {
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
    /// The `[[issuer]]` (by name) that signed the ID token.
    pub(crate) issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) binding: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) claims: BTreeMap<String, String>,
    /// Unix seconds the session ends at.
    pub(crate) exp: u64,
}

/// Why a cookie value was not read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Not a value the edge made with this key (tampered, another kind, another key).
    Invalid,
    /// Made by the edge, but past its end.
    Expired,
}

/// `kind.payload.mac`, all base64url.
pub(crate) fn seal<T: Serialize>(kind: Kind, ticket: &T, key: &[u8]) -> Option<String> {
    let json = serde_json::to_vec(ticket).ok()?;
    let signed = format!("{}.{}", kind.tag(), Base64UrlUnpadded::encode_string(&json));
    let mac = mac(key, &signed)?.finalize().into_bytes();
    Some(format!(
        "{signed}.{}",
        Base64UrlUnpadded::encode_string(&mac)
    ))
}

/// The ticket in `value` when the edge signed it with `key` as `kind`. `exp_of` reads the
/// ticket's end, checked against `now` only once the signature holds.
pub(crate) fn open<T: DeserializeOwned>(
    kind: Kind,
    value: &str,
    key: &[u8],
    now: UnixTime,
    exp_of: impl Fn(&T) -> u64,
) -> Result<T, Unreadable> {
    let (signed, tag) = value.rsplit_once('.').ok_or(Unreadable::Invalid)?;
    let (kind_tag, payload) = signed.split_once('.').ok_or(Unreadable::Invalid)?;
    if kind_tag != kind.tag() {
        return Err(Unreadable::Invalid);
    }
    let tag = Base64UrlUnpadded::decode_vec(tag).map_err(|_| Unreadable::Invalid)?;
    mac(key, signed)
        .ok_or(Unreadable::Invalid)?
        .verify_slice(&tag)
        .map_err(|_| Unreadable::Invalid)?;
    let json = Base64UrlUnpadded::decode_vec(payload).map_err(|_| Unreadable::Invalid)?;
    let ticket: T = serde_json::from_slice(&json).map_err(|_| Unreadable::Invalid)?;
    if now.as_secs() >= exp_of(&ticket) {
        return Err(Unreadable::Expired);
    }
    Ok(ticket)
}

fn mac(key: &[u8], signed: &str) -> Option<Hmac<Sha256>> {
    if key.len() < MIN_KEY_BYTES {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(signed.as_bytes());
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn login(exp: u64) -> LoginTicket {
        LoginTicket {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            to: "/acme/app".into(),
            exp,
        }
    }

    fn open_login(value: &str, key: &[u8]) -> Result<LoginTicket, Unreadable> {
        open(Kind::Login, value, key, NOW, |t: &LoginTicket| t.exp)
    }

    #[test]
    fn a_sealed_ticket_opens_with_its_key_until_it_ends() {
        let sealed = seal(Kind::Login, &login(1_800_000_600), KEY).unwrap();
        assert_eq!(open_login(&sealed, KEY), Ok(login(1_800_000_600)));
        let ended = seal(Kind::Login, &login(1_800_000_000), KEY).unwrap();
        assert_eq!(open_login(&ended, KEY), Err(Unreadable::Expired));
    }

    #[test]
    fn anything_but_the_edge_own_value_is_invalid() {
        let sealed = seal(Kind::Login, &login(1_800_000_600), KEY).unwrap();
        let other_key = b"fedcba9876543210fedcba9876543210";
        assert_eq!(open_login(&sealed, other_key), Err(Unreadable::Invalid));
        // The same payload presented as a session.
        let as_session = open(Kind::Session, &sealed, KEY, NOW, |t: &LoginTicket| t.exp);
        assert_eq!(as_session, Err(Unreadable::Invalid));
        // One payload byte changed, the signature kept.
        let (head, tail) = sealed.split_at(5);
        let flipped = if tail.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{head}{flipped}{}", &tail[1..]);
        assert_eq!(open_login(&tampered, KEY), Err(Unreadable::Invalid));
        for junk in ["", ".", "l1..", "l1.e30.", "l1.e30", "s1.e30.AAAA"] {
            assert_eq!(open_login(junk, KEY), Err(Unreadable::Invalid), "{junk}");
        }
        // A key too short to trust signs and opens nothing.
        assert_eq!(seal(Kind::Login, &login(1), b"short"), None);
        assert_eq!(open_login(&sealed, &KEY[..31]), Err(Unreadable::Invalid));
    }
}
