//! What the handler tells API Management.

use policy_core::Decision;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The handler's answer. APIM reads the flat fields (see apim-policy.xml); `decision` is
/// the full decision in `tollgate eval`'s schema, for logs and conformance tests.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub allow: bool,
    pub status: u16,
    pub reason: String,
    /// The Gogs user the request runs as, or "" for anonymous.
    pub identity: String,
    /// Value for the origin's `Authorization` header, or "" to send none.
    pub origin_authorization: String,
    /// Value for the origin's reverse-proxy user header (`X-WEBAUTH-USER`), or "".
    pub origin_user: String,
    /// The `Cookie` header to send after stripping it (the client's cookies without Gogs'
    /// sign-in cookies), or "" to send none.
    pub origin_cookie: String,
    /// Request headers APIM must delete before forwarding (lowercase).
    pub strip: Vec<String>,
    /// For denials: the response APIM returns.
    pub response_headers: Map<String, Value>,
    pub content_type: String,
    pub body: String,
    /// For APIM's `rate-limit-by-key`, one `{key, calls, renewal_period}` per limit that
    /// applies (at most [`XML_RATE_LIMITS`]); empty when the handler resolved the limits
    /// itself or none applies.
    pub rate_limits: Vec<Value>,
    /// `X-Request-Id` for the origin (the client's when usable, else the handler's id for
    /// the decision), also in the audit record; "" on refusals made outside a decision.
    pub request_id: String,
    pub decision: Value,
    #[serde(skip)]
    pub audit: String,
}

/// APIM's `renewal-period` is at most 300 seconds: longer quotas are scaled down to the
/// same rate over 300 seconds (at least one call).
pub fn apim_window(calls: u64, period_seconds: u64) -> (u64, u64) {
    const MAX_RENEWAL: u64 = 300;
    if period_seconds <= MAX_RENEWAL {
        return (calls, period_seconds.max(1));
    }
    let scaled = (u128::from(calls) * u128::from(MAX_RENEWAL)).div_ceil(u128::from(period_seconds));
    (
        u64::try_from(scaled).unwrap_or(u64::MAX).max(1),
        MAX_RENEWAL,
    )
}

/// How many `rate-limit-by-key` elements apim-policy.xml has: the most limits one request
/// can be counted against when APIM counts.
pub const XML_RATE_LIMITS: usize = 3;

/// One limit for APIM to count: its counter key, and the quota as `(calls, period seconds)`.
pub struct ApimLimit {
    pub key: String,
    pub calls: u64,
    pub period_seconds: u64,
}

/// The request headers apim-policy.xml deletes, and those it sets from the answer. APIM
/// takes a header's name only as a literal, so the XML cannot follow a policy's
/// `origin.user_header`: a decision that needs any other header removed or set is refused,
/// never forwarded with the client's copy of that header still on it.
const XML_DELETES: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-webauth-user",
    "cookie",
];
const XML_SETS: [&str; 3] = ["authorization", "x-webauth-user", "cookie"];
/// The response headers apim-policy.xml's `return-response` sets from a denial's answer.
const XML_RESPONSE_HEADERS: [&str; 6] = [
    "www-authenticate",
    "lfs-authenticate",
    "retry-after",
    "location",
    "set-cookie",
    "cache-control",
];

/// At load: the policy's reverse-proxy header must be the one the XML handles. The
/// per-request check in [`Answer::from_decision`] stays as the backstop.
pub fn check_user_header(user_header: &str) -> Result<(), String> {
    if user_header.eq_ignore_ascii_case("x-webauth-user") {
        return Ok(());
    }
    Err(format!(
        "TOLLGATE_POLICY: origin.user_header `{user_header}` cannot be used under API \
         Management: apim-policy.xml names headers as literals and deletes and sets only \
         X-WEBAUTH-USER, so a client's `{user_header}` would reach Gogs; use the default \
         (and REVERSE_PROXY_AUTHENTICATION_HEADER = X-WEBAUTH-USER in Gogs' app.ini)"
    ))
}

