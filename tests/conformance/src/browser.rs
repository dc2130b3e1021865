//! Headless Chromium (Debian's `chromium`) driven over WebDriver (`chromium-driver`), for
//! tests of what people see: a page loaded, typed into, clicked, read and photographed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{free_port, Proc};

/// A chromedriver on 127.0.0.1 with one Chromium session, both stopped on drop.
#[derive(Debug)]
pub struct Browser {
    base: String,
    client: reqwest::blocking::Client,
    session: String,
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, kept off the
    /// network beyond what pages ask for (the machine's network is closed).
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Proc::start(
            "chromedriver",
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            port,
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        let session = call(
            &client,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(
                json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1000",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync"],
                }}}}),
            ),
        );
        Browser {
            base,
            client,
            session: session["sessionId"]
                .as_str()
                .expect("session id")
                .to_owned(),
            _driver: driver,
        }
    }

    fn session_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        call(&self.client, method, &url, body)
    }

    /// Opens `url` and waits for the page (after any redirects) to load.
    pub fn open(&self, url: &str) {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// Where the page is now.
    pub fn url(&self) -> String {
        self.session_call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn run(&self, script: &str) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text of the element with id `id`.
    pub fn text(&self, id: &str) -> String {
        self.run(&format!(
            "const e = document.getElementById('{id}'); return e ? e.textContent : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits up to 30 s for `script` to return true; `what` and the page's text explain a
    /// timeout.
    pub fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.run(script) != json!(true) {
            if Instant::now() >= deadline {
                let page = self.run("return document.body ? document.body.innerText : '';");
                panic!("{what}; at {}: {page}", self.url());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cookies the browser holds for the page's site, `HttpOnly` ones included (as
    /// WebDriver reports them: `name`, `value`, `httpOnly`, `secure`, `sameSite`, ...).
    pub fn cookies(&self) -> Vec<Value> {
        self.session_call(reqwest::Method::GET, "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG of the window, written to `file`.
    pub fn screenshot(&self, file: &Path) {
        use base64ct::Encoding;
        let png = self.session_call(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64ct::Base64::decode_vec(png.as_str().expect("screenshot")).expect("PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(file, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
    }
}

fn call(
    client: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url).timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let text = request
        .send()
        .expect("webdriver")
        .text()
        .expect("webdriver answer");
    let answer: Value = serde_json::from_str(&text).expect("webdriver JSON");
    assert!(
        answer["value"].get("error").is_none(),
        "webdriver {url}: {answer}"
    );
    answer["value"].clone()
}
