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

/// A store where every name holds a stand-in value: for running a policy's own test
/// cases, whose decisions show secrets by name only.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlaceholderSecrets;

/// The stand-in every name holds in [`PlaceholderSecrets`]: long enough to serve as a
/// signing key (`[sso]`'s session key), so a policy's sign-in cases run as its hosts would.
pub const PLACEHOLDER: &str = "placeholder-secret-for-policy-test-cases";

impl SecretStore for PlaceholderSecrets {
    fn secret(&self, _name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(PLACEHOLDER))
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
    /// Cookies through which Gogs signs a browser in by itself (see [`OriginConfig::web_cookies`]).
    pub(crate) session_cookies: Vec<String>,
}

/// Gogs' own sign-in cookies under its default names: the session (`[session]
/// COOKIE_NAME`) and the remember-me pair (`[security] COOKIE_USERNAME` and
/// `COOKIE_REMEMBER_NAME`).
pub(crate) const DEFAULT_SESSION_COOKIES: [&str; 3] =
    ["i_like_gogs", "gogs_awesome", "gogs_incredible"];

/// What became of a web request's cookies.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FilteredCookies {
    /// The sign-in cookies removed, in request order.
    pub(crate) removed: Vec<String>,
    /// The `Cookie` header to send instead, if any cookie is left.
    pub(crate) header: Option<Header>,
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

    /// The web UI keeps its cookies (CSRF, language), but not Gogs' sign-in cookies: Gogs
    /// takes a session over both the reverse-proxy header and Basic credentials, so one
    /// would make the origin act as whoever the session belongs to instead of the identity
    /// the edge verified and audited. `None` when no sign-in cookie is present; otherwise
    /// the host strips `Cookie` and sends the rest (one header, `; `-joined, as HTTP/2
    /// hosts must).
    pub(crate) fn web_cookies<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a str>,
    ) -> Option<FilteredCookies> {
        let mut kept: Vec<&str> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        for pair in cookie_headers.flat_map(|h| h.split(';')) {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if self.session_cookies.iter().any(|c| c == name) {
                removed.push(String::from(name));
            } else {
                kept.push(pair);
            }
        }
        if removed.is_empty() {
            return None;
        }
        let header = (!kept.is_empty()).then(|| {
            Header::secret(
                "cookie",
                kept.join("; "),
                format!("<{} client cookies>", kept.len()),
            )
        });
        Some(FilteredCookies { removed, header })
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
        let shown = ["<secret ", &secret_name, ">"].concat();
        let header = match class {
            // Gogs' API reads `Authorization: token <sha>`.
            RouteClass::Api => Header::secret(
                "authorization",
                ["token ", &token].concat(),
                ["token ", &shown].concat(),
            ),
            // Git HTTP only understands Basic; Gogs tries the password as a token.
            _ => {
                let basic = Base64::encode_string([&account, ":", &token].concat().as_bytes());
                Header::secret(
                    "authorization",
                    ["Basic ", &basic].concat(),
                    ["Basic base64(", &account, ":", &shown, ")"].concat(),
                )
            }
        };
        Ok(alloc::vec![header])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OriginConfig {
        OriginConfig {
            git: CredentialMode::UserToken,
            api: CredentialMode::UserToken,
            web: CredentialMode::ReverseProxy,
            user_token_secret: String::from("gogs-token/{user}"),
            service_user: None,
            service_token_secret: None,
            user_header: String::from("x-webauth-user"),
            session_cookies: DEFAULT_SESSION_COOKIES.map(String::from).to_vec(),
        }
    }

    #[test]
    fn sign_in_cookies_are_removed_and_the_rest_kept_in_order() {
        let filtered = config()
            .web_cookies(
                [
                    "lang=en-US; i_like_gogs=0123abcd",
                    "_csrf=tok=en; gogs_awesome=alice;;",
                    " gogs_incredible = x ",
                ]
                .into_iter(),
            )
            .expect("sign-in cookies present");
        assert_eq!(
            filtered.removed,
            ["i_like_gogs", "gogs_awesome", "gogs_incredible"]
        );
        let header = filtered.header.expect("two cookies left");
        assert_eq!(header.name(), "cookie");
        assert_eq!(header.value(), "lang=en-US; _csrf=tok=en");
    }

    #[test]
    fn only_sign_in_cookies_leave_no_header_and_none_leave_the_request_alone() {
        let only = config()
            .web_cookies(["i_like_gogs=1"].into_iter())
            .expect("removed");
        assert_eq!(only.header, None);
        // Names are compared exactly: cookies are case-sensitive, and a prefix is not a match.
        assert_eq!(
            config().web_cookies(["I_LIKE_GOGS=1; i_like_gogs_x=2; lang=en"].into_iter()),
            None
        );
        assert_eq!(config().web_cookies(core::iter::empty()), None);
    }
}
