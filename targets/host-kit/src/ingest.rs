//! A request as a host received it, checked and ready for the engine: method, raw path and
//! query, every header line (repeats kept, so ambiguity can be refused), the client's
//! address, and the body when the decision needs it.

use policy_core::{OwnedRequest, RequestFacts};

/// Why a request cannot be decided as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestError {
    /// A header value with bytes outside visible ASCII: it may be one Gogs reads, so the
    /// request is refused rather than the header dropped.
    HeaderValue,
    /// A body the decision reads that is over [`RequestFacts::LFS_BATCH_BODY_LIMIT`].
    BodyTooLarge,
}

impl IngestError {
    pub const fn status(self) -> u16 {
        match self {
            IngestError::HeaderValue => 400,
            IngestError::BodyTooLarge => 413,
        }
    }

    pub const fn message(self) -> &'static str {
        match self {
            IngestError::HeaderValue => "header values must be visible ASCII\n",
            IngestError::BodyTooLarge => "LFS batch request too large\n",
        }
    }
}

/// A received request. `S` is `&str` for hosts that can lend their request's strings
/// (`tollgate serve`) and `String` for those that hand copies over (the edge platforms).
#[derive(Clone, Debug)]
pub struct Ingested<S> {
    method: S,
    path: S,
    query: S,
    headers: Vec<(S, S)>,
    client_ip: Option<String>,
    body: Option<Vec<u8>>,
    entropy: Option<[u8; 32]>,
}

impl<S: AsRef<str>> Ingested<S> {
    pub fn new(method: S, path: S, query: S, client_ip: Option<String>) -> Self {
        Ingested {
            method,
            path,
            query,
            headers: Vec::new(),
            client_ip,
            body: None,
            entropy: None,
        }
    }

    /// The host's fresh random bytes for this request, which a browser sign-in draws its
    /// state, nonce and PKCE verifier from; hosts set them when the decider
    /// [wants them](crate::Decider::wants_entropy).
    pub fn set_entropy(&mut self, entropy: Option<[u8; 32]>) {
        self.entropy = entropy;
    }

    /// Adds one header line; its value must already be visible ASCII (see [`visible`]).
    pub fn header(&mut self, name: S, value: S) -> Result<(), IngestError> {
        if !visible(value.as_ref().as_bytes()) {
            return Err(IngestError::HeaderValue);
        }
        self.headers.push((name, value));
        Ok(())
    }

    /// Does the decision read the body? Then the host reads at most
    /// [`RequestFacts::LFS_BATCH_BODY_LIMIT`] bytes of it (after asking
    /// `Engine::refusal_before_body` whether any body could pass) and hands them over.
    pub fn wants_body(&self) -> bool {
        RequestFacts::wants_body(self.method.as_ref(), self.path.as_ref())
    }

    pub fn set_body(&mut self, body: Vec<u8>) -> Result<(), IngestError> {
        if body.len() > RequestFacts::LFS_BATCH_BODY_LIMIT {
            return Err(IngestError::BodyTooLarge);
        }
        self.body = Some(body);
        Ok(())
    }

    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    pub fn take_body(&mut self) -> Option<Vec<u8>> {
        self.body.take()
    }

    pub fn method(&self) -> &str {
        self.method.as_ref()
    }

    pub fn path(&self) -> &str {
        self.path.as_ref()
    }

    pub fn client_ip(&self) -> Option<&str> {
        self.client_ip.as_deref()
    }

    /// The header lines as the engine borrows them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .collect()
    }

    /// The facts to decide on; `pairs` comes from [`Ingested::header_pairs`].
    pub fn facts<'a>(&'a self, pairs: &'a [(&'a str, &'a str)]) -> RequestFacts<'a> {
        RequestFacts {
            method: self.method.as_ref(),
            path: self.path.as_ref(),
            query: self.query.as_ref(),
            headers: pairs,
            body: self.body.as_deref(),
            client_ip: self.client_ip.as_deref(),
            entropy: self.entropy,
        }
    }

    /// The request in `tollgate eval`'s JSON shape (for the policy module and test
    /// endpoints).
    pub fn to_owned_request(&self) -> OwnedRequest {
        let mut owned = OwnedRequest {
            method: self.method.as_ref().to_owned(),
            path: self.path.as_ref().to_owned(),
            query: self.query.as_ref().to_owned(),
            client_ip: self.client_ip.clone(),
            body: self
                .body
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            entropy: self.entropy,
            ..OwnedRequest::default()
        };
        for (name, value) in &self.headers {
            owned
                .headers
                .entry(name.as_ref().to_ascii_lowercase())
                .or_default()
                .0
                .push(value.as_ref().to_owned());
        }
        owned
    }
}

impl Ingested<&str> {
    /// The facts to decide on, borrowing the header lines as they are stored: no copy for
    /// hosts that lend their request's strings.
    pub fn borrowed_facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body.as_deref(),
            client_ip: self.client_ip.as_deref(),
            entropy: self.entropy,
        }
    }
}

/// Visible ASCII, spaces and tabs: what a header value may hold here.
pub fn visible(value: &[u8]) -> bool {
    // Every byte is looked at, without stopping at the first bad one, so the loop
    // vectorizes: values are mostly good, and a bearer token is a long one.
    value.iter().fold(true, |ok, &b| {
        ok & (b == b'\t' || (b' '..=b'~').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_repeat_and_invisible_values_refuse() {
        let mut req = Ingested::new("POST", "/acme/app.git/info/lfs/objects/batch", "", None);
        req.header("Authorization", "token a").unwrap();
        req.header("authorization", "token b").unwrap();
        assert_eq!(req.header("X", "caf\u{e9}"), Err(IngestError::HeaderValue));
        assert!(req.wants_body());
        assert_eq!(
            req.set_body(vec![b' '; RequestFacts::LFS_BATCH_BODY_LIMIT + 1]),
            Err(IngestError::BodyTooLarge)
        );
        let pairs = req.header_pairs();
        assert_eq!(req.facts(&pairs).header_values("AUTHORIZATION").count(), 2);
        assert_eq!(
            req.to_owned_request().headers["authorization"].0,
            ["token a", "token b"]
        );
    }
}
