use alloc::{boxed::Box, format, string::String, vec::Vec};
use serde::Deserialize;

use crate::access::Access;
use crate::apikey::{self, ApiKey};
use crate::client_key;
use crate::credential::{self, CredentialError, Presented};
use crate::decision::{Decision, Explain, ExplainStep, Header, Reason, Shadow, Verdict};
use crate::identity::Identity;
use crate::jwt::{self, Issuer, TokenRejection};
use crate::keys::KeyStore;
use crate::origin::{OriginConfig, SecretStore};
use crate::rate::{Gcra, PendingRate, RateCheck};
use crate::request::RequestFacts;
use crate::route::{self, RepoName, RepoNeed, Route, RouteClass, RouteError, SiteKind};
use crate::scope::{self, any_matches, Grant, Principal};
use crate::sso::{self, Owned, Session, Sso, TokenResponse};
use crate::time::UnixTime;
use crate::token_cache::{NoTokenCache, TokenCacheStore};
use sha2::{Digest, Sha256};

/// Who may reach pages and API calls that are not inside one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SiteAccess {
    Anonymous,
    Authenticated,
    Deny,
}

/// Whether a kind of route the edge cannot scope to a repository is closed, or decided
/// like any other page outside a repository (`site_web`, `site_api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SiteSwitch {
    Deny,
    Site,
}

#[derive(Clone, Debug)]
pub(crate) struct Gateway {
    pub(crate) realm: String,
    pub(crate) max_token_bytes: usize,
    pub(crate) hide_forbidden_repos: bool,
    pub(crate) site_web: SiteAccess,
    pub(crate) site_api: SiteAccess,
    /// Lists and searches across repositories, which Gogs filters by its own permissions.
    pub(crate) cross_repo: SiteSwitch,
    /// Routes reaching a repository by id, uuid or form field.
    pub(crate) by_id: SiteSwitch,
    /// Gogs' diagnostics (pprof, metrics) and installer.
    pub(crate) operator: SiteSwitch,
    /// IPv6 prefix length anonymous callers share a rate-limit key by.
    pub(crate) anonymous_ipv6_prefix: u8,
}

#[derive(Clone, Debug)]
pub(crate) struct RateLimit {
    pub(crate) name: String,
    pub(crate) who: Vec<Principal>,
    /// The surfaces it counts (`class`); empty: all.
    pub(crate) classes: Vec<RouteClass>,
    /// The access levels it counts (`access`); empty: every request.
    pub(crate) access: Vec<Access>,
    pub(crate) gcra: Gcra,
    pub(crate) per: RatePer,
    /// `mode = "shadow"`: counted, and reported when it would refuse, but never refuses.
    pub(crate) shadow: bool,
}

/// What one budget of a rate limit belongs to (`per`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RatePer {
    /// Each caller has its own (anonymous callers by address).
    Identity,
    /// Each caller has one per repository; requests naming no repository share the
    /// caller's budget.
    IdentityAndRepo,
    /// One budget for everyone the limit applies to.
    Shared,
}

impl RateLimit {
    fn applies(&self, decision: &Decision) -> bool {
        any_matches(&self.who, decision.identity.as_ref())
            && (self.classes.is_empty()
                || decision.class.is_some_and(|c| self.classes.contains(&c)))
            && (self.access.is_empty() || decision.access.is_some_and(|a| self.access.contains(&a)))
    }

    fn key(&self, subject: &str, repo: Option<&RepoName>) -> String {
        match (self.per, repo) {
            (RatePer::Shared, _) => self.name.clone(),
            (RatePer::IdentityAndRepo, Some(repo)) => format!("{}/{subject}/{repo}", self.name),
            (RatePer::Identity | RatePer::IdentityAndRepo, _) => {
                format!("{}/{subject}", self.name)
            }
        }
    }
}

