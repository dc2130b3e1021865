//! Browser single sign-on (`[sso]`): OpenID Connect authorization code flow with PKCE, the
//! session kept in a cookie the edge signs.
//!
//! 1. A browser asking for a web page it may not see anonymously is sent to the identity
//!    provider ([`Sso::sign_in`]) with a fresh `state`, `nonce` and PKCE challenge, all
//!    drawn from the host's randomness ([`crate::RequestFacts::entropy`]) and kept in a
//!    signed login cookie.
//! 2. The provider sends it back to the callback path. The core checks the login cookie
//!    and the `state`, and describes the code-for-token request ([`TokenExchange`]); the
//!    host sends it, as it fetches a JWKS, and hands the answer to
//!    [`crate::Engine::complete_sign_in`].
//! 3. The ID token is verified by its `[[issuer]]`'s rules (keys, algorithms, leeway,
//!    bindings, user claim), with the client id as its audience and the login's `nonce`.
//!    The identity becomes a session cookie (`HttpOnly`, `Secure`, `SameSite=Lax`) the
//!    edge signs with the session key, and the browser returns where it started.
//! 4. Web requests with that cookie carry the identity through the same grants, rate limits
//!    and origin credential as any other. The cookie never reaches Gogs.

mod ticket;

use alloc::{borrow::Cow, format, string::String, vec::Vec};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decision::{Header, Reason};
use crate::identity::{Identity, Via};
use crate::jwt::{Issuer, TokenRejection};
use crate::origin::SecretStore;
use crate::request::RequestFacts;
use crate::route::query_values;
use crate::time::UnixTime;
pub(crate) use ticket::MIN_KEY_BYTES;
use ticket::{Kind, LoginTicket, SessionTicket, Unreadable};

/// How long a sign-in may take at the identity provider.
const LOGIN_SECONDS: u64 = 600;
/// The longest return path kept across a sign-in; a longer one returns to `/`.
const MAX_RETURN_BYTES: usize = 2048;
/// Browsers keep cookies up to 4096 bytes, name and attributes included.
const MAX_COOKIE_VALUE_BYTES: usize = 3800;
/// Gogs' own sign-in page and sign-out form: with `[sso]` the edge answers both, since a
/// Gogs session cannot pass the edge (`origin.session_cookies`).
const GOGS_SIGN_IN_PATH: &str = "/user/login";
const GOGS_SIGN_OUT_PATH: &str = "/user/logout";

/// `[sso]`, validated.
#[derive(Clone, Debug)]
pub(crate) struct Sso {
    /// The `[[issuer]]` as ID tokens are checked against it: its keys, algorithms, leeway,
    /// bindings and user claim, with the client id as the only audience and no `typ` rule.
    pub(crate) issuer: Issuer,
    pub(crate) client_id: String,
    /// The secret (by name) authenticating the client at the token endpoint; `None` for a
    /// public client, which PKCE alone protects.
    pub(crate) client_secret: Option<String>,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) redirect_uri: String,
    /// `redirect_uri`'s path: where the provider sends the browser back.
    pub(crate) callback_path: String,
    pub(crate) logout_path: String,
    /// Space-separated, `openid` among them.
    pub(crate) scope: String,
    pub(crate) cookie: String,
    pub(crate) lifetime_secs: u64,
    /// The secret (by name) that signs the cookie.
    pub(crate) session_key: String,
    /// Where signing out sends the browser: the provider's end-session endpoint (RP-initiated
    /// logout), else `post_logout_redirect_uri`, else `/`.
    pub(crate) end_session_endpoint: Option<String>,
    pub(crate) post_logout_redirect_uri: Option<String>,
}

/// Why a sign-in did not complete. Each has a stable code for audit logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInFailure {
    /// The callback came without the login cookie the sign-in began with.
    NotStarted,
    /// The login cookie is not one the edge signed.
    BadLoginCookie,
    /// The sign-in took longer than the edge allows (10 minutes).
    LoginExpired,
    /// The callback's `state` is not the login's: another sign-in replaced it, or the
    /// callback was forged.
    StateMismatch,
    /// The provider refused (its `error` parameter), or sent no code.
    ProviderRefused,
    /// The token endpoint could not be reached, or answered without an ID token.
    ExchangeFailed,
    /// The ID token's `nonce` is not the login's.
    NonceMismatch,
    /// The identity does not fit in a cookie (too many groups or claims).
    SessionTooLarge,
    /// The host lacks what sign-in needs: randomness, the session key (at least 32 bytes),
    /// or the client secret.
    Unavailable,
}

