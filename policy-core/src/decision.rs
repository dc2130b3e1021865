use alloc::{format, string::String, vec::Vec};
use core::fmt;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::access::Access;
use crate::identity::Identity;
use crate::jwt::TokenRejection;
use crate::rate::PendingRate;
use crate::route::{RepoName, RouteClass};
use crate::sso::{SignInFailure, TokenExchange};

/// What [`crate::Engine::decide`] returns: a final decision, or an allow that still has to
/// pass rate limits whose state only the host can load.
#[derive(Clone, Debug)]
pub enum Verdict {
    Decided(Decision),
    Pending(PendingRate),
    /// A browser's sign-in callback, checked: the host sends the token request and hands
    /// the answer to [`crate::Engine::complete_sign_in`] (`[sso]`).
    Exchange(TokenExchange),
}

impl Verdict {
    /// Did the decision want keys the engine lacks (see [`Decision::wants_fresh_keys`])?
    pub fn wants_fresh_keys(&self) -> bool {
        matches!(self, Verdict::Decided(d) if d.wants_fresh_keys())
    }

    /// The final decision, resolving pending rate limits in `store`. A token exchange is
    /// resolved as one that got no answer (hosts that can send it use
    /// [`crate::Engine::complete_sign_in`] instead).
    pub fn resolve_in(self, store: &dyn crate::RateStore) -> Decision {
        match self {
            Verdict::Decided(decision) => decision,
            Verdict::Pending(pending) => pending.resolve_in(store),
            Verdict::Exchange(_) => Decision::exchange_unsent(),
        }
    }

    /// The final decision, resolving pending rate limits against a synchronous state
    /// accessor: `state(key, None)` loads, `state(key, Some(new))` stores. For hosts whose
    /// state is local (tests, `tollgate eval`); concurrent hosts resolve themselves.
    pub fn resolve_with(
        self,
        state: &mut dyn FnMut(&str, Option<crate::RateState>) -> Option<crate::RateState>,
    ) -> Decision {
        match self {
            Verdict::Decided(decision) => decision,
            Verdict::Exchange(_) => Decision::exchange_unsent(),
            Verdict::Pending(pending) => {
                let priors: Vec<_> = pending
                    .checks()
                    .iter()
                    .map(|c| state(c.key(), None))
                    .collect();
                let (decision, updates) = pending.resolve(&priors);
                for update in updates {
                    state(&update.key, Some(update.state));
                }
                decision
            }
        }
    }
}

/// Why a decision came out the way it did. [`Reason::code`] is stable: audit pipelines and
/// `tollgate eval` consumers match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The request may go to the origin.
    Allowed,
    /// The path or query could make edge and origin disagree about the target.
    BadPath,
    /// A credential in the query string.
    CredentialInQuery,
    /// An Authorization header that cannot be read unambiguously.
    BadCredentials,
    /// No credential, and anonymous callers may not do this.
    MissingCredential,
    /// A credential that failed verification.
    InvalidCredential(TokenRejection),
    /// Authenticated, but no grant gives enough access.
    InsufficientAccess,
    /// Authenticated, but a deny rule takes the access away.
    DeniedByRule,
    /// The identity may not even read the repository, so it is reported missing, as Gogs does.
    NotFound,
    /// A non-repository page or API call that the gateway settings close.
    SiteClosed,
    /// A page or API call listing across repositories, closed by `gateway.cross_repo`.
    CrossRepoClosed,
    /// A route naming its repository by id or uuid, closed by `gateway.by_id`.
    ByIdClosed,
    /// Gogs' diagnostics or installer, closed by `gateway.operator`.
    OperatorClosed,
    /// No route of the Gogs versions followed takes the request; Gogs would answer 404.
    NoRoute,
    /// Over the rate limit.
    RateLimited,
    /// The rate limit's state could not be read or written.
    RateStoreUnavailable,
    /// The origin credential for this identity is not configured on the host.
    OriginCredentialMissing,
    /// The policy module trapped, ran out of its time budget or answered malformed bytes;
    /// the host refuses rather than guess.
    PolicyModuleFailed,
    /// Not forwarded: the gateway answers it itself with a document the policy publishes
    /// (`[login]` at `/.well-known/tollgate-login`), status 200, the document as the
    /// message.
    Published,
    /// A browser without a session sent to the identity provider to sign in (`[sso]`):
    /// a 302 whose `location` is the provider's authorization endpoint.
    SignInRequired,
    /// A browser whose session cookie has ended: sent to sign in again (302) for a page,
    /// refused (401) otherwise.
    SessionExpired,
    /// A session cookie the edge did not sign (tampered, or another key's): sent to sign
    /// in again (302) for a page, refused (401) otherwise. Never taken for anonymous.
    SessionInvalid,
    /// The provider's callback checked and the ID token verified: a 302 back to the page
    /// the sign-in began at, with the session cookie.
    SignedIn,
    /// The session cookie cleared (the logout path, or Gogs' sign-out form).
    SignedOut,
    /// A sign-in that could not complete, and why.
    SignInFailed(SignInFailure),
}