/// A validated, compiled policy. Build one with [`crate::policy::compile`] (or
/// [`Engine::from_toml`]) and ask it with [`Engine::decide`]; it is immutable and cheap to
/// share between requests.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) gateway: Gateway,
    pub(crate) origin: OriginConfig,
    pub(crate) issuers: Vec<Issuer>,
    pub(crate) api_keys: Vec<ApiKey>,
    /// The grants that decide (`mode = "enforce"`, the default).
    pub(crate) grants: Vec<Grant>,
    /// Every grant in policy order, shadow ones included, when there are shadow grants:
    /// what the policy would decide with them enforced.
    pub(crate) shadow_grants: Option<Vec<Grant>>,
    pub(crate) rate_limits: Vec<RateLimit>,
    /// Gogs webhooks received at the edge (`[[webhook]]`).
    pub(crate) webhooks: Vec<crate::webhook::Webhook>,
    /// `[login]` as the JSON document published at [`LOGIN_METADATA_PATH`].
    pub(crate) login: Option<String>,
    /// Browser single sign-on (`[sso]`).
    pub(crate) sso: Option<Box<Sso>>,
    /// The Gogs versions whose routes requests are classified against (`origin.gogs`).
    pub(crate) gogs: Vec<&'static route::Version>,
    /// Where RS256, PS256 and ES256 signatures are verified.
    pub(crate) crypto: &'static dyn crate::CryptoProvider,
    /// Which policy text this is (see [`Engine::revision`]).
    pub(crate) revision: String,
}

/// Partial decision state threaded through the steps of [`Engine::decide`].
struct Draft {
    class: Option<RouteClass>,
    repo: Option<RepoName>,
    access: Option<Access>,
    identity: Option<Identity>,
    explain: Explain,
    policy_revision: String,
}

impl Draft {
    fn finish(
        self,
        allow: bool,
        status: u16,
        reason: Reason,
        message: String,
        rule: Option<String>,
    ) -> Decision {
        Decision {
            allow,
            status,
            reason,
            message,
            rule,
            identity: self.identity,
            class: self.class,
            repo: self.repo,
            access: self.access,
            strip: Vec::new(),
            set: Vec::new(),
            headers: Vec::new(),
            retry_after: None,
            explain: self.explain.into_steps(),
            policy_revision: Some(self.policy_revision),
            shadow: None,
        }
    }

    /// A copy to decide the same request again with shadow rules enforced; it explains
    /// nothing and names no revision (only its outcome is used).
    fn for_shadow(&self) -> Draft {
        Draft {
            class: self.class,
            repo: self.repo.clone(),
            access: self.access,
            identity: self.identity.clone(),
            explain: Explain::new(false),
            policy_revision: String::new(),
        }
    }
}

/// Where a gateway with `[login]` publishes what `tollgate login` needs (`issuer`,
/// `client_id`, `scope`, `resource`), answered by the gateway itself (reason `published`).
pub const LOGIN_METADATA_PATH: &str = "/.well-known/tollgate-login";

impl Engine {
    /// The document to answer `facts` with when it asks for the login settings.
    fn published(&self, facts: &RequestFacts<'_>) -> Option<&str> {
        // Every request passes here: a policy without `[login]` pays one branch.
        let login = self.login.as_deref()?;
        let reads =
            facts.method.eq_ignore_ascii_case("GET") || facts.method.eq_ignore_ascii_case("HEAD");
        (reads && facts.path == LOGIN_METADATA_PATH).then_some(login)
    }

    /// Parses, validates and compiles a policy; `file` only labels error positions.
    pub fn from_toml(source: &str, file: &str) -> Result<Engine, crate::PolicyError> {
        crate::policy::Policy::parse(source, file).map(|p| p.engine)
    }

    /// The engine verifying RS256, PS256 and ES256 signatures with `provider` instead of
    /// [`crate::RustCrypto`]. Decisions are the same; only their cost changes.
    pub fn with_crypto(mut self, provider: &'static dyn crate::CryptoProvider) -> Engine {
        self.crypto = provider;
        self
    }

    /// Issuers whose keys the host must fetch: `(issuer name, JWKS URL)`.
    pub fn jwks_urls(&self) -> impl Iterator<Item = (&str, &str)> {
        self.issuers
            .iter()
            .filter_map(|i| i.jwks_url.as_deref().map(|url| (i.name.as_str(), url)))
    }

    /// The header Gogs reads for reverse-proxy authentication (`origin.user_header`,
    /// lowercase). Every forward strips the client's copy, so a host that can only name
    /// headers ahead of time (API Management) checks it once, at load.
    pub fn user_header(&self) -> &str {
        &self.origin.user_header
    }

    /// The access `who` (`None`: anonymous) has on `repo` once every grant is weighed,
    /// denies included: the authorization step of [`Engine::decide`] on its own, for tools
    /// that ask "who may do what" and for measuring that step alone.
    pub fn access(&self, who: Option<&Identity>, repo: &RepoName) -> Option<Access> {
        scope::evaluate(&self.grants, who, repo, &mut Explain::new(false)).effective
    }

