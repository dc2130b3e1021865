//! `--policy-url`: the policy pulled from a URL (the raw file in a Gogs repository, say),
//! polled with `If-None-Match`, and, with `--policy-pubkey`, accepted only with a valid
//! minisign signature at the same URL plus `.minisig`. What arrives goes through the same
//! vetting as any reload; the policy file keeps the last good one. A failed fetch or a
//! bad signature keeps the policy deciding, and is logged and counted.

use std::sync::Mutex;
use std::time::Duration;

use minisign_verify::{PublicKey, Signature};

use crate::config::PolicyUrlConfig;
use crate::proxy::Shared;

/// Largest policy (and signature) accepted.
const MAX_POLICY_BYTES: usize = 1 << 20;

/// Where the policy is pulled from, and how.
pub struct PolicyUrl {
    url: String,
    /// Sent as `Authorization: token VALUE` (a Gogs access token that can read the file).
    token: Option<String>,
    pubkey: Option<PublicKey>,
    /// How often the URL is asked.
    pub poll: Duration,
    /// The `ETag` of the last policy fetched and verified, for `If-None-Match`.
    etag: Mutex<Option<String>>,
}

impl std::fmt::Debug for PolicyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyUrl")
            .field("url", &self.url)
            .field("signed", &self.pubkey.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a pull brought no policy to vet.
#[derive(Debug, PartialEq, Eq)]
pub enum PullError {
    /// The URL could not be fetched (or answered something other than 200 or 304).
    Fetch(String),
    /// The signature is missing, malformed or does not verify with the public key.
    Signature(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Fetch(e) => write!(f, "fetch failed: {e}"),
            PullError::Signature(e) => write!(f, "signature refused: {e}"),
        }
    }
}

impl PolicyUrl {
    pub fn new(config: &PolicyUrlConfig) -> Result<Self, String> {
        let PolicyUrlConfig {
            url,
            token,
            pubkey,
            poll,
        } = config.clone();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--policy-url `{url}` must be an http:// or https:// URL"
            ));
        }
        let pubkey = match pubkey.as_deref().map(str::trim) {
            None => None,
            Some(text) if text.contains('\n') => Some(PublicKey::decode(text)),
            Some(line) => Some(PublicKey::from_base64(line)),
        }
        .transpose()
        .map_err(|e| format!("--policy-pubkey: not a minisign public key: {e}"))?;
        Ok(PolicyUrl {
            url,
            token,
            pubkey,
            poll,
            etag: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The policy at the URL if it changed since the last pull (`None`: 304), verified
    /// when a public key is set.
    pub async fn pull(&self, client: &reqwest::Client) -> Result<Option<String>, PullError> {
        let etag = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (policy, new_etag) = match self.get(client, &self.url, etag.as_deref()).await? {
            Some(answer) => answer,
            None => return Ok(None),
        };
        if let Some(pubkey) = &self.pubkey {
            let signature_url = format!("{}.minisig", self.url);
            let (signature, _) = self
                .get(client, &signature_url, None)
                .await
                .map_err(|e| PullError::Signature(format!("{signature_url}: {e}")))?
                .ok_or_else(|| PullError::Signature(format!("{signature_url}: no signature")))?;
            let signature = Signature::decode(&signature)
                .map_err(|e| PullError::Signature(format!("{signature_url}: {e}")))?;
            pubkey
                .verify(policy.as_bytes(), &signature, false)
                .map_err(|e| PullError::Signature(e.to_string()))?;
        }
        *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = new_etag;
        Ok(Some(policy))
    }

    /// One GET: the body and its `ETag`, or `None` for 304.
    async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        if_none_match: Option<&str>,
    ) -> Result<Option<(String, Option<String>)>, PullError> {
        let mut request = client.get(url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("token {token}"));
        }
        if let Some(etag) = if_none_match {
            request = request.header("if-none-match", etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PullError::Fetch(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(PullError::Fetch(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_POLICY_BYTES as u64)
        {
            return Err(PullError::Fetch(format!("{url}: over 1 MiB")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PullError::Fetch(e.to_string()))?;
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PullError::Fetch(format!("{url}: over 1 MiB")));
        }
        let text = String::from_utf8(bytes.into())
            .map_err(|_| PullError::Fetch(format!("{url}: not UTF-8")))?;
        Ok(Some((text, etag)))
    }
}

impl Shared {
    /// One poll of `--policy-url`: a new, verified policy is offered for reload.
    pub async fn pull_policy(&self) {
        let Some(source) = &self.policy_url else {
            return;
        };
        match source.pull(&self.fetch_client).await {
            Ok(None) => self.metrics.policy_pull(None),
            Ok(Some(text)) => {
                self.metrics.policy_pull(None);
                let _ = self.offer(text, source.url().to_owned()).await;
            }
            Err(e) => {
                self.metrics.policy_pull(Some(&e));
                eprintln!(
                    "tollgate: policy from {}: {e}; the policy deciding stays",
                    source.url()
                );
            }
        }
    }
}

/// The policy at `source`, fetched and verified once, for a start with no last good copy.
pub fn fetch_once(source: &PolicyUrl) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(source.pull(&client))
        .map_err(|e| format!("policy from {}: {e}", source.url()))?
        .ok_or_else(|| {
            format!(
                "policy from {}: answered 304 to a first fetch",
                source.url()
            )
        })
}