impl Reason {
    /// Every reason but the per-rejection and per-failure ones (see [`TokenRejection::ALL`]
    /// and [`SignInFailure::ALL`]).
    const PLAIN: [Reason; 23] = [
        Reason::Allowed,
        Reason::BadPath,
        Reason::CredentialInQuery,
        Reason::BadCredentials,
        Reason::MissingCredential,
        Reason::InsufficientAccess,
        Reason::DeniedByRule,
        Reason::NotFound,
        Reason::SiteClosed,
        Reason::CrossRepoClosed,
        Reason::ByIdClosed,
        Reason::OperatorClosed,
        Reason::NoRoute,
        Reason::RateLimited,
        Reason::RateStoreUnavailable,
        Reason::OriginCredentialMissing,
        Reason::PolicyModuleFailed,
        Reason::Published,
        Reason::SignInRequired,
        Reason::SessionExpired,
        Reason::SessionInvalid,
        Reason::SignedIn,
        Reason::SignedOut,
    ];

    /// How many reasons there are: [`Reason::index`] is below it.
    pub const COUNT: usize =
        Self::PLAIN.len() + TokenRejection::ALL.len() + SignInFailure::ALL.len();

    /// Every reason, in [`Reason::index`] order.
    pub fn all() -> impl Iterator<Item = Reason> {
        Self::PLAIN
            .into_iter()
            .chain(TokenRejection::ALL.map(Reason::InvalidCredential))
            .chain(SignInFailure::ALL.map(Reason::SignInFailed))
    }

    /// The reason's position in [`Reason::all`], for hosts that count by reason in a
    /// fixed table (lock-free metrics).
    pub fn index(self) -> usize {
        Self::all().position(|r| r == self).unwrap_or(0)
    }

    /// The reason whose [`Reason::code`] is `code`.
    pub fn from_code(code: &str) -> Option<Reason> {
        Self::all().find(|r| r.code() == code)
    }

    pub const fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::BadPath => "bad_path",
            Reason::CredentialInQuery => "credential_in_query",
            Reason::BadCredentials => "bad_credentials",
            Reason::MissingCredential => "missing_credential",
            Reason::InvalidCredential(rejection) => rejection.code(),
            Reason::InsufficientAccess => "insufficient_access",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::NotFound => "not_found",
            Reason::SiteClosed => "site_closed",
            Reason::CrossRepoClosed => "cross_repo_closed",
            Reason::ByIdClosed => "by_id_closed",
            Reason::OperatorClosed => "operator_closed",
            Reason::NoRoute => "no_route",
            Reason::RateLimited => "rate_limited",
            Reason::RateStoreUnavailable => "rate_store_unavailable",
            Reason::OriginCredentialMissing => "origin_credential_missing",
            Reason::PolicyModuleFailed => "policy_module_error",
            Reason::Published => "published",
            Reason::SignInRequired => "sign_in_required",
            Reason::SessionExpired => "session_expired",
            Reason::SessionInvalid => "session_invalid",
            Reason::SignedIn => "signed_in",
            Reason::SignedOut => "signed_out",
            Reason::SignInFailed(failure) => failure.code(),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A header to set on the origin request or on a denial. Values built from secrets carry
/// a redacted form, which is all that `Debug`, JSON output and audit records ever show.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) redacted: Option<String>,
}

impl Header {
    pub(crate) fn new(name: &str, value: String) -> Self {
        Header {
            name: String::from(name),
            value,
            redacted: None,
        }
    }

    pub(crate) fn secret(name: &str, value: String, redacted: String) -> Self {
        Header {
            name: String::from(name),
            value,
            redacted: Some(redacted),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value to send. May contain an origin secret: never log it.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The value as it may be shown: secrets replaced by a description of which secret.
    pub fn display_value(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.value)
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.display_value())
    }
}

fn headers_as_map<S: Serializer>(headers: &[Header], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(headers.len()))?;
    for h in headers {
        map.serialize_entry(h.name(), h.display_value())?;
    }
    map.end()
}

/// One line of a decision's explanation: which rule was looked at and what came of it.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExplainStep {
    pub rule: String,
    pub outcome: String,
}

impl ExplainStep {
    pub(crate) fn new(rule: impl Into<String>, outcome: impl Into<String>) -> Self {
        ExplainStep {
            rule: rule.into(),
            outcome: outcome.into(),
        }
    }
}

/// Where the engine records the steps behind a decision. Formatting them costs more than
/// the authorization step itself, so unless the caller asked, nothing is formatted.
#[derive(Debug, Default)]
pub(crate) struct Explain(Option<Vec<ExplainStep>>);

impl Explain {
    pub(crate) fn new(record: bool) -> Self {
        Explain(record.then(Vec::new))
    }

    pub(crate) fn records(&self) -> bool {
        self.0.is_some()
    }

    /// Records the step `make` builds, if recording; `make` is not called otherwise.
    pub(crate) fn step(&mut self, make: impl FnOnce() -> ExplainStep) {
        if let Some(steps) = &mut self.0 {
            steps.push(make());
        }
    }

    pub(crate) fn into_steps(self) -> Vec<ExplainStep> {
        self.0.unwrap_or_default()
    }
}