/// The first header of a forward that the XML cannot apply.
fn unsupported_header<'a>(
    strip: &'a [String],
    mut set: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let known = |list: &[&str], name: &str| list.iter().any(|h| h.eq_ignore_ascii_case(name));
    strip
        .iter()
        .map(String::as_str)
        .find(|name| !known(&XML_DELETES, name))
        .or_else(|| set.find(|name| !known(&XML_SETS, name)))
}

impl Answer {
    /// The answer for `decision`; `limits` are those APIM's `rate-limit-by-key` counts,
    /// and `audit` the decision's audit record.
    pub fn from_decision(decision: &Decision, limits: Vec<ApimLimit>, audit: String) -> Answer {
        if limits.len() > XML_RATE_LIMITS {
            return Answer::refusal(
                "apim_unsupported_rate_limits",
                &format!(
                    "{} rate limits apply to this request and apim-policy.xml counts at most \
                     {XML_RATE_LIMITS}; narrow the limits or set TOLLGATE_RATE=memory",
                    limits.len()
                ),
            );
        }
        if decision.allow {
            let set_names = decision.set.iter().map(|h| h.name());
            if let Some(name) = unsupported_header(&decision.strip, set_names) {
                return Answer::refusal(
                    "apim_unsupported_header",
                    &format!(
                        "the decision needs header `{name}` removed or set, which \
                         apim-policy.xml cannot do; under APIM the policy's \
                         origin.user_header must be X-WEBAUTH-USER"
                    ),
                );
            }
        }
        if !decision.allow {
            let returned = |name: &str| {
                XML_RESPONSE_HEADERS
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name))
            };
            if let Some(header) = decision.headers.iter().find(|h| !returned(h.name())) {
                return Answer::refusal(
                    "apim_unsupported_header",
                    &format!(
                        "the answer needs response header `{}`, which apim-policy.xml does not return",
                        header.name()
                    ),
                );
            }
        }
        let find = |name: &str| {
            decision
                .set
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case(name))
                .map(|h| h.value().to_owned())
                .unwrap_or_default()
        };
        let (content_type, body) = if decision.allow {
            (String::new(), String::new())
        } else {
            let (content_type, body) = decision.denial_body();
            (content_type.to_owned(), body)
        };
        Answer {
            allow: decision.allow,
            status: decision.status,
            reason: decision.reason.code().to_owned(),
            identity: decision
                .identity
                .as_ref()
                .map(|i| i.user.clone())
                .unwrap_or_default(),
            origin_authorization: find("authorization"),
            origin_user: find("x-webauth-user"),
            origin_cookie: find("cookie"),
            strip: if decision.allow {
                decision.strip.clone()
            } else {
                Vec::new()
            },
            response_headers: decision
                .headers
                .iter()
                .map(|h| (h.name().to_owned(), Value::from(h.value())))
                .collect(),
            content_type,
            body,
            rate_limits: limits
                .into_iter()
                .map(|limit| {
                    let (calls, renewal_period) = apim_window(limit.calls, limit.period_seconds);
                    json!({ "key": limit.key, "calls": calls, "renewal_period": renewal_period })
                })
                .collect(),
            request_id: String::new(),
            decision: serde_json::to_value(decision).unwrap_or(Value::Null),
            audit,
        }
    }

    /// Refuse with a server error: the edge cannot carry out what was decided.
    fn refusal(reason: &str, message: &str) -> Answer {
        eprintln!("tollgate-azure-handler: {message}");
        Answer::refused(500, reason, "policy evaluation failed\n")
    }

    /// An allowed request whose audit record cannot be kept, under
    /// `TOLLGATE_AUDIT_REQUIRED=true`: 503 with `Retry-After`, never forwarded unrecorded.
    /// Not logged per request: the audit writer says once that its sink fails.
    pub fn audit_unavailable() -> Answer {
        let mut answer = Answer::refused(
            503,
            "audit_unavailable",
            "the audit log cannot take records; retry shortly\n",
        );
        answer
            .response_headers
            .insert("retry-after".into(), Value::from("1"));
        answer
    }

    fn refused(status: u16, reason: &str, body: &str) -> Answer {
        let summary = json!({ "allow": false, "status": status, "reason": reason });
        Answer {
            allow: false,
            status,
            reason: reason.into(),
            identity: String::new(),
            origin_authorization: String::new(),
            origin_user: String::new(),
            origin_cookie: String::new(),
            strip: Vec::new(),
            response_headers: Map::new(),
            content_type: "text/plain; charset=utf-8".into(),
            body: body.into(),
            rate_limits: Vec::new(),
            request_id: String::new(),
            audit: summary.to_string(),
            decision: summary,
        }
    }

    /// Test endpoints only: a sign-in callback's token request, shown instead of sent
    /// (`{"token_request": ...}` as `decision`), never something APIM acts on.
    pub fn token_request(request: &policy_core::TokenExchange) -> Answer {
        let mut answer = Answer::refusal("token_request", "the test gave no token endpoint answer");
        answer.decision = serde_json::from_str(&request.to_json()).unwrap_or(Value::Null);
        answer
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"allow\":false,\"status\":500}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::{apim_window, check_user_header, unsupported_header, Answer, ApimLimit};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_xml_user_header_loads_and_others_do_not() {
        assert_eq!(check_user_header("x-webauth-user"), Ok(()));
        let refused = check_user_header("x-remote-user").expect_err("a custom header is refused");
        assert!(refused.contains("`x-remote-user`"), "{refused}");
        // A module too old to report the header is refused too.
        assert!(check_user_header("").is_err());
    }

    #[test]
    fn only_headers_the_xml_handles_pass() {
        let strip = names(&["authorization", "proxy-authorization", "x-webauth-user"]);
        let set = ["X-WEBAUTH-USER", "cookie"];
        assert_eq!(unsupported_header(&strip, set.into_iter()), None);

        // A custom reverse-proxy header: the client's copy would reach Gogs.
        let mut custom = strip.clone();
        custom.push("x-remote-user".to_owned());
        assert_eq!(
            unsupported_header(&custom, std::iter::empty()),
            Some("x-remote-user")
        );
        assert_eq!(
            unsupported_header(&strip, ["x-remote-user"].into_iter()),
            Some("x-remote-user")
        );
    }

    #[test]
    fn more_limits_than_the_xml_counts_are_refused() {
        let mut decision = policy_core::Decision::policy_module_failed();
        decision.allow = true;
        decision.status = 200;
        let limits = |n: usize| {
            (0..n)
                .map(|i| ApimLimit {
                    key: format!("l{i}/user:alice"),
                    calls: 10,
                    period_seconds: 60,
                })
                .collect()
        };
        let three = Answer::from_decision(&decision, limits(3), String::new());
        assert!(three.allow);
        assert_eq!(three.rate_limits.len(), 3);
        let four = Answer::from_decision(&decision, limits(4), String::new());
        assert!(!four.allow);
        assert_eq!(
            (four.status, four.reason.as_str()),
            (500, "apim_unsupported_rate_limits")
        );
        assert!(four.rate_limits.is_empty());
    }

    #[test]
    fn quotas_fit_apims_window() {
        assert_eq!(apim_window(600, 60), (600, 60));
        assert_eq!(apim_window(3, 300), (3, 300));
        // Longer periods keep their rate over 300 seconds, rounding up, never below 1.
        assert_eq!(apim_window(100, 3600), (9, 300));
        assert_eq!(apim_window(3, 3600), (1, 300));
        assert_eq!(apim_window(7200, 86_400), (25, 300));
    }
}
