/// What a host knows about one incoming request, borrowed from the host's own request type.
///
/// `path` and `query` are exactly as received (still percent-encoded, query without `?`).
/// `headers` keeps every header line, repeats included, so that ambiguity such as two
/// `Authorization` headers can be refused rather than resolved one way or another.
/// `body` is only needed for Git LFS batch requests (their JSON body says whether the
/// client downloads or uploads); hosts pass up to [`RequestFacts::LFS_BATCH_BODY_LIMIT`]
/// bytes of it, or `None`, in which case the request is treated as an upload.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    /// The client's address as the host saw it; keys anonymous rate limits.
    pub client_ip: Option<&'a str>,
    /// 32 bytes fresh from the host's random source, for the values a browser sign-in
    /// must not be able to guess (`[sso]`: state, nonce, PKCE verifier). Hosts of a policy
    /// with `[sso]` draw them for every request ([`crate::Engine::wants_entropy`]);
    /// without them a sign-in fails closed. Never taken from the client.
    pub entropy: Option<[u8; 32]>,
}

impl<'a> RequestFacts<'a> {
    /// Largest LFS batch body the engine reads; larger ones count as uploads.
    pub const LFS_BATCH_BODY_LIMIT: usize = crate::route::LFS_BATCH_BODY_LIMIT;

    /// A GET with no headers: convenient for building facts field by field.
    pub const fn get(path: &'a str) -> Self {
        RequestFacts {
            method: "GET",
            path,
            query: "",
            headers: &[],
            body: None,
            client_ip: None,
            entropy: None,
        }
    }

    /// All values of the header `name` (ASCII case-insensitive), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The same request with the body that asks for the least access its route allows (an
    /// LFS batch that only downloads): if that is refused, no body can pass, so a host may
    /// answer before reading the real one (see [`crate::Engine::refusal_before_body`]).
    pub fn with_least_access_body(&self) -> RequestFacts<'a> {
        RequestFacts {
            body: Some(crate::route::LEAST_ACCESS_BODY),
            ..*self
        }
    }

    /// Does the request need its body for a decision? Hosts that stream bodies ask this
    /// before deciding, and buffer at most [`Self::LFS_BATCH_BODY_LIMIT`] bytes when it does.
    pub fn wants_body(method: &str, path: &str) -> bool {
        method.eq_ignore_ascii_case("POST")
            && path
                .to_ascii_lowercase()
                .trim_end_matches('/')
                .ends_with("/info/lfs/objects/batch")
    }
}

/// Input of the edge hosts' test-only `POST /__tollgate/eval`: one request decided at a
/// given time, with rate-limit state kept apart under `rate_namespace`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    pub request: OwnedRequest,
    /// Unix seconds.
    pub now: u64,
    #[serde(default)]
    pub rate_namespace: alloc::string::String,
    /// For a sign-in callback: what the provider answered the token request, so a test
    /// decides the whole sign-in without a provider (`None`: the token request is the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<crate::OwnedTokenResponse>,
}

/// An owned request in the JSON shape `tollgate eval` reads and `[[test]]` cases use:
/// `{"method", "path", "query", "headers": {name: value | [values]}, "body", "client_ip"}`.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "ts", ts(rename = "Request"))]
pub struct OwnedRequest {
    /// Default `GET`.
    #[serde(default = "default_method")]
    #[cfg_attr(feature = "ts", ts(as = "Option<alloc::string::String>", optional))]
    pub method: alloc::string::String,
    pub path: alloc::string::String,
    /// The query string without its `?`.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<alloc::string::String>", optional))]
    pub query: alloc::string::String,
    /// A header's value, or its values when it is repeated.
    #[serde(default)]
    #[cfg_attr(
        feature = "ts",
        ts(type = "Record<string, string | string[]>", optional)
    )]
    pub headers: alloc::collections::BTreeMap<alloc::string::String, crate::serde_util::OneOrMany>,
    /// The body, read only for a Git LFS batch request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub body: Option<alloc::string::String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub client_ip: Option<alloc::string::String>,
    /// The host's 32 random bytes for this request, as 64 hex digits (see
    /// [`RequestFacts::entropy`]): given by test cases so that a sign-in redirect is the
    /// same on every host. A host deciding real traffic draws its own.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes")]
    #[cfg_attr(feature = "ts", ts(type = "string", optional = nullable))]
    pub entropy: Option<[u8; 32]>,
}

mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<[u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_str(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let text = alloc::string::String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|_| D::Error::custom("entropy must be 64 hex digits"))?;
        Ok(Some(bytes))
    }
}

fn default_method() -> alloc::string::String {
    alloc::string::String::from("GET")
}

impl OwnedRequest {
    /// Header lines as `(name, value)` pairs, for [`OwnedRequest::facts`].
    pub fn header_pairs(&self) -> alloc::vec::Vec<(&str, &str)> {
        self.headers
            .iter()
            .flat_map(|(name, values)| values.0.iter().map(move |v| (name.as_str(), v.as_str())))
            .collect()
    }

    /// A borrowed view; `pairs` comes from [`OwnedRequest::header_pairs`].
    pub fn facts<'a>(&'a self, pairs: &'a [(&'a str, &'a str)]) -> RequestFacts<'a> {
        RequestFacts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: pairs,
            body: self.body.as_deref().map(str::as_bytes),
            client_ip: self.client_ip.as_deref(),
            entropy: self.entropy,
        }
    }
}
