//! Finding the caller's credential in a request.
//!
//! Git and git-lfs send Basic auth (with a token as the user name or the password), tools
//! send `Authorization: Bearer <jwt>` or Gogs-style `Authorization: token <key>`. Anything
//! ambiguous is refused rather than guessed at.

use alloc::{string::String, vec::Vec};
use base64ct::{Base64, Encoding};

use crate::request::RequestFacts;
use crate::route::query_values;

/// A secret the caller presented, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No credential at all.
    Nothing,
    /// One or more strings that may each be a credential, most likely first (a Basic
    /// password before its user name).
    Candidates(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CredentialError {
    /// More than one `Authorization` header.
    Repeated,
    /// A scheme other than Basic, Bearer or token.
    UnsupportedScheme,
    /// Basic credentials that are not base64 of `user:password`.
    MalformedBasic,
    /// Basic credentials with both parts empty.
    EmptyBasic,
    /// A `token` or `access_token` query parameter: Gogs would honour it as a credential,
    /// so it must neither pass through nor be silently dropped.
    InQuery,
}

impl CredentialError {
    pub(crate) const fn message(self) -> &'static str {
        match self {
            CredentialError::Repeated => "more than one Authorization header",
            CredentialError::UnsupportedScheme => {
                "unsupported Authorization scheme (use Basic, Bearer or token)"
            }
            CredentialError::MalformedBasic => "malformed Basic credentials",
            CredentialError::EmptyBasic => "empty Basic credentials",
            CredentialError::InQuery => {
                "credentials in the query string (`token`, `access_token`) are not accepted; send an Authorization header"
            }
        }
    }
}

pub(crate) fn extract(facts: &RequestFacts<'_>) -> Result<Presented, CredentialError> {
    for key in ["token", "access_token"] {
        if query_values(facts.query, key).next().is_some() {
            return Err(CredentialError::InQuery);
        }
    }
    let mut values = facts.header_values("authorization");
    let Some(value) = values.next() else {
        return Ok(Presented::Nothing);
    };
    if values.next().is_some() {
        return Err(CredentialError::Repeated);
    }
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        if rest.is_empty() {
            return Err(CredentialError::UnsupportedScheme);
        }
        return Ok(Presented::Candidates(alloc::vec![String::from(rest)]));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = Base64::decode_vec(rest).map_err(|_| CredentialError::MalformedBasic)?;
        let decoded = String::from_utf8(decoded).map_err(|_| CredentialError::MalformedBasic)?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or(CredentialError::MalformedBasic)?;
        let candidates: Vec<String> = [password, user]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if candidates.is_empty() {
            return Err(CredentialError::EmptyBasic);
        }
        return Ok(Presented::Candidates(candidates));
    }
    Err(CredentialError::UnsupportedScheme)
}

/// A JWT has exactly three dot-separated parts; API keys never contain dots.
pub(crate) fn looks_like_jwt(candidate: &str) -> bool {
    candidate.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn with_headers(headers: &[(&str, &str)], query: &str) -> Result<Presented, CredentialError> {
        let facts = RequestFacts {
            headers,
            query,
            ..RequestFacts::get("/")
        };
        extract(&facts)
    }

    fn basic(user: &str, pass: &str) -> String {
        alloc::format!(
            "Basic {}",
            Base64::encode_string(alloc::format!("{user}:{pass}").as_bytes())
        )
    }

    #[test]
    fn schemes() {
        assert_eq!(with_headers(&[], ""), Ok(Presented::Nothing));
        assert_eq!(
            with_headers(&[("Authorization", "Bearer abc.def.ghi")], ""),
            Ok(Presented::Candidates(vec!["abc.def.ghi".into()]))
        );
        assert_eq!(
            with_headers(&[("authorization", "token k1")], ""),
            Ok(Presented::Candidates(vec!["k1".into()]))
        );
        let b = basic("alice", "s3cret");
        assert_eq!(
            with_headers(&[("Authorization", &b)], ""),
            Ok(Presented::Candidates(vec!["s3cret".into(), "alice".into()]))
        );
        let b = basic("tok", "");
        assert_eq!(
            with_headers(&[("Authorization", &b)], ""),
            Ok(Presented::Candidates(vec!["tok".into()]))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            with_headers(
                &[("Authorization", "Bearer a"), ("authorization", "Bearer b")],
                ""
            ),
            Err(CredentialError::Repeated)
        );
        assert_eq!(
            with_headers(&[("Authorization", "Digest x")], ""),
            Err(CredentialError::UnsupportedScheme)
        );
        assert_eq!(
            with_headers(&[("Authorization", "Bearer")], ""),
            Err(CredentialError::UnsupportedScheme)
        );
        assert_eq!(
            with_headers(&[("Authorization", "Basic !!!")], ""),
            Err(CredentialError::MalformedBasic)
        );
        let no_colon = alloc::format!("Basic {}", Base64::encode_string(b"nocolon"));
        assert_eq!(
            with_headers(&[("Authorization", &no_colon)], ""),
            Err(CredentialError::MalformedBasic)
        );
        let empty = basic("", "");
        assert_eq!(
            with_headers(&[("Authorization", &empty)], ""),
            Err(CredentialError::EmptyBasic)
        );
        assert_eq!(
            with_headers(&[], "token=abc"),
            Err(CredentialError::InQuery)
        );
        assert_eq!(
            with_headers(&[], "a=1&access_token=abc"),
            Err(CredentialError::InQuery)
        );
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("abc"));
        assert!(!looks_like_jwt("a.b.c.d"));
    }
}