    /// Decides one request. Pure: the same arguments always give the same verdict.
    pub fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
    ) -> Verdict {
        self.decide_cached(facts, now, keys, secrets, &NoTokenCache)
    }

    /// [`Engine::decide`], looking tokens up in `tokens` first and recording the ones it
    /// verifies, so a repeated token skips its signature check. The cache must be used
    /// with this engine only. Same verdicts as `decide`.
    pub fn decide_cached(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        tokens: &dyn TokenCacheStore,
    ) -> Verdict {
        self.decide_recording(facts, now, keys, secrets, tokens, Explain::new(false))
    }

    /// The denial a request gets whatever its body says, decided before the host reads
    /// the body: for a request whose body counts ([`RequestFacts::wants_body`]), the
    /// decision as if the body asked for the least access its route allows (an LFS batch
    /// that only downloads). `Some` means no body could make the request pass, so the host
    /// answers without reading or buffering it; `None` means read the body and decide.
    /// Nothing is stored: a pending rate limit is left unresolved.
    pub fn refusal_before_body(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        tokens: &dyn TokenCacheStore,
    ) -> Option<Decision> {
        match self.decide_cached(&facts.with_least_access_body(), now, keys, secrets, tokens) {
            Verdict::Decided(decision) if !decision.allow => Some(decision),
            _ => None,
        }
    }

    /// [`Engine::decide_cached`], also recording every step behind the decision in
    /// [`Decision::explain`] (`tollgate eval --explain`, `tollgate test`). Same verdicts;
    /// a token answered from `tokens` is explained as `(cached)`.
    pub fn decide_explained(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        tokens: &dyn TokenCacheStore,
    ) -> Verdict {
        self.decide_recording(facts, now, keys, secrets, tokens, Explain::new(true))
    }

    /// Does deciding need [`RequestFacts::entropy`]? Only a policy with `[sso]` signs
    /// browsers in; hosts draw 32 random bytes per request for it, and none otherwise.
    pub fn wants_entropy(&self) -> bool {
        self.sso.is_some()
    }

    /// Completes the browser sign-in `facts` (the provider's callback) began, with what
    /// came of the token request [`Verdict::Exchange`] described: a 302 back to the page
    /// with the session cookie, or the refusal. When the decision wants fresh keys (an ID
    /// token signed by a key not yet fetched), the host fetches them and completes again
    /// with the same response: the code cannot be exchanged twice.
    pub fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
    ) -> Decision {
        self.complete_recording(facts, response, now, keys, secrets, Explain::new(false))
    }

    /// [`Engine::complete_sign_in`], explaining its steps.
    pub fn complete_sign_in_explained(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
    ) -> Decision {
        self.complete_recording(facts, response, now, keys, secrets, Explain::new(true))
    }

    fn complete_recording(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        explain: Explain,
    ) -> Decision {
        let mut draft = self.draft(explain);
        let Some(sso) = self.sso.as_deref() else {
            return Decision::exchange_unsent();
        };
        let answer = sso.complete(facts, response, now, secrets, |id_token, nonce| {
            jwt::verify(
                id_token,
                core::slice::from_ref(&sso.issuer),
                keys,
                now,
                self.gateway.max_token_bytes,
                self.crypto,
                Some(nonce),
            )
            .map(|verified| verified.identity)
            .map_err(|refusal| refusal.rejection)
        });
        draft.explain.step(|| {
            ExplainStep::new(
                "sso",
                match &answer.identity {
                    Some(identity) => {
                        format!("ID token verified for `{}`: session started", identity.user)
                    }
                    None => format!("sign-in refused: {}", answer.message),
                },
            )
        });
        draft.identity = answer.identity.clone();
        self.answer(draft, answer)
    }

    fn draft(&self, explain: Explain) -> Draft {
        Draft {
            class: None,
            repo: None,
            access: None,
            identity: None,
            explain,
            policy_revision: self.revision.clone(),
        }
    }

    /// A decision the edge answers itself for `[sso]`.
    fn answer(&self, draft: Draft, answer: sso::Answer) -> Decision {
        let mut decision = draft.finish(
            false,
            answer.status,
            answer.reason,
            answer.message,
            Some(String::from("sso")),
        );
        decision.headers = answer.headers;
        decision
    }

    /// A web page refused to an anonymous browser, or to one whose session is not valid,
    /// becomes a sign-in at the identity provider that returns to the page. Everything
    /// else (git, LFS, the API, other methods) keeps its refusal and challenge.
    fn sign_in_instead(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
        denial: Decision,
    ) -> Decision {
        let Some(sso) = self.sso.as_deref() else {
            return denial;
        };
        let page = denial.status == 401
            && denial.class == Some(RouteClass::Web)
            && (facts.method.eq_ignore_ascii_case("GET")
                || facts.method.eq_ignore_ascii_case("HEAD"));
        let reason = match denial.reason {
            Reason::MissingCredential if page => Reason::SignInRequired,
            Reason::SessionExpired | Reason::SessionInvalid if page => denial.reason,
            _ => return denial,
        };
        let return_to = if facts.query.is_empty() {
            String::from(facts.path)
        } else {
            format!("{}?{}", facts.path, facts.query)
        };
        let message = match reason {
            Reason::SessionExpired => "the session has ended: sign in again",
            Reason::SessionInvalid => "the session cookie is not valid: sign in again",
            _ => "sign in at the identity provider",
        };
        let answer = sso.sign_in(
            facts,
            &return_to,
            now,
            secrets,
            reason,
            String::from(message),
        );
        let mut explain = Explain::new(!denial.explain.is_empty());
        for step in denial.explain {
            explain.step(|| step);
        }
        explain.step(|| ExplainStep::new("sso", answer.message.clone()));
        let draft = Draft {
            class: denial.class,
            repo: denial.repo,
            access: denial.access,
            identity: None,
            explain,
            policy_revision: self.revision.clone(),
        };
        let mut decision = self.answer(draft, answer);
        decision.shadow = denial.shadow;
        decision
    }

    /// The policy's revision, `sha256:` and 16 hex digits of the policy text's SHA-256;
    /// every decision carries it ([`Decision::policy_revision`]).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    fn decide_recording(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        tokens: &dyn TokenCacheStore,
        explain: Explain,
    ) -> Verdict {
        let mut draft = self.draft(explain);

        if let Some(published) = self.published(facts) {
            draft
                .explain
                .step(|| ExplainStep::new("login", "the sign-in settings `tollgate login` reads"));
            return Verdict::Decided(draft.finish(
                false,
                200,
                Reason::Published,
                String::from(published),
                Some(String::from("login")),
            ));
        }
        if let Some(verdict) = self.sso_owned(facts, now, secrets, &mut draft) {
            return verdict;
        }
        let route = match route::classify(
            &self.gogs,
            facts.method,
            facts.path,
            facts.query,
            facts.body,
        ) {
            Ok(route) => route,
            Err(e) => {
                draft
                    .explain
                    .step(|| ExplainStep::new("route", e.message()));
                let (status, reason) = match e {
                    RouteError::NoRoute => (404, Reason::NoRoute),
                    _ => (400, Reason::BadPath),
                };
                return Verdict::Decided(draft.finish(
                    false,
                    status,
                    reason,
                    e.message().into(),
                    None,
                ));
            }
        };
        draft.class = Some(route.class);
        if let Some(RepoNeed { repo, access }) = &route.repo {
            draft.repo = Some(repo.clone());
            draft.access = Some(*access);
        }
        draft.explain.step(|| {
            let target = match &route.repo {
                Some(RepoNeed { repo, access }) => format!("on `{repo}` needs {access}"),
                None => String::from("outside any repository"),
            };
            ExplainStep::new(
                "route",
                format!(
                    "{} request {target} (Gogs route `{}`)",
                    route.class.as_str(),
                    route.pattern
                ),
            )
        });

        let identity = match self.authenticate(
            facts,
            route.class,
            now,
            keys,
            secrets,
            tokens,
            &mut draft.explain,
        ) {
            Ok(identity) => identity,
            Err(Unauthenticated {
                reason,
                message,
                rule,
            }) => {
                let status = if reason == Reason::CredentialInQuery {
                    400
                } else {
                    401
                };
                let mut decision = draft.finish(false, status, reason, String::from(message), rule);
                if status == 401 {
                    decision.headers = self.challenge(route.class, true);
                }
                return Verdict::Decided(self.sign_in_instead(facts, now, secrets, decision));
            }
        };
        draft.identity = identity;

        // What the shadow grants would decide, worked out before the real authorization
        // takes the draft apart.
        let shadow = self.shadow_grants.as_ref().map(|grants| {
            let mut shadow_draft = draft.for_shadow();
            self.authorize(&route, &mut shadow_draft, grants)
        });
        let rule = match self.authorize(&route, &mut draft, &self.grants) {
            Ok(rule) => rule,
            Err(mut denial) => {
                denial.shadow = match shadow {
                    Some(Ok(rule)) => Some(Shadow {
                        allow: true,
                        status: 200,
                        reason: Reason::Allowed,
                        rule,
                    }),
                    Some(Err(would_be)) => Shadow::of(&denial, &would_be),
                    None => None,
                };
                note_shadow(&mut denial);
                return Verdict::Decided(self.sign_in_instead(facts, now, secrets, *denial));
            }
        };
        let shadow_denial = match shadow {
            Some(Err(would_be)) => Some(would_be),
            _ => None,
        };

        let mut strip = self.origin.strip(route.class);
        let mut set = match self
            .origin
            .credential(route.class, draft.identity.as_ref(), secrets)
        {
            Ok(set) => set,
            Err(missing) => {
                let message = format!("origin credential `{}` is not configured", missing.0);
                draft
                    .explain
                    .step(|| ExplainStep::new("origin", message.clone()));
                let mut denial =
                    draft.finish(false, 500, Reason::OriginCredentialMissing, message, None);
                if let Some(would_be) = &shadow_denial {
                    denial.shadow = Shadow::of(&denial, would_be);
                    note_shadow(&mut denial);
                }
                return Verdict::Decided(denial);
            }
        };
        if route.class == RouteClass::Web {
            if let Some(cookies) = self.origin.web_cookies(facts.header_values("cookie")) {
                draft.explain.step(|| {
                    ExplainStep::new(
                        "origin",
                        format!(
                        "sign-in cookie `{}` removed: the origin must act as the verified caller",
                        cookies.removed.join("`, `")
                    ),
                    )
                });
                strip.push(String::from("cookie"));
                set.extend(cookies.header);
            }
        }
        let message = match &draft.identity {
            Some(id) => [id.user.as_str(), " allowed"].concat(),
            None => String::from("anonymous allowed"),
        };
        let explaining = draft.explain.records();
        let mut allowed = draft.finish(true, 200, Reason::Allowed, message, rule);
        allowed.strip = strip;
        allowed.set = set;
        if let Some(would_be) = &shadow_denial {
            allowed.shadow = Shadow::of(&allowed, would_be);
            note_shadow(&mut allowed);
        }

        let mut limits = self
            .rate_limits
            .iter()
            .filter(|l| l.applies(&allowed))
            .peekable();
        if limits.peek().is_none() {
            return Verdict::Decided(allowed);
        }
        let subject = match &allowed.identity {
            Some(id) => format!("user:{}", id.user),
            None => client_key::anonymous(facts.client_ip, self.gateway.anonymous_ipv6_prefix),
        };
        let checks = limits
            .map(|limit| RateCheck {
                key: limit.key(&subject, allowed.repo.as_ref()),
                limit_name: limit.name.clone(),
                gcra: limit.gcra,
                shadow: limit.shadow,
            })
            .collect();
        Verdict::Pending(PendingRate {
            checks,
            now,
            allowed,
            explain: explaining,
        })
    }

    /// Convenience for hosts without shared state (tests, one-shot `eval`): decides, and
    /// resolves a pending rate limit against `state` in place.
    pub fn decide_with_state(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        state: &mut dyn FnMut(&str, Option<crate::RateState>) -> Option<crate::RateState>,
    ) -> Decision {
        self.decide(facts, now, keys, secrets).resolve_with(state)
    }

    /// A request to a path `[sso]` owns (the callback, sign-out, Gogs' sign-in page),
    /// answered by the edge.
    fn sso_owned(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        secrets: &dyn SecretStore,
        draft: &mut Draft,
    ) -> Option<Verdict> {
        // Every request passes here: a policy without `[sso]` pays one branch.
        let sso = self.sso.as_deref()?;
        let answer = match sso.owns(facts)? {
            Owned::Callback => match sso.callback(facts, now, secrets) {
                Ok(exchange) => return Some(Verdict::Exchange(exchange)),
                Err(failure) => sso::Answer::failed(failure),
            },
            Owned::SignOut => sso.sign_out(),
            Owned::SignIn { return_to } => sso.sign_in(
                facts,
                &return_to,
                now,
                secrets,
                Reason::SignInRequired,
                String::from("sign in at the identity provider"),
            ),
        };
        draft
            .explain
            .step(|| ExplainStep::new("sso", answer.message.clone()));
        Some(Verdict::Decided(self.answer(draft_take(draft), answer)))
    }

    #[allow(clippy::too_many_arguments)]
    fn authenticate(
        &self,
        facts: &RequestFacts<'_>,
        class: RouteClass,
        now: UnixTime,
        keys: &dyn KeyStore,
        secrets: &dyn SecretStore,
        tokens: &dyn TokenCacheStore,
        explain: &mut Explain,
    ) -> Result<Option<Identity>, Unauthenticated> {
        let candidates = match credential::extract(facts) {
            Ok(Presented::Nothing) => {
                return self.session(facts, class, now, secrets, explain);
            }
            Ok(Presented::Candidates(c)) => c,
            Err(e) => {
                explain.step(|| ExplainStep::new("credential", e.message()));
                let reason = match e {
                    CredentialError::InQuery => Reason::CredentialInQuery,
                    _ => Reason::BadCredentials,
                };
                return Err(Unauthenticated::new(reason, e.message()));
            }
        };
        let mut rejection = TokenRejection::UnknownApiKey;
        for candidate in &candidates {
            if credential::looks_like_jwt(candidate) {
                // A JWT is unambiguous: its verdict is final, whichever Basic field held it.
                let digest: Option<[u8; 32]> = tokens
                    .keeps_tokens()
                    .then(|| Sha256::digest(candidate.as_bytes()).into());
                if let Some(identity) = digest.and_then(|d| tokens.lookup(&d, now)) {
                    explain.step(|| {
                        ExplainStep::new(
                            format!("issuer:{}", issuer_name(&identity)),
                            format!("token verified for `{}` (cached)", identity.user),
                        )
                    });
                    return Ok(Some(identity));
                }
                return match jwt::verify(
                    candidate,
                    &self.issuers,
                    keys,
                    now,
                    self.gateway.max_token_bytes,
                    self.crypto,
                    None,
                ) {
                    Ok(verified) => {
                        let identity = verified.identity;
                        // Tokens without `exp` are never cached: nothing bounds them.
                        if let (Some(digest), Some(until)) = (digest, verified.valid_until) {
                            tokens.remember(digest, &identity, verified.valid_from, until, now);
                        }
                        explain.step(|| {
                            ExplainStep::new(
                                format!("issuer:{}", issuer_name(&identity)),
                                format!("token verified for `{}`", identity.user),
                            )
                        });
                        Ok(Some(identity))
                    }
                    Err(refusal) => {
                        let r = refusal.rejection;
                        explain.step(|| ExplainStep::new("credential", r.message()));
                        Err(Unauthenticated {
                            reason: Reason::InvalidCredential(r),
                            message: r.message(),
                            // A token no binding takes: the issuer's bindings decided.
                            rule: refusal.issuer.map(|name| format!("issuer:{name}")),
                        })
                    }
                };
            }
            if candidate.len() > self.gateway.max_token_bytes {
                rejection = TokenRejection::TooLarge;
                continue;
            }
            if let Some(identity) = apikey::lookup(&self.api_keys, candidate) {
                explain.step(|| {
                    ExplainStep::new(
                        format!("api_key:{}", issuer_name(&identity)),
                        format!("API key verified for `{}`", identity.user),
                    )
                });
                return Ok(Some(identity));
            }
        }
        explain.step(|| ExplainStep::new("credential", rejection.message()));
        Err(Unauthenticated::new(
            Reason::InvalidCredential(rejection),
            rejection.message(),
        ))
    }

    /// The identity of a web request's `[sso]` session, if it has one; anonymous without.
    fn session(
        &self,
        facts: &RequestFacts<'_>,
        class: RouteClass,
        now: UnixTime,
        secrets: &dyn SecretStore,
        explain: &mut Explain,
    ) -> Result<Option<Identity>, Unauthenticated> {
        let session = match self.sso.as_deref() {
            Some(sso) if class == RouteClass::Web => sso.session(facts, now, secrets),
            _ => Session::None,
        };
        match session {
            Session::None => {
                explain.step(|| ExplainStep::new("credential", "none presented: anonymous"));
                Ok(None)
            }
            Session::Valid(identity) => {
                explain.step(|| {
                    ExplainStep::new(
                        format!("session:{}", identity.via.issuer().unwrap_or_default()),
                        format!("session cookie verified for `{}`", identity.user),
                    )
                });
                Ok(Some(identity))
            }
            Session::Expired => {
                explain.step(|| ExplainStep::new("credential", "session cookie has expired"));
                Err(Unauthenticated::new(
                    Reason::SessionExpired,
                    "the session has ended",
                ))
            }
            Session::Invalid => {
                explain.step(|| ExplainStep::new("credential", "session cookie is not valid"));
                Err(Unauthenticated::new(
                    Reason::SessionInvalid,
                    "the session cookie is not valid",
                ))
            }
        }
    }

    /// `Ok` with the deciding rule when the request may proceed; the denial otherwise. A
    /// request must pass every rule its route needs: the switch of a kind of route the
    /// edge cannot scope, the repository's grants, the site rule.
    fn authorize(
        &self,
        route: &Route,
        draft: &mut Draft,
        grants: &[Grant],
    ) -> Result<Option<String>, Box<Decision>> {
        let mut page = false;
        for kind in &route.site {
            let (switch, rule, reason, what) = match kind {
                SiteKind::Page => {
                    page = true;
                    continue;
                }
                SiteKind::CrossRepo => (
                    self.gateway.cross_repo,
                    "gateway.cross_repo",
                    Reason::CrossRepoClosed,
                    "pages that list or search across repositories",
                ),
                SiteKind::ById => (
                    self.gateway.by_id,
                    "gateway.by_id",
                    Reason::ByIdClosed,
                    "routes that name a repository by id",
                ),
                SiteKind::Operator => (
                    self.gateway.operator,
                    "gateway.operator",
                    Reason::OperatorClosed,
                    "Gogs' diagnostics and installer",
                ),
            };
            let open = switch == SiteSwitch::Site;
            draft.explain.step(|| {
                ExplainStep::new(
                    rule,
                    if open {
                        "site: decided as a page outside any repository"
                    } else {
                        "deny"
                    },
                )
            });
            if !open {
                return Err(Box::new(draft_take(draft).finish(
                    false,
                    403,
                    reason,
                    format!("{what} are closed at the gateway"),
                    Some(rule.into()),
                )));
            }
            page = true;
        }
        let mut rule = None;
        if let Some(need) = &route.repo {
            rule = self.authorize_repo(need, route.class, draft, grants)?;
        }
        if page {
            let site_rule = self.authorize_site(route.site_class, draft)?;
            rule = rule.or(site_rule);
        }
        Ok(rule)
    }

    fn authorize_site(
        &self,
        class: RouteClass,
        draft: &mut Draft,
    ) -> Result<Option<String>, Box<Decision>> {
        let who = draft.identity.as_ref();
        let (setting, rule) = match class {
            RouteClass::Api => (self.gateway.site_api, "gateway.site_api"),
            _ => (self.gateway.site_web, "gateway.site_web"),
        };
        let open = match setting {
            SiteAccess::Anonymous => true,
            SiteAccess::Authenticated => who.is_some(),
            SiteAccess::Deny => false,
        };
        let anonymous = who.is_none();
        draft.explain.step(|| {
            ExplainStep::new(
                rule,
                if open {
                    "open"
                } else {
                    "closed to this caller"
                },
            )
        });
        if open {
            return Ok(Some(rule.into()));
        }
        if anonymous && setting == SiteAccess::Authenticated {
            let mut d = draft_take(draft).finish(
                false,
                401,
                Reason::MissingCredential,
                "authentication required".into(),
                Some(rule.into()),
            );
            d.headers = self.challenge(class, false);
            return Err(Box::new(d));
        }
        Err(Box::new(draft_take(draft).finish(
            false,
            403,
            Reason::SiteClosed,
            "this part of the site is closed at the gateway".into(),
            Some(rule.into()),
        )))
    }

    fn authorize_repo(
        &self,
        need: &RepoNeed,
        class: RouteClass,
        draft: &mut Draft,
        grants: &[Grant],
    ) -> Result<Option<String>, Box<Decision>> {
        let RepoNeed { repo, access } = need;
        let who = draft.identity.clone();
        let scope = scope::evaluate(grants, who.as_ref(), repo, &mut draft.explain);
        if scope.effective.is_some_and(|e| e >= *access) {
            return Ok(scope.best_allow.map(|g| format!("grant:{}", g.name)));
        }
        let denied_by_rule = scope.deny.filter(|d| d.access <= *access);
        let rule = denied_by_rule
            .or(scope.best_allow)
            .map(|g| format!("grant:{}", g.name));
        let Some(identity) = who else {
            // Anonymous: challenge, so git asks for (or sends) credentials.
            let mut d = draft_take(draft).finish(
                false,
                401,
                Reason::MissingCredential,
                format!("authentication required for `{repo}`"),
                rule,
            );
            d.headers = self.challenge(class, false);
            return Err(Box::new(d));
        };
        if scope.effective.is_none() && self.gateway.hide_forbidden_repos {
            return Err(Box::new(draft_take(draft).finish(
                false,
                404,
                Reason::NotFound,
                format!("repository `{repo}` not found"),
                rule,
            )));
        }
        let (reason, message) = match (denied_by_rule, scope.effective) {
            (Some(_), _) => (
                Reason::DeniedByRule,
                format!(
                    "`{}` may not {} on `{repo}`: denied by policy",
                    identity.user,
                    verb(*access)
                ),
            ),
            (None, Some(have)) => (
                Reason::InsufficientAccess,
                format!(
                    "`{}` has {have} access to `{repo}`; this needs {access}",
                    identity.user
                ),
            ),
            (None, None) => (
                Reason::InsufficientAccess,
                format!("`{}` has no access to `{repo}`", identity.user),
            ),
        };
        Err(Box::new(
            draft_take(draft).finish(false, 403, reason, message, rule),
        ))
    }

    /// The challenge that makes each client send credentials: git and browsers need
    /// `WWW-Authenticate: Basic`, git-lfs reads `LFS-Authenticate`, API clients get Bearer.
    fn challenge(&self, class: RouteClass, invalid: bool) -> Vec<Header> {
        let realm = &self.gateway.realm;
        let basic = format!("Basic realm=\"{realm}\"");
        match class {
            RouteClass::Git | RouteClass::Web => {
                alloc::vec![Header::new("www-authenticate", basic)]
            }
            RouteClass::Lfs => alloc::vec![
                Header::new("lfs-authenticate", basic.clone()),
                Header::new("www-authenticate", basic),
            ],
            RouteClass::Api => {
                let bearer = if invalid {
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
                } else {
                    format!("Bearer realm=\"{realm}\"")
                };
                alloc::vec![Header::new("www-authenticate", bearer)]
            }
        }
    }
}