impl SignInFailure {
    pub const ALL: [SignInFailure; 9] = [
        SignInFailure::NotStarted,
        SignInFailure::BadLoginCookie,
        SignInFailure::LoginExpired,
        SignInFailure::StateMismatch,
        SignInFailure::ProviderRefused,
        SignInFailure::ExchangeFailed,
        SignInFailure::NonceMismatch,
        SignInFailure::SessionTooLarge,
        SignInFailure::Unavailable,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            SignInFailure::NotStarted => "sign_in_not_started",
            SignInFailure::BadLoginCookie => "sign_in_bad_cookie",
            SignInFailure::LoginExpired => "sign_in_expired",
            SignInFailure::StateMismatch => "sign_in_state_mismatch",
            SignInFailure::ProviderRefused => "sign_in_refused",
            SignInFailure::ExchangeFailed => "sign_in_exchange_failed",
            SignInFailure::NonceMismatch => "sign_in_nonce_mismatch",
            SignInFailure::SessionTooLarge => "sign_in_session_too_large",
            SignInFailure::Unavailable => "sign_in_unavailable",
        }
    }

    pub const fn status(self) -> u16 {
        match self {
            SignInFailure::NotStarted
            | SignInFailure::BadLoginCookie
            | SignInFailure::LoginExpired
            | SignInFailure::StateMismatch => 400,
            SignInFailure::ProviderRefused | SignInFailure::NonceMismatch => 403,
            SignInFailure::ExchangeFailed => 502,
            SignInFailure::SessionTooLarge | SignInFailure::Unavailable => 500,
        }
    }

    const fn message(self) -> &'static str {
        match self {
            SignInFailure::NotStarted => "no sign-in is under way in this browser: open the page you wanted again",
            SignInFailure::BadLoginCookie => "the sign-in cookie is not valid: open the page you wanted again",
            SignInFailure::LoginExpired => "the sign-in took too long: open the page you wanted again",
            SignInFailure::StateMismatch => "this sign-in does not match the one under way (was another started in a second tab?): open the page you wanted again",
            SignInFailure::ProviderRefused => "the identity provider did not sign you in",
            SignInFailure::ExchangeFailed => "the identity provider's token endpoint did not answer with an ID token",
            SignInFailure::NonceMismatch => "the ID token was not issued for this sign-in",
            SignInFailure::SessionTooLarge => "the identity has too many groups or claims to keep in a session cookie",
            SignInFailure::Unavailable => "single sign-on is not available on this gateway",
        }
    }
}

/// The code-for-token request a sign-in needs: the host POSTs `body` to `url` with
/// `headers` (as it fetches a JWKS), reads at most [`TokenExchange::MAX_RESPONSE_BYTES`]
/// of the answer and hands it to [`crate::Engine::complete_sign_in`] with the callback
/// request it came from.
#[derive(Clone, Debug)]
pub struct TokenExchange {
    /// The provider's token endpoint.
    pub url: String,
    /// `content-type`, `accept`, and for a confidential client `authorization` (Basic,
    /// with the client secret: never log its value).
    pub headers: Vec<Header>,
    /// `application/x-www-form-urlencoded`: the code, the redirect URI, the PKCE verifier.
    pub body: String,
}

impl TokenExchange {
    /// The most of the provider's answer the host reads; more is a failed exchange.
    pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

    /// As `tollgate eval` and the test cases show it: `{"token_request": {url, headers, body}}`,
    /// the client secret redacted.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            token_request: Request<'a>,
        }
        #[derive(Serialize)]
        struct Request<'a> {
            url: &'a str,
            headers: alloc::collections::BTreeMap<&'a str, &'a str>,
            body: &'a str,
        }
        serde_json::to_string(&Shown {
            token_request: Request {
                url: &self.url,
                headers: self
                    .headers
                    .iter()
                    .map(|h| (h.name(), h.display_value()))
                    .collect(),
                body: &self.body,
            },
        })
        .unwrap_or_default()
    }
}

/// What came of a [`TokenExchange`].
#[derive(Clone, Copy, Debug)]
pub enum TokenResponse<'a> {
    /// The provider answered, with any status; `body` as read.
    Answered { status: u16, body: &'a [u8] },
    /// No answer: refused, timed out, or longer than [`TokenExchange::MAX_RESPONSE_BYTES`].
    Failed,
}

