//! One structured audit record per decision: who, what, which rule, and the outcome.
//! Records never hold a credential; a presented credential appears only as a short
//! SHA-256 fingerprint, enough to correlate requests made with the same token.

use alloc::string::String;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::access::Access;
use crate::decision::{Decision, Reason, Shadow};
use crate::identity::Identity;
use crate::request::RequestFacts;
use crate::route::{RepoName, RouteClass};
use crate::time::UnixTime;

#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord<'d> {
    /// The host's id for the request, when it gives one (`tollgate serve` does, and
    /// repeats it on the request's outcome record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The request's id across systems (`X-Request-Id`, the client's or the host's own),
    /// when the host gives one; serve forwards it to Gogs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub allow: bool,
    pub status: u16,
    pub reason: Reason,
    pub rule: Option<&'d str>,
    pub identity: Option<&'d Identity>,
    pub class: Option<RouteClass>,
    pub repo: Option<&'d RepoName>,
    pub access: Option<Access>,
    pub method: String,
    pub path: String,
    pub client_ip: Option<String>,
    /// First 16 hex digits of the SHA-256 of the Authorization header, if any.
    pub credential_fingerprint: Option<String>,
    pub retry_after: Option<u64>,
    /// The revision of the policy that decided.
    pub policy_revision: Option<&'d str>,
    /// What the shadow rules would have decided instead, when that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<&'d Shadow>,
}

impl Decision {
    /// The audit record for this decision about `facts`, made at `now`.
    pub fn audit<'d>(&'d self, facts: &RequestFacts<'_>, now: UnixTime) -> AuditRecord<'d> {
        let fingerprint = facts.header_values("authorization").next().and_then(|v| {
            Sha256::digest(v.as_bytes())
                .first_chunk::<8>()
                .map(hex::encode)
        });
        AuditRecord {
            id: None,
            request_id: None,
            time_ms: now.as_nanos() / 1_000_000,
            allow: self.allow,
            status: self.status,
            reason: self.reason,
            rule: self.rule.as_deref(),
            identity: self.identity.as_ref(),
            class: self.class,
            repo: self.repo.as_ref(),
            access: self.access,
            method: String::from(facts.method),
            // The raw path, without the query (which may carry secrets of other kinds).
            path: String::from(facts.path),
            client_ip: facts.client_ip.map(String::from),
            credential_fingerprint: fingerprint,
            retry_after: self.retry_after,
            policy_revision: self.policy_revision.as_deref(),
            shadow: self.shadow.as_ref(),
        }
    }
}

impl AuditRecord<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
