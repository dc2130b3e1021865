//! `tollgate login`: signs a person in to a gateway with their identity provider, through
//! the OAuth 2.0 Device Authorization Grant (RFC 8628: the person opens the verification
//! URL and enters the code shown) or, with `--browser` or a provider without device flow,
//! the Authorization Code grant with PKCE on a loopback redirect (`loopback.rs`). The
//! provider's endpoints come from OpenID discovery, and the tokens are kept for
//! `tollgate credential` (see `credentials.rs`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::credentials::{gateway_key, http_client, now, send_json, Store, Stored, TokenAnswer};
use crate::loopback;

/// What `tollgate login` was asked; what is not given comes from the gateway.
#[derive(Debug)]
pub struct LoginArgs {
    pub gateway: String,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    /// A resource indicator (RFC 8707) naming the gateway's audience, when the provider
    /// wants one.
    pub resource: Option<String>,
    /// Sign in in a browser (authorization code with PKCE) rather than with a device code.
    pub browser: bool,
}

/// What a gateway with `[login]` publishes at `policy_core::LOGIN_METADATA_PATH`.
#[derive(Deserialize)]
struct Published {
    issuer: String,
    client_id: String,
    scope: Option<String>,
    resource: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub fn login(args: &LoginArgs) -> Result<ExitCode, String> {
    let gateway = gateway_key(&args.gateway)?;
    let http = http_client()?;
    let published = if args.issuer.is_none() || args.client_id.is_none() {
        let url = format!("{gateway}{}", policy_core::LOGIN_METADATA_PATH);
        let published: Published = get_json(&http, &url).map_err(|e| {
            format!("{e}; the gateway publishes no sign-in settings: give --issuer and --client-id")
        })?;
        Some(published)
    } else {
        None
    };
    let from_gateway =
        |pick: fn(&Published) -> Option<&String>| published.as_ref().and_then(pick).cloned();
    let issuer = args
        .issuer
        .clone()
        .or_else(|| from_gateway(|p| Some(&p.issuer)))
        .ok_or("no issuer")?;
    let client_id = args
        .client_id
        .clone()
        .or_else(|| from_gateway(|p| Some(&p.client_id)))
        .ok_or("no client id")?;
    let scope = args
        .scope
        .clone()
        .or_else(|| from_gateway(|p| p.scope.as_ref()))
        .unwrap_or_else(|| "openid offline_access".into());
    let resource = args
        .resource
        .clone()
        .or_else(|| from_gateway(|p| p.resource.as_ref()));
    let issuer = issuer.trim_end_matches('/');
    require_https(issuer, "the issuer")?;
    let discovery_url = format!("{issuer}/.well-known/openid-configuration");
    let discovery: Discovery = get_json(&http, &discovery_url)?;
    // OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer asked.
    if discovery.issuer.trim_end_matches('/') != issuer {
        return Err(format!(
            "{discovery_url} names the issuer `{}`, not `{issuer}`",
            discovery.issuer
        ));
    }
    require_https(&discovery.token_endpoint, "the token endpoint")?;
    let answer = match (&discovery.device_authorization_endpoint, args.browser) {
        (Some(device_endpoint), false) => {
            let mut form = vec![("client_id", client_id.as_str()), ("scope", scope.as_str())];
            if let Some(resource) = &resource {
                form.push(("resource", resource));
            }
            let device: DeviceAuthorization = post_json(&http, device_endpoint, &form)?;
            eprintln!(
                "To sign in to {gateway}, open {} and enter the code {}",
                device
                    .verification_uri_complete
                    .as_deref()
                    .unwrap_or(&device.verification_uri),
                device.user_code
            );
            poll(&http, &discovery.token_endpoint, &client_id, &device)?
        }
        _ => {
            let authorization_endpoint = discovery.authorization_endpoint.as_deref().ok_or_else(|| {
                format!("`{issuer}` offers neither a device authorization endpoint (RFC 8628) nor an authorization endpoint")
            })?;
            require_https(authorization_endpoint, "the authorization endpoint")?;
            loopback::sign_in(
                &http,
                &loopback::Flow {
                    authorization_endpoint,
                    token_endpoint: &discovery.token_endpoint,
                    client_id: &client_id,
                    scope: &scope,
                    resource: resource.as_deref(),
                    gateway: &gateway,
                },
            )?
        }
    };
    let mut stored = Stored {
        issuer: issuer.to_owned(),
        client_id,
        token_endpoint: discovery.token_endpoint,
        access_token: String::new(),
        refresh_token: None,
        expires_at: 0,
    };
    stored.update(answer, now());
    let refreshable = stored.refresh_token.is_some();
    let store = Store::locate()?;
    let mut entries = store.load()?;
    entries.insert(gateway.clone(), stored);
    store.save(&entries)?;
    eprintln!("Signed in to {gateway}.");
    if !refreshable {
        eprintln!("The provider issued no refresh token: sign in again when the token expires.");
    }
    eprintln!("For git: git config --global credential.{gateway}.helper \"tollgate credential\"");
    Ok(ExitCode::SUCCESS)
}

/// Refuses a plain-http `url` for `what`: tokens and refresh tokens go there. Loopback
/// addresses are the exception (a provider on the same machine, as in tests).
fn require_https(url: &str, what: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .map(|authority| match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        });
    match host {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        _ => Err(format!("{what} `{url}` is not https")),
    }
}

/// Asks the token endpoint every `interval` seconds until the person has signed in,
/// refused, or let the code expire (RFC 8628 section 3.5).
fn poll(
    http: &reqwest::blocking::Client,
    token_endpoint: &str,
    client_id: &str,
    device: &DeviceAuthorization,
) -> Result<TokenAnswer, String> {
    let mut interval = Duration::from_secs(device.interval.unwrap_or(5).max(1));
    let deadline = Instant::now() + Duration::from_secs(device.expires_in);
    loop {
        std::thread::sleep(interval);
        if Instant::now() > deadline {
            return Err(
                "the code expired before sign-in finished; run `tollgate login` again".into(),
            );
        }
        let request = http.post(token_endpoint).form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device.device_code.as_str()),
            ("client_id", client_id),
        ]);
        let refusal = match send_json(request, token_endpoint)? {
            Ok(answer) => return Ok(answer),
            Err(refusal) => refusal,
        };
        match refusal.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => return Err("sign-in was refused".into()),
            "expired_token" => {
                return Err(
                    "the code expired before sign-in finished; run `tollgate login` again".into(),
                )
            }
            _ => return Err(format!("the provider refused: {refusal}")),
        }
    }
}

fn get_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::blocking::Client,
    url: &str,
) -> Result<T, String> {
    send_json(http.get(url), url)?.map_err(|refusal| format!("{url}: {refusal}"))
}

fn post_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::blocking::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<T, String> {
    send_json(http.post(url).form(form), url)?.map_err(|refusal| format!("{url}: {refusal}"))
}

#[cfg(test)]
mod tests {
    use super::require_https;

    #[test]
    fn tokens_go_over_https_or_to_this_machine_only() {
        assert!(require_https("https://id.example.com", "the issuer").is_ok());
        assert!(require_https("http://127.0.0.1:8080/token", "the token endpoint").is_ok());
        assert!(require_https("http://localhost/token", "the token endpoint").is_ok());
        assert!(require_https("http://[::1]:9/token", "the token endpoint").is_ok());
        let refused = require_https("http://id.example.com", "the issuer").unwrap_err();
        assert_eq!(refused, "the issuer `http://id.example.com` is not https");
        assert!(require_https("http://127.0.0.1.example.com/", "x").is_err());
    }
}