/// A [`TokenResponse`] that owns its body: what a test case or a test endpoint says the
/// provider answered (`{"status": 200, "body": "..."}`, or `{"failed": true}`).
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(rename = "TokenResponse"))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum OwnedTokenResponse {
    Answered {
        status: u16,
        body: String,
    },
    Failed {
        #[cfg_attr(feature = "ts", ts(type = "true"))]
        failed: True,
    },
}

/// `true`, and only `true`: `{"failed": true}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(try_from = "bool", into = "bool")]
pub struct True;

impl TryFrom<bool> for True {
    type Error = &'static str;
    fn try_from(value: bool) -> Result<Self, Self::Error> {
        if value {
            Ok(True)
        } else {
            Err("`failed` can only be true")
        }
    }
}

impl From<True> for bool {
    fn from(_: True) -> bool {
        true
    }
}

impl OwnedTokenResponse {
    pub fn response(&self) -> TokenResponse<'_> {
        match self {
            OwnedTokenResponse::Answered { status, body } => TokenResponse::Answered {
                status: *status,
                body: body.as_bytes(),
            },
            OwnedTokenResponse::Failed { .. } => TokenResponse::Failed,
        }
    }
}

/// What the edge answers a browser itself: the status, reason, message, response headers
/// and, once signed in, the identity.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) reason: Reason,
    pub(crate) message: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) identity: Option<Identity>,
}

impl Answer {
    pub(crate) fn failed(failure: SignInFailure) -> Answer {
        Answer {
            status: failure.status(),
            reason: Reason::SignInFailed(failure),
            message: String::from(failure.message()),
            headers: alloc::vec![no_store()],
            identity: None,
        }
    }
}

/// What the edge does with a request to one of the paths sign-in owns.
pub(crate) enum Owned {
    /// The provider's callback: check it, then exchange the code.
    Callback,
    /// Sign out (the logout path, or Gogs' own sign-out form).
    SignOut,
    /// Gogs' sign-in page: sign in with the provider instead, returning where Gogs would.
    SignIn { return_to: String },
}

/// What a session cookie on a web request came to.
pub(crate) enum Session {
    None,
    Valid(Identity),
    Expired,
    Invalid,
}

impl Sso {
    /// Whether `facts` is a request to a path sign-in owns, and which.
    pub(crate) fn owns(&self, facts: &RequestFacts<'_>) -> Option<Owned> {
        let method = facts.method;
        let reads = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        let path = facts.path;
        if reads && path == self.callback_path {
            return Some(Owned::Callback);
        }
        let posts = method.eq_ignore_ascii_case("POST");
        if ((reads || posts) && path == self.logout_path) || (posts && path == GOGS_SIGN_OUT_PATH) {
            return Some(Owned::SignOut);
        }
        if reads && path == GOGS_SIGN_IN_PATH {
            let return_to = query_values(facts.query, "redirect_to")
                .next()
                .filter(|to| local_path(to))
                .map_or_else(|| String::from("/"), Cow::into_owned);
            return Some(Owned::SignIn { return_to });
        }
        None
    }

    /// The session the request's cookie holds, if any. Only a value the edge signed, not
    /// expired, is a session; any other value under the cookie's name is reported so the
    /// request is never taken for anonymous.
    pub(crate) fn session(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
    ) -> Session {
        let mut values = cookie_values(facts, &self.cookie);
        let Some(value) = values.next() else {
            return Session::None;
        };
        if values.next().is_some() {
            // Two cookies of our name (another path or domain set one): ambiguous.
            return Session::Invalid;
        }
        let Some(key) = secrets.secret(&self.session_key) else {
            return Session::Invalid;
        };
        match ticket::open(
            Kind::Session,
            value,
            key.as_bytes(),
            now,
            |t: &SessionTicket| t.exp,
        ) {
            Ok(session) => Session::Valid(Identity {
                user: session.user,
                groups: session.groups,
                via: Via::Session {
                    issuer: session.issuer,
                    binding: session.binding,
                    claims: session.claims,
                },
            }),
            // A login under way is no session; the browser signs in (again) as if it had none.
            Err(Unreadable::Invalid) if is_login(value) => Session::None,
            Err(Unreadable::Expired) => Session::Expired,
            Err(Unreadable::Invalid) => Session::Invalid,
        }
    }

