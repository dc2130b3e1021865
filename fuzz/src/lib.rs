//! What the fuzz targets check, shared with `tests/replay.rs` so that a committed
//! regression replays on stable through exactly the code the fuzzer ran.
//!
//! Beyond "never panics", every target asserts the engine's promises: a decision allows
//! exactly when its status is 200, a denial sets no origin headers, a cached verdict is
//! the uncached one, and a refused policy points inside its own text.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

use policy_core::cases::DEFAULT_TEST_NOW;
use policy_core::policy::Policy;
use policy_core::{
    Decision, Engine, NoKeys, NoTokenCache, Reason, RequestFacts, RouteClass, SecretStore,
    TokenCache, TokenCacheStore, UnixTime, Via,
};

const NOW: UnixTime = UnixTime::from_secs(DEFAULT_TEST_NOW);

/// Every origin credential configured, so allowed requests reach the credential swap.
struct EverySecret;

impl SecretStore for EverySecret {
    fn secret(&self, _name: &str) -> Option<Cow<'_, str>> {
        // Long enough to key `[sso]` session cookies too.
        Some(Cow::Borrowed("origin-secret-long-enough-to-sign-sessions"))
    }
}

fn engine(cell: &'static OnceLock<Engine>, source: &str, file: &str) -> &'static Engine {
    cell.get_or_init(|| match Engine::from_toml(source, file) {
        Ok(engine) => engine,
        Err(e) => panic!("{e}"),
    })
}

/// The token corpus policy: four issuers, every algorithm, inline keys.
fn tokens_engine() -> &'static Engine {
    static CELL: OnceLock<Engine> = OnceLock::new();
    engine(
        &CELL,
        include_str!("../../tests/corpus/tokens.toml"),
        "tests/corpus/tokens.toml",
    )
}

/// The routes corpus policy: API keys, grants and a deny, every Gogs route class.
fn routes_engine() -> &'static Engine {
    static CELL: OnceLock<Engine> = OnceLock::new();
    engine(
        &CELL,
        include_str!("../../tests/corpus/routes.toml"),
        "tests/corpus/routes.toml",
    )
}

/// The sign-in corpus policy (`[sso]`): redirects, callbacks and session cookies.
fn sso_engine() -> &'static Engine {
    static CELL: OnceLock<Engine> = OnceLock::new();
    engine(
        &CELL,
        include_str!("../../tests/corpus/sso.toml"),
        "tests/corpus/sso.toml",
    )
}

/// The promises every decision keeps, whatever the input.
fn check(decision: &Decision) {
    // 200 is an allow, except for a document the gateway publishes itself (`[login]`).
    let published = decision.reason == Reason::Published;
    // A 302 is only ever the edge's own sign-in answer (`[sso]`), never an allow.
    let redirect = matches!(
        decision.reason,
        Reason::SignInRequired
            | Reason::SessionExpired
            | Reason::SessionInvalid
            | Reason::SignedIn
            | Reason::SignedOut
    ) && decision.status == 302;
    assert_eq!(
        decision.allow,
        decision.status == 200 && !published,
        "{decision:?}"
    );
    assert!(!published || decision.status == 200, "{decision:?}");
    assert!(
        decision.status == 200 || redirect || (400..600).contains(&decision.status),
        "{decision:?}"
    );
    if redirect {
        assert!(
            decision.headers.iter().any(|h| h.name() == "location"),
            "a redirect without a location: {decision:?}"
        );
    }
    if !decision.allow {
        assert!(
            decision.set.is_empty(),
            "a denial sets origin headers: {decision:?}"
        );
        assert!(
            !decision.message.is_empty(),
            "a denial without a message: {decision:?}"
        );
    }
    let (_, body) = decision.denial_body();
    assert!(!body.is_empty());
    assert!(!decision.to_json().is_empty());
}

/// The fields two verdicts for the same request must share (the explanation may differ:
/// a cached token is not re-verified).
fn verdict(d: &Decision) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        d.allow,
        d.status,
        d.reason.code(),
        &d.identity,
        &d.rule,
        &d.set,
        &d.headers,
    )
}

fn decide(engine: &Engine, facts: &RequestFacts<'_>, tokens: &dyn TokenCacheStore) -> Decision {
    engine
        .decide_cached(facts, NOW, &NoKeys, &EverySecret, tokens)
        .resolve_with(&mut |_, state| state)
}

/// Fuzz target `token`: `data` as a bearer token on a clone of a granted repository.
pub fn token(data: &[u8]) {
    let _ = token_decision(data);
}

/// [`token`], returning the decision it checked (`None` for input that is not text).
pub fn token_decision(data: &[u8]) -> Option<Decision> {
    // Header values reach the engine as text; hosts refuse anything else before it.
    let token = std::str::from_utf8(data).ok()?;
    let authorization = format!("Bearer {token}");
    let headers = [("Authorization", authorization.as_str())];
    let facts = RequestFacts {
        query: "service=git-upload-pack",
        headers: &headers,
        ..RequestFacts::get("/acme/app.git/info/refs")
    };
    let engine = tokens_engine();
    let uncached = decide(engine, &facts, &NoTokenCache);
    check(&uncached);
    if uncached.allow {
        assert!(
            matches!(
                uncached.identity,
                Some(policy_core::Identity {
                    via: Via::Jwt { .. },
                    ..
                })
            ),
            "a bearer token allowed without a verified JWT identity: {uncached:?}"
        );
    }
    // The verified-token cache must never change a verdict, on first sight or on a hit.
    let cache = RefCell::new(TokenCache::new(4, 60));
    for _ in 0..2 {
        let cached = decide(engine, &facts, &cache);
        assert_eq!(
            verdict(&cached),
            verdict(&uncached),
            "token cache changed the verdict"
        );
    }
    Some(uncached)
}

