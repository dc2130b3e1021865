//! The credential the origin sees. Gogs tokens have no scopes, so the edge never forwards
//! the caller's credential: it strips it and presents one of its own, per route class.

use alloc::{borrow::Cow, format, string::String, vec::Vec};
use base64ct::{Base64, Encoding};
use serde::Deserialize;

use crate::decision::Header;
use crate::identity::Identity;
use crate::route::RouteClass;

/// Where hosts keep origin secrets (Gogs tokens): environment, Workers secrets, a Fastly
/// Secret Store. The engine asks by name and never stores the answer. In-memory maps lend
/// (`Cow::Borrowed`); stores that look secrets up on demand hand over (`Cow::Owned`).
pub trait SecretStore {
    fn secret(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// A store with no secrets: every origin credential is missing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSecrets;

impl SecretStore for NoSecrets {
    fn secret(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

impl<S: SecretStore + ?Sized> SecretStore for &S {
    fn secret(&self, name: &str) -> Option<Cow<'_, str>> {
        (**self).secret(name)
    }
}

/// How the origin learns who the caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CredentialMode {
    /// The caller's own Gogs token, from the secret named by `user_token_secret`.
    UserToken,
    /// One Gogs service account for everyone; the edge's grants are the only limit.
    ServiceToken,
    /// Gogs' reverse-proxy authentication header (web UI only in Gogs; not git HTTP).
    ReverseProxy,
    /// Nothing: the origin sees an anonymous request.
    None,
}

#[derive(Clone, Debug)]
pub(crate) struct OriginConfig {
    pub(crate) git: CredentialMode,
    pub(crate) api: CredentialMode,
    pub(crate) web: CredentialMode,
    /// Secret name pattern containing `{user}`.
    pub(crate) user_token_secret: String,
    pub(crate) service_user: Option<String>,
    pub(crate) service_token_secret: Option<String>,
    /// Lowercase header name Gogs reads for reverse-proxy authentication.
    pub(crate) user_header: String,
}

/// The secret a credential needed but the host does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MissingSecret(pub(crate) String);

impl OriginConfig {
    fn mode(&self, class: RouteClass) -> CredentialMode {
        match class {
            RouteClass::Git | RouteClass::Lfs => self.git,
            RouteClass::Api => self.api,
            RouteClass::Web => self.web,
        }
    }

    /// Request headers to remove: every way a client could authenticate to Gogs itself.
    /// Cookies stay for the web UI (its sessions and CSRF need them) and go everywhere else.
    pub(crate) fn strip(&self, class: RouteClass) -> Vec<String> {
        let mut strip: Vec<String> = ["authorization", "proxy-authorization", "x-webauth-user"]
            .into_iter()
            .map(String::from)
            .collect();
        if !strip.contains(&self.user_header) {
            strip.push(self.user_header.clone());
        }
        if class != RouteClass::Web {
            strip.push(String::from("cookie"));
        }
        strip
    }

    /// Headers that carry the origin credential for `identity` (none for anonymous callers:
    /// the origin then applies its own public/private rules on top of the edge's).
    pub(crate) fn credential(
        &self,
        class: RouteClass,
        identity: Option<&Identity>,
        secrets: &dyn SecretStore,
    ) -> Result<Vec<Header>, MissingSecret> {
        let Some(identity) = identity else {
            return Ok(Vec::new());
        };
        let (account, secret_name) = match self.mode(class) {
            CredentialMode::None => return Ok(Vec::new()),
            CredentialMode::ReverseProxy => {
                return Ok(alloc::vec![Header::new(
                    &self.user_header,
                    identity.user.clone()
                )]);
            }
            CredentialMode::UserToken => (
                identity.user.clone(),
                self.user_token_secret.replace("{user}", &identity.user),
            ),
            CredentialMode::ServiceToken => {
                match (&self.service_user, &self.service_token_secret) {
                    (Some(user), Some(secret)) => (user.clone(), secret.clone()),
                    // Compilation guarantees both; refuse rather than send nothing.
                    _ => return Err(MissingSecret(String::from("service_token_secret"))),
                }
            }
        };
        let token = secrets
            .secret(&secret_name)
            .ok_or_else(|| MissingSecret(secret_name.clone()))?;
        let shown = format!("<secret {secret_name}>");
        let header = match class {
            // Gogs' API reads `Authorization: token <sha>`.
            RouteClass::Api => Header::secret(
                "authorization",
                format!("token {token}"),
                format!("token {shown}"),
            ),
            // Git HTTP only understands Basic; Gogs tries the password as a token.
            _ => Header::secret(
                "authorization",
                format!(
                    "Basic {}",
                    Base64::encode_string(format!("{account}:{token}").as_bytes())
                ),
                format!("Basic base64({account}:{shown})"),
            ),
        };
        Ok(alloc::vec![header])
    }
}