    /// Sends the browser to the provider, to come back to `return_to`: a 302 to the
    /// authorization endpoint with a fresh state, nonce and PKCE challenge, which the
    /// login cookie keeps.
    pub(crate) fn sign_in(
        &self,
        facts: &RequestFacts<'_>,
        return_to: &str,
        now: UnixTime,
        secrets: &dyn SecretStore,
        reason: Reason,
        message: String,
    ) -> Answer {
        let Some(entropy) = facts.entropy else {
            return Answer::failed(SignInFailure::Unavailable);
        };
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut hash = Sha256::new();
            hash.update(label);
            hash.update(entropy);
            hash.finalize().into()
        };
        let short =
            |bytes: [u8; 32]| Base64UrlUnpadded::encode_string(bytes.get(..16).unwrap_or(&bytes));
        let login = LoginTicket {
            state: short(derive(b"tollgate sso state")),
            nonce: short(derive(b"tollgate sso nonce")),
            verifier: Base64UrlUnpadded::encode_string(&derive(b"tollgate sso verifier")),
            to: String::from(if local_path(return_to) {
                return_to
            } else {
                "/"
            }),
            exp: now.as_secs().saturating_add(LOGIN_SECONDS),
        };
        let Some(cookie) = self.seal(Kind::Login, &login, secrets) else {
            return Answer::failed(SignInFailure::Unavailable);
        };
        let challenge =
            Base64UrlUnpadded::encode_string(&Sha256::digest(login.verifier.as_bytes()));
        let location = with_query(
            &self.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", &self.client_id),
                ("redirect_uri", &self.redirect_uri),
                ("scope", &self.scope),
                ("state", &login.state),
                ("nonce", &login.nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        );
        Answer {
            status: 302,
            reason,
            message,
            headers: alloc::vec![
                Header::new("location", location),
                self.set_cookie(&cookie, LOGIN_SECONDS),
                no_store(),
            ],
            identity: None,
        }
    }

