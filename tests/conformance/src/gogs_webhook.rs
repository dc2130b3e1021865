//! Webhook deliveries made as Gogs makes them: the payload laid out by Go's
//! `json.MarshalIndent(p, "", "  ")`, signed with lowercase hex HMAC-SHA256 keyed by the
//! hook's secret, and POSTed with Gogs' delivery, event and signature headers (and the
//! `X-Github-*` copies it also sends).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const JSON: &str = "application/json";

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