/// Fuzz target `policy`: `data` as a policy file. A refused policy names a position inside
/// the text; an accepted one decides a request and runs its own tests without panicking.
pub fn policy(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(source, "fuzz.toml") {
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message");
            if let Some(at) = e.position {
                let lines: Vec<&str> = source.split('\n').collect();
                assert!(
                    at.line >= 1 && at.line <= lines.len(),
                    "line {} outside a {}-line policy: {e}",
                    at.line,
                    lines.len()
                );
                let width = lines.get(at.line - 1).map_or(0, |l| l.chars().count());
                assert!(
                    at.column >= 1 && at.column <= width + 1,
                    "column {} outside a {width}-character line: {e}",
                    at.column
                );
            }
            let _ = e.to_string();
        }
        Ok(policy) => {
            let headers = [("Authorization", "token k-reader")];
            let facts = RequestFacts {
                query: "service=git-upload-pack",
                headers: &headers,
                ..RequestFacts::get("/acme/app.git/info/refs")
            };
            check(&decide(&policy.engine, &facts, &NoTokenCache));
            for case in policy.tests.iter().take(8) {
                let pairs = case.request.header_pairs();
                let facts = case.request.facts(&pairs);
                let decision = policy.engine.decide_with_state(
                    &facts,
                    case.now,
                    &NoKeys,
                    &EverySecret,
                    &mut |_, s| s,
                );
                check(&decision);
            }
        }
    }
}

/// A request written as text, so seeds and regressions read like HTTP:
///
/// ```text
/// METHOD PATH[?QUERY]
/// Name: value
/// ...
///
/// BODY
/// ```
#[derive(Debug)]
pub struct TextRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
}

impl<'a> TextRequest<'a> {
    pub fn parse(data: &'a [u8]) -> Option<TextRequest<'a>> {
        let split = data.windows(2).position(|w| w == b"\n\n");
        let (head, body) = match split {
            Some(at) => (data.get(..at)?, data.get(at + 2..)),
            None => (data, None),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split('\n');
        let (method, target) = lines.next()?.split_once(' ')?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                (name, value.trim_start())
            })
            .collect();
        Some(TextRequest {
            method,
            path,
            query,
            headers,
            body,
        })
    }
}

/// Fuzz target `request`: `data` as a [`TextRequest`] against the routes corpus policy,
/// where API keys grant read, write and admin and one repository is denied to all.
pub fn request(data: &[u8]) {
    let _ = request_decision(data);
}

/// [`request`], returning the decision it checked (`None` for input that is not a request).
pub fn request_decision(data: &[u8]) -> Option<Decision> {
    let request = TextRequest::parse(data)?;
    let facts = RequestFacts {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: &request.headers,
        body: request.body,
        client_ip: Some("192.0.2.1"),
        entropy: Some([7; 32]),
    };
    check(&decide(sso_engine(), &facts, &NoTokenCache));
    let decision = decide(routes_engine(), &facts, &NoTokenCache);
    check(&decision);
    if decision.allow {
        // The policy denies acme/secret to everyone, whatever spelling reaches it.
        assert!(
            decision
                .repo
                .as_ref()
                .is_none_or(|r| r.to_string() != "acme/secret"),
            "acme/secret allowed: {request:?} -> {decision:?}"
        );
        // The caller's own credential never travels on to the origin: `Authorization` is
        // stripped (or replaced by the origin credential), cookies leave everything but
        // the web UI.
        let gone = |name: &str| {
            decision.strip.iter().any(|s| s == name)
                || decision
                    .set
                    .iter()
                    .any(|h| h.name().eq_ignore_ascii_case(name))
        };
        assert!(
            gone("authorization"),
            "`authorization` forwarded: {decision:?}"
        );
        if decision.class != Some(RouteClass::Web) {
            assert!(gone("cookie"), "`cookie` forwarded: {decision:?}");
        }
        // Web pages keep cookies, but never Gogs' session cookie (it would override the
        // verified identity at the origin).
        let session = |value: &str| {
            value
                .split(';')
                .any(|pair| pair.split('=').next().map(str::trim) == Some("i_like_gogs"))
        };
        let sent_session = request
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("cookie") && session(v));
        if sent_session {
            assert!(
                decision.strip.iter().any(|s| s == "cookie"),
                "a Gogs session cookie forwarded: {decision:?}"
            );
            assert!(
                !decision
                    .set
                    .iter()
                    .any(|h| h.name() == "cookie" && session(h.value())),
                "a Gogs session cookie set: {decision:?}"
            );
        }
    }
    Some(decision)
}