/// The decision a request would have had with the policy's shadow rules enforced, carried
/// on the real decision when the two differ (in `allow`, `status` or `reason`).
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shadow {
    pub allow: bool,
    pub status: u16,
    pub reason: Reason,
    /// The rule that would have decided (`grant:NAME`, `rate_limit:NAME`, ...).
    pub rule: Option<String>,
}

impl Shadow {
    /// `would_be` as a shadow of `actual`: `None` when it decides the same.
    pub(crate) fn of(actual: &Decision, would_be: &Decision) -> Option<Shadow> {
        let same = actual.allow == would_be.allow
            && actual.status == would_be.status
            && actual.reason == would_be.reason;
        (!same).then(|| Shadow {
            allow: would_be.allow,
            status: would_be.status,
            reason: would_be.reason,
            rule: would_be.rule.clone(),
        })
    }
}

/// The engine's answer for one request. Serialized, this is `tollgate eval`'s output (see
/// the README for the schema), identical on every host.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub allow: bool,
    pub status: u16,
    pub reason: Reason,
    /// A sentence for the client and the logs; never contains a secret.
    pub message: String,
    /// The rule that decided (`grant:NAME`, `rate_limit:NAME`, `gateway.site_web`, ...).
    pub rule: Option<String>,
    pub identity: Option<Identity>,
    pub class: Option<RouteClass>,
    /// `owner/name`, lowercase.
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub repo: Option<RepoName>,
    pub access: Option<Access>,
    /// Request headers (lowercase names) the host must remove before forwarding.
    pub strip: Vec<String>,
    /// Headers the host must set on the origin request.
    #[serde(serialize_with = "headers_as_map")]
    #[cfg_attr(feature = "ts", ts(type = "Record<string, string>"))]
    pub set: Vec<Header>,
    /// Headers for the host's own response when the request is denied (challenges,
    /// `Retry-After`).
    #[serde(serialize_with = "headers_as_map")]
    #[cfg_attr(feature = "ts", ts(type = "Record<string, string>"))]
    pub headers: Vec<Header>,
    /// Seconds until a rate-limited request may be retried.
    #[cfg_attr(feature = "ts", ts(type = "number | null"))]
    pub retry_after: Option<u64>,
    /// The revision of the policy that decided ([`crate::Engine::revision`]); none (null
    /// in JSON) when no policy did (the module failed).
    pub policy_revision: Option<String>,
    /// What the policy's shadow rules (`mode = "shadow"`) would have decided instead, when
    /// that differs; shadow rules never change the decision itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub shadow: Option<Shadow>,
    /// The steps behind the decision; empty unless it came from
    /// [`crate::Engine::decide_explained`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<ExplainStep>>", optional))]
    pub explain: Vec<ExplainStep>,
}

impl Decision {
    /// The refusal when the policy module failed (500, `policy_module_error`). What went
    /// wrong belongs in the host's log, not in the answer.
    pub fn policy_module_failed() -> Decision {
        Decision::refusal(500, Reason::PolicyModuleFailed, "policy evaluation failed")
    }

    /// A sign-in whose token request a host could not send: the refusal a failed exchange
    /// gets, without the policy's revision (no policy completed it).
    pub(crate) fn exchange_unsent() -> Decision {
        let failure = SignInFailure::ExchangeFailed;
        Decision::refusal(
            failure.status(),
            Reason::SignInFailed(failure),
            "the token request was not sent",
        )
    }

    fn refusal(status: u16, reason: Reason, message: &str) -> Decision {
        Decision {
            allow: false,
            status,
            reason,
            message: String::from(message),
            rule: None,
            identity: None,
            class: None,
            repo: None,
            access: None,
            strip: Vec::new(),
            set: Vec::new(),
            headers: Vec::new(),
            retry_after: None,
            policy_revision: None,
            shadow: None,
            explain: Vec::new(),
        }
    }

    /// The body a host answers a denial with, and its content type, so that every platform
    /// sends the same bytes: JSON for LFS and the API, plain text for git and the web.
    pub fn denial_body(&self) -> (&'static str, String) {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        let json = || {
            serde_json::to_string(&Message {
                message: &self.message,
            })
            .unwrap_or_default()
        };
        if self.reason == Reason::Published {
            return ("application/json", format!("{}\n", self.message));
        }
        match self.class {
            Some(RouteClass::Lfs) => ("application/vnd.git-lfs+json", json()),
            Some(RouteClass::Api) => ("application/json", json()),
            _ => ("text/plain; charset=utf-8", format!("{}\n", self.message)),
        }
    }

    /// Did the token name a key the engine does not have (an unknown `kid`, or no keys
    /// for its issuer)? Hosts then fetch keys early ([`crate::JwksSchedule::after_key_miss`])
    /// and decide once more.
    pub fn wants_fresh_keys(&self) -> bool {
        matches!(
            self.reason,
            Reason::InvalidCredential(TokenRejection::UnknownKey | TokenRejection::NoKeys)
        )
    }

    /// The decision as one line of JSON (what `tollgate eval` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