    /// Checks the provider's callback against the login cookie; the token request to make
    /// when it holds.
    pub(crate) fn callback(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
    ) -> Result<TokenExchange, SignInFailure> {
        let (login, code) = self.checked_callback(facts, now, secrets)?;
        let mut headers = alloc::vec![
            Header::new(
                "content-type",
                String::from("application/x-www-form-urlencoded")
            ),
            Header::new("accept", String::from("application/json")),
        ];
        let mut form = alloc::vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", login.verifier.as_str()),
        ];
        match &self.client_secret {
            // client_secret_basic (RFC 6749 §2.3.1): both parts form-encoded first.
            Some(name) => {
                let secret = secrets.secret(name).ok_or(SignInFailure::Unavailable)?;
                let pair = format!("{}:{}", form_encode(&self.client_id), form_encode(&secret));
                headers.push(Header::secret(
                    "authorization",
                    format!("Basic {}", Base64::encode_string(pair.as_bytes())),
                    format!("Basic base64({}:<secret {name}>)", self.client_id),
                ));
            }
            None => form.push(("client_id", self.client_id.as_str())),
        }
        Ok(TokenExchange {
            url: self.token_endpoint.clone(),
            headers,
            body: form_body(&form),
        })
    }

    /// The provider's answer to the token request made for `facts`' callback: the ID token
    /// verified into a session cookie and a 302 back where the sign-in began, or why not.
    /// `verify` checks an ID token by the issuer's rules for the given nonce.
    pub(crate) fn complete(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
        verify: impl FnOnce(&str, &str) -> Result<Identity, TokenRejection>,
    ) -> Answer {
        let login = match self.checked_callback(facts, now, secrets) {
            Ok((login, _)) => login,
            Err(failure) => return Answer::failed(failure),
        };
        let Some(id_token) = id_token_of(response) else {
            return Answer::failed(SignInFailure::ExchangeFailed);
        };
        let identity = match verify(&id_token, &login.nonce) {
            Ok(identity) => identity,
            Err(TokenRejection::WrongNonce) => return Answer::failed(SignInFailure::NonceMismatch),
            Err(rejection) => {
                return Answer {
                    status: 401,
                    reason: Reason::InvalidCredential(rejection),
                    message: format!("the ID token was refused: {}", rejection.message()),
                    headers: alloc::vec![no_store()],
                    identity: None,
                }
            }
        };
        let Via::Jwt {
            issuer,
            binding,
            claims,
            ..
        } = &identity.via
        else {
            return Answer::failed(SignInFailure::ExchangeFailed);
        };
        let session = SessionTicket {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            issuer: issuer.clone(),
            binding: binding.clone(),
            claims: claims.clone(),
            exp: now.as_secs().saturating_add(self.lifetime_secs),
        };
        let Some(cookie) = self.seal(Kind::Session, &session, secrets) else {
            return Answer::failed(SignInFailure::Unavailable);
        };
        if cookie.len() > MAX_COOKIE_VALUE_BYTES {
            return Answer::failed(SignInFailure::SessionTooLarge);
        }
        Answer {
            status: 302,
            reason: Reason::SignedIn,
            message: format!("{} signed in", identity.user),
            headers: alloc::vec![
                Header::new("location", login.to),
                self.set_cookie(&cookie, self.lifetime_secs),
                no_store(),
            ],
            identity: Some(identity),
        }
    }

    /// Ends the browser's session: the cookie cleared, the browser sent to the provider's
    /// end-session endpoint or the page after sign-out.
    pub(crate) fn sign_out(&self) -> Answer {
        let location = match (&self.end_session_endpoint, &self.post_logout_redirect_uri) {
            (Some(end), Some(after)) => with_query(
                end,
                &[
                    ("client_id", &self.client_id),
                    ("post_logout_redirect_uri", after),
                ],
            ),
            (Some(end), None) => with_query(end, &[("client_id", &self.client_id)]),
            (None, Some(after)) => after.clone(),
            (None, None) => String::from("/"),
        };
        Answer {
            status: 302,
            reason: Reason::SignedOut,
            message: String::from("signed out"),
            headers: alloc::vec![
                Header::new("location", location),
                self.set_cookie("", 0),
                no_store(),
            ],
            identity: None,
        }
    }

    /// The login the callback belongs to, and its code.
    fn checked_callback(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
    ) -> Result<(LoginTicket, String), SignInFailure> {
        let mut values = cookie_values(facts, &self.cookie);
        let value = values.next().ok_or(SignInFailure::NotStarted)?;
        if values.next().is_some() {
            return Err(SignInFailure::BadLoginCookie);
        }
        let key = secrets
            .secret(&self.session_key)
            .filter(|k| k.len() >= MIN_KEY_BYTES)
            .ok_or(SignInFailure::Unavailable)?;
        let login = ticket::open(
            Kind::Login,
            value,
            key.as_bytes(),
            now,
            |t: &LoginTicket| t.exp,
        )
        .map_err(|e| match e {
            Unreadable::Expired => SignInFailure::LoginExpired,
            Unreadable::Invalid if is_login(value) => SignInFailure::BadLoginCookie,
            // A session cookie, or none of ours: no sign-in under way here.
            Unreadable::Invalid => SignInFailure::NotStarted,
        })?;
        let one = |name: &str| {
            let mut values = query_values(facts.query, name);
            match (values.next(), values.next()) {
                (Some(value), None) => Some(value.into_owned()),
                _ => None,
            }
        };
        // The state is checked before anything else the callback says, so that a forged
        // callback learns nothing (not even that the provider's error was read).
        let state = one("state").ok_or(SignInFailure::StateMismatch)?;
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(state.as_bytes(), login.state.as_bytes()).into();
        if !matches {
            return Err(SignInFailure::StateMismatch);
        }
        if one("error").is_some() {
            return Err(SignInFailure::ProviderRefused);
        }
        let code = one("code")
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(SignInFailure::ProviderRefused)?;
        Ok((login, code))
    }

    fn seal<T: Serialize>(
        &self,
        kind: Kind,
        ticket: &T,
        secrets: &dyn SecretStore,
    ) -> Option<String> {
        let key = secrets.secret(&self.session_key)?;
        ticket::seal(kind, ticket, key.as_bytes())
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> Header {
        Header::new(
            "set-cookie",
            format!(
                "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax",
                self.cookie
            ),
        )
    }
}

fn no_store() -> Header {
    Header::new("cache-control", String::from("no-store"))
}

fn is_login(value: &str) -> bool {
    value.starts_with("l1.")
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'a>(
    facts: &RequestFacts<'a>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let headers = facts.headers;
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| v.trim())
        })
}

/// A path on this gateway to send a browser back to: never another host (`//host`,
/// `/\host`) and nothing a header cannot carry.
pub(crate) fn local_path(to: &str) -> bool {
    to.starts_with('/')
        && !to.starts_with("//")
        && !to.starts_with("/\\")
        && to.len() <= MAX_RETURN_BYTES
        && to.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Characters `application/x-www-form-urlencoded` leaves as they are.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn form_encode(value: &str) -> String {
    utf8_percent_encode(value, FORM).collect()
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{}", form_body(pairs))
}

/// The `id_token` of a successful token response.
fn id_token_of(response: TokenResponse<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        id_token: String,
    }
    match response {
        TokenResponse::Answered { status: 200, body } => serde_json::from_slice::<Tokens>(body)
            .ok()
            .map(|t| t.id_token),
        _ => None,
    }
}
