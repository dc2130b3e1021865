//! `tollgate login --browser`: the OAuth 2.0 Authorization Code grant with PKCE (RFC 7636)
//! on a loopback redirect, as native apps sign people in (RFC 8252): a one-request
//! listener on 127.0.0.1 receives the provider's redirect with the code, which is
//! exchanged, with the verifier only this process knows, for the tokens.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

use crate::credentials::{send_json, TokenAnswer};

/// How long the person has to sign in in the browser.
const SIGN_IN_WINDOW: Duration = Duration::from_secs(300);

/// What the flow needs from the provider and the client.
#[derive(Debug)]
pub struct Flow<'a> {
    pub authorization_endpoint: &'a str,
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub resource: Option<&'a str>,
    /// Shown before the browser opens, with the URL to open by hand.
    pub gateway: &'a str,
}

/// Signs the person in: shows (and tries to open) the provider's sign-in URL, waits for
/// the redirect to the loopback listener, checks its `state` and exchanges the code.
pub fn sign_in(http: &reqwest::blocking::Client, flow: &Flow<'_>) -> Result<TokenAnswer, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen on 127.0.0.1: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let state = random_text(16)?;
    let verifier = random_text(32)?;
    let challenge = Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()));
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", flow.client_id),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", flow.scope),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(resource) = flow.resource {
        query.push(("resource", resource));
    }
    let url = reqwest::Url::parse_with_params(flow.authorization_endpoint, &query)
        .map_err(|e| format!("{}: {e}", flow.authorization_endpoint))?;
    eprintln!("To sign in to {}, open {url}", flow.gateway);
    open_browser(url.as_str());

    let (code, returned_state) = receive_redirect(&listener)?;
    if returned_state != state {
        return Err(
            "the sign-in came back for another request (`state`); run `tollgate login` again"
                .into(),
        );
    }
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", flow.client_id),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(resource) = flow.resource {
        form.push(("resource", resource));
    }
    send_json(
        http.post(flow.token_endpoint).form(&form),
        flow.token_endpoint,
    )?
    .map_err(|refusal| format!("the provider refused the sign-in: {refusal}"))
}

/// `bytes` random bytes as base64url: a state or a PKCE verifier (43 characters from 32).
fn random_text(bytes: usize) -> Result<String, String> {
    let entropy = tollgate_host_kit::os_entropy().ok_or("the system's random source failed")?;
    Ok(Base64UrlUnpadded::encode_string(
        entropy.get(..bytes).unwrap_or(&entropy),
    ))
}

/// Opens `url` with `$BROWSER`, else the desktop's opener; a person without either opens
/// the URL shown by hand.
fn open_browser(url: &str) {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            }
            .into()
        });
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Waits for the provider's redirect (`GET /callback?code=...&state=...`), answers the
/// browser, and returns the code and state. Other requests (a favicon) are answered 404
/// and waited past.
fn receive_redirect(listener: &TcpListener) -> Result<(String, String), String> {
    let deadline = Instant::now() + SIGN_IN_WINDOW;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(
                        "no sign-in came back within 5 minutes; run `tollgate login` again".into(),
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(format!("the loopback listener failed: {e}")),
        };
        if let Some(answer) = callback(stream)? {
            return answer;
        }
    }
}

/// One request on the listener: `Some` outcome for the callback, `None` for anything else.
#[allow(clippy::type_complexity)]
fn callback(mut stream: TcpStream) -> Result<Option<Result<(String, String), String>>, String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("the browser's request: {e}"))?;
    let target = line.split(' ').nth(1).unwrap_or_default();
    let Some(query) = target.strip_prefix("/callback?") else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return Ok(None);
    };
    let params: Vec<(String, String)> = url_params(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let outcome = match (param("code"), param("state"), param("error")) {
        (_, _, Some(error)) => Err(format!(
            "the provider did not sign you in: {error}{}",
            param("error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )),
        (Some(code), Some(state), None) => Ok((code, state)),
        _ => Err("the provider came back without a code".into()),
    };
    let page = match &outcome {
        Ok(_) => "Signed in. You may close this tab and return to the terminal.",
        Err(_) => "Sign-in failed. See the terminal.",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    Ok(Some(outcome))
}

fn url_params(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://127.0.0.1/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}
