//! Webhook deliveries made as Gogs makes them: the payload laid out by Go's
//! `json.MarshalIndent(p, "", "  ")`, signed with lowercase hex HMAC-SHA256 keyed by the
//! hook's secret, and POSTed with Gogs' delivery, event and signature headers (and the
//! `X-Github-*` copies it also sends).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const JSON: &str = "application/json";

/// A `[[webhook]]` taking pushes and releases of `acme/*` at `/_tollgate/hooks/gogs`,
/// keyed by the secret named `hook-secret` (whose value is [`SECRET`]), bodies up to
/// 8 KiB: what every host's webhook tests receive deliveries with.
pub const WEBHOOK: &str = r#"
[[grant]]
who = "*"
repos = "acme/*"
access = "read"

[[webhook]]
name = "gogs-events"
path = "/_tollgate/hooks/gogs"
secret = "hook-secret"
events = ["push", "release"]
repos = "acme/*"
max_body_bytes = 8192
"#;

/// The value of the `hook-secret` the Gogs hook signs with.
pub const SECRET: &str = "a-webhook-secret";

/// A push to `refs/heads/main` of `repository` by alice.
pub fn push_payload(repository: &str) -> String {
    format!(
        "{{\n  \"ref\": \"refs/heads/main\",\n  \"before\": \"0000000000000000000000000000000000000000\",\n  \"after\": \"9f3c1d2e4b5a69788796a5b4c3d2e1f0a9b8c7d6\",\n  \"compare_url\": \"http://gogs.internal/{repository}/compare/000000...9f3c1d\",\n  \"commits\": [],\n  \"repository\": {{\n    \"id\": 7,\n    \"full_name\": \"{repository}\"\n  }},\n  \"pusher\": {{\n    \"id\": 1,\n    \"username\": \"alice\"\n  }}\n}}"
    )
}

/// `X-Gogs-Signature` for `json` under `secret`.
pub fn sign(json: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(json.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs `body` to `url` as Gogs delivers it; the status and the JSON answer (or null).
pub fn deliver(
    url: &str,
    event: &str,
    delivery: &str,
    content_type: &str,
    body: &str,
    signature: &str,
) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .header("X-Github-Delivery", delivery)
        .header("X-Github-Event", event)
        .header("X-Gogs-Delivery", delivery)
        .header("X-Gogs-Signature", signature)
        .header("X-Gogs-Event", event)
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .expect("answer");
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The id of the push [`assert_bad_deliveries_refused`] replays.
pub const ACCEPTED_DELIVERY: &str = "5f0e8a52-2c4b-4f61-9d0c-2f5d7f6a1b01";

/// Sends the deliveries every host must refuse to the [`WEBHOOK`] at `url`, once the push
/// of `acme/app` ([`push_payload`]) was accepted as [`ACCEPTED_DELIVERY`]: that push
/// replayed, forged, signed with another secret or not at all, for another repository,
/// an event the webhook does not take, and one over its size. Each must get its status
/// and `result`; returns how many were sent.
pub fn assert_bad_deliveries_refused(url: &str) -> usize {
    let payload = push_payload("acme/app");
    let signature = sign(&payload, SECRET);
    let other = push_payload("other/app");
    let big = push_payload(&format!("acme/{}", "x".repeat(9000)));
    let id = |n: u32| format!("5f0e8a52-0000-4000-8000-{n:012}");
    let cases: [(&str, (u16, Value), u16, &str); 7] = [
        (
            "replayed",
            deliver(url, "push", ACCEPTED_DELIVERY, JSON, &payload, &signature),
            409,
            "duplicate",
        ),
        (
            "forged",
            deliver(
                url,
                "push",
                &id(2),
                JSON,
                &payload.replace("alice", "mallory"),
                &signature,
            ),
            401,
            "bad_signature",
        ),
        (
            "signed with another secret",
            deliver(
                url,
                "push",
                &id(3),
                JSON,
                &payload,
                &sign(&payload, "guess"),
            ),
            401,
            "bad_signature",
        ),
        (
            "another repository",
            deliver(url, "push", &id(4), JSON, &other, &sign(&other, SECRET)),
            403,
            "repository_not_accepted",
        ),
        (
            "an event not accepted",
            deliver(url, "issues", &id(5), JSON, &payload, &signature),
            403,
            "event_not_accepted",
        ),
        (
            "oversize",
            deliver(url, "push", &id(6), JSON, &big, &sign(&big, SECRET)),
            413,
            "too_large",
        ),
        (
            "unsigned",
            deliver(url, "push", &id(7), JSON, &payload, ""),
            401,
            "bad_signature",
        ),
    ];
    for (what, (status, answer), expected_status, expected) in &cases {
        assert_eq!(
            (*status, answer["result"].as_str()),
            (*expected_status, Some(*expected)),
            "{what}: {answer}"
        );
    }
    cases.len()
}
