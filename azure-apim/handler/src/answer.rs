//! What the handler tells API Management.

use serde::Serialize;
use serde_json::{json, Map, Value};
use tollgate_wasmtime::{Action, Final};

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
    /// For APIM's `rate-limit-by-key`: `{key, calls, renewal_period}`, or null.
    pub rate_limit: Value,
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

impl Answer {
    pub fn from_final(outcome: Final, rate: Option<(String, u64, u64)>) -> Answer {
        let (allow, status, reason) = (
            outcome.allow(),
            outcome.status(),
            outcome.reason().to_owned(),
        );
        let d = outcome.decision;
        let (strip, set, content_type, body) = match outcome.action {
            Action::Forward { strip, set } => (strip, set, String::new(), String::new()),
            Action::Deny { content_type, body } => (Vec::new(), Vec::new(), content_type, body),
        };
        let find = |name: &str| {
            set.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Answer {
            allow,
            status,
            reason,
            identity: d["identity"]["user"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            origin_authorization: find("authorization"),
            // The reverse-proxy header's name is the policy's; it is whatever else is set.
            origin_user: set
                .iter()
                .find(|(n, _)| {
                    !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("cookie")
                })
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            origin_cookie: find("cookie"),
            strip,
            response_headers: d["headers"].as_object().cloned().unwrap_or_default(),
            content_type,
            body,
            rate_limit: rate.map_or(Value::Null, |(key, calls, period)| {
                let (calls, renewal_period) = apim_window(calls, period);
                json!({ "key": key, "calls": calls, "renewal_period": renewal_period })
            }),
            decision: d,
            audit: outcome.audit.to_string(),
        }
    }

    /// The module failed: refuse.
    pub fn failure(message: &str) -> Answer {
        eprintln!("tollgate-azure-handler: policy module failed: {message}");
        Answer {
            allow: false,
            status: 500,
            reason: "policy_module_error".into(),
            identity: String::new(),
            origin_authorization: String::new(),
            origin_user: String::new(),
            origin_cookie: String::new(),
            strip: Vec::new(),
            response_headers: Map::new(),
            content_type: "text/plain; charset=utf-8".into(),
            body: "policy evaluation failed\n".into(),
            rate_limit: Value::Null,
            decision: json!({ "allow": false, "status": 500, "reason": "policy_module_error" }),
            audit: json!({ "allow": false, "status": 500, "reason": "policy_module_error" })
                .to_string(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"allow\":false,\"status\":500}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::apim_window;

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
