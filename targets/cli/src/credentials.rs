//! The tokens `tollgate login` obtained, kept per gateway in one JSON file only its owner
//! can read (`$TOLLGATE_CREDENTIALS`, else `$XDG_CONFIG_HOME/tollgate/credentials.json`,
//! else `~/.config/tollgate/credentials.json`), and `tollgate credential`, the git
//! credential helper that hands git a fresh access token for a gateway, refreshing it with
//! the refresh token when it has expired.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An access token with less left than this is refreshed before git gets it.
const FRESH_FOR_SECS: u64 = 30;

/// What a sign-in left for one gateway.
#[derive(Clone, Serialize, Deserialize)]
pub struct Stored {
    pub issuer: String,
    pub client_id: String,
    pub token_endpoint: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are never shown, not even in a debug print.
        f.debug_struct("Stored")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's answer to a grant.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// A provider's refusal (RFC 6749 section 5.2; RFC 8628 adds the device flow's codes).
#[derive(Deserialize)]
pub struct TokenRefusal {
    pub error: String,
    pub error_description: Option<String>,
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)?;
        match &self.error_description {
            Some(description) => write!(f, " ({description})"),
            None => Ok(()),
        }
    }
}

/// Sends `request` to the provider at `url`: `Ok(Ok(value))` for its JSON answer,
/// `Ok(Err(refusal))` when it refused as OAuth 2.0 providers do, `Err` when neither
/// could be had.
pub fn send_json<T: for<'de> Deserialize<'de>>(
    request: reqwest::blocking::RequestBuilder,
    url: &str,
) -> Result<Result<T, TokenRefusal>, String> {
    let answer = request.send().map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status();
    let text = answer.text().map_err(|e| format!("{url}: {e}"))?;
    if status.is_success() {
        return serde_json::from_str(&text)
            .map(Ok)
            .map_err(|e| format!("{url}: {e}"));
    }
    serde_json::from_str(&text)
        .map(Err)
        .map_err(|_| format!("{url} answered {status}"))
}

impl Stored {
    /// Takes in a token endpoint's answer received at `now`.
    pub fn update(&mut self, answer: TokenAnswer, now: u64) {
        self.access_token = answer.access_token;
        // Providers that rotate refresh tokens send a new one; others keep the old.
        if answer.refresh_token.is_some() {
            self.refresh_token = answer.refresh_token;
        }
        self.expires_at = now + answer.expires_in.unwrap_or(300);
    }

    /// Trades the refresh token for a new access token.
    fn refresh(&mut self, http: &reqwest::blocking::Client, now: u64) -> Result<(), String> {
        let refresh_token = self
            .refresh_token
            .clone()
            .ok_or("no refresh token was issued")?;
        let request = http.post(&self.token_endpoint).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", self.client_id.as_str()),
        ]);
        let answer: TokenAnswer = send_json(request, &self.token_endpoint)?
            .map_err(|refusal| format!("the provider refused the refresh: {refusal}"))?;
        self.update(answer, now);
        Ok(())
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `scheme://host[:port]` of a gateway URL, as git names it in the credential protocol.
pub fn gateway_key(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL (expected https://HOST)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(format!("`{url}`: expected an http or https URL"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(format!("`{url}`: expected scheme://HOST[:PORT]"));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// The credentials file.
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn locate() -> Result<Store, String> {
        let path = if let Some(path) = std::env::var_os("TOLLGATE_CREDENTIALS") {
            PathBuf::from(path)
        } else if let Some(config) = std::env::var_os("XDG_CONFIG_HOME") {
            PathBuf::from(config).join("tollgate/credentials.json")
        } else {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            PathBuf::from(home).join(".config/tollgate/credentials.json")
        };
        Ok(Store { path })
    }

    pub fn load(&self) -> Result<BTreeMap<String, Stored>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Writes `entries` beside the file, readable by its owner only, and renames it over.
    pub fn save(&self, entries: &BTreeMap<String, Stored>) -> Result<(), String> {
        let shown = self.path.display();
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut temp = self.path.as_os_str().to_owned();
        temp.push(".new");
        let text = serde_json::to_string_pretty(entries).map_err(|e| e.to_string())?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("{shown}: {e}"))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{shown}: {e}"))?;
        std::fs::rename(&temp, &self.path).map_err(|e| format!("{shown}: {e}"))
    }
}

/// `tollgate credential get|store|erase`: git's credential helper protocol on stdin and
/// stdout (`git help credential`). `get` answers with the gateway's access token, fresh;
/// `erase` (git's word that the token was refused) makes the next `get` refresh it;
/// `store` has nothing to do, since the tokens are this command's own.
pub fn helper(operation: &str) -> Result<ExitCode, String> {
    let mut attributes = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            attributes.insert(key.to_owned(), value.to_owned());
        }
    }
    let (Some(protocol), Some(host)) = (attributes.get("protocol"), attributes.get("host")) else {
        return Ok(ExitCode::SUCCESS);
    };
    let key = format!("{protocol}://{}", host.to_ascii_lowercase());
    let store = Store::locate()?;
    let mut entries = store.load()?;
    let Some(entry) = entries.get_mut(&key) else {
        // Not a gateway this user signed in to: let git ask elsewhere.
        return Ok(ExitCode::SUCCESS);
    };
    match operation {
        "get" => {
            let now = now();
            if entry.expires_at < now + FRESH_FOR_SECS {
                if let Err(e) = entry.refresh(&http_client()?, now) {
                    eprintln!(
                        "tollgate: the sign-in to {key} has expired ({e}); run `tollgate login {key}`"
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                let refreshed = entry.clone();
                store.save(&entries)?;
                print_credential(&refreshed);
            } else {
                print_credential(entry);
            }
        }
        "erase" => {
            // Only the token git was refused with: a refreshed one may already be stored.
            if attributes.get("password") == Some(&entry.access_token) {
                entry.expires_at = 0;
                store.save(&entries)?;
            }
        }
        "store" => {}
        other => return Err(format!("unknown credential operation `{other}`")),
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer to `get`: the access token as the password (the gateway reads a Basic
/// password as a bearer token), and when it expires, so git does not reuse it after.
fn print_credential(entry: &Stored) {
    print!(
        "username=tollgate\npassword={}\npassword_expiry_utc={}\n",
        entry.access_token, entry.expires_at
    );
}

/// The HTTP client for identity providers: no redirects (a token endpoint that redirects
/// is not followed with a refresh token in hand), a bounded wait.
pub fn http_client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::gateway_key;

    #[test]
    fn a_gateway_is_named_by_its_scheme_and_host_as_git_names_it() {
        assert_eq!(
            gateway_key("https://Git.Example.com/acme/app.git").as_deref(),
            Ok("https://git.example.com")
        );
        assert_eq!(
            gateway_key("http://127.0.0.1:8080").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert!(gateway_key("git.example.com").is_err());
        assert!(gateway_key("ssh://git.example.com").is_err());
        assert!(gateway_key("https://user@git.example.com").is_err());
    }
}