/// Adds the shadow outcome to an explained decision's steps.
fn note_shadow(decision: &mut Decision) {
    if decision.explain.is_empty() {
        return;
    }
    if let Some(shadow) = &decision.shadow {
        let outcome = format!(
            "with shadow rules enforced: {} {}{}",
            shadow.status,
            shadow.reason,
            shadow
                .rule
                .as_deref()
                .map(|r| format!(" by `{r}`"))
                .unwrap_or_default()
        );
        decision.explain.push(ExplainStep::new("shadow", outcome));
    }
}

fn draft_take(draft: &mut Draft) -> Draft {
    Draft {
        class: draft.class,
        repo: draft.repo.take(),
        access: draft.access,
        identity: draft.identity.take(),
        explain: core::mem::take(&mut draft.explain),
        policy_revision: core::mem::take(&mut draft.policy_revision),
    }
}

/// Why a request has no identity when it presented a credential.
struct Unauthenticated {
    reason: Reason,
    message: &'static str,
    /// The rule that refused it, when one did (`issuer:NAME` for a token no binding takes).
    rule: Option<String>,
}

impl Unauthenticated {
    fn new(reason: Reason, message: &'static str) -> Self {
        Unauthenticated {
            reason,
            message,
            rule: None,
        }
    }
}

fn issuer_name(identity: &Identity) -> &str {
    match &identity.via {
        crate::identity::Via::Jwt { issuer, .. } | crate::identity::Via::Session { issuer, .. } => {
            issuer
        }
        crate::identity::Via::ApiKey { key } => key,
    }
}

fn verb(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write (push)",
        Access::Admin => "administer",
        Access::Owner => "act as owner",
    }
}
