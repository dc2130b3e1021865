//! The Azure custom handler over HTTP, as API Management calls it (decisions, and Gogs
//! webhook deliveries relayed to a file or a Kafka topic); and the APIM policy XML.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use policy_core::cases::TestCase;
use serde_json::{json, Value};
use tollgate_conformance::gogs_webhook::{
    assert_bad_deliveries_refused, deliver, push_payload, sign, ACCEPTED_DELIVERY, JSON, SECRET,
    WEBHOOK,
};
use tollgate_conformance::kafka_broker::KafkaTopic;
use tollgate_conformance::process::{free_port, redis_server, repo, Proc};
use tollgate_conformance::{build_wasm_module, corpus_secrets, run, Target, MIN_CORPUS_CASES};

struct Handler {
    port: u16,
    proc: Proc,
    dir: tempfile::TempDir,
}

impl Handler {
    fn start(policy: &str, rate: &str) -> Handler {
        Self::start_with(policy, rate, &[])
    }

    /// [`Handler::start`] with more environment; its stderr goes to `stderr` in its
    /// directory.
    fn start_with(policy: &str, rate: &str, env: &[(&str, &str)]) -> Handler {
        let module = build_wasm_module();
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_file = dir.path().join("policy.toml");
        std::fs::write(&policy_file, policy).expect("policy");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr");
        let port = free_port();
        let proc = Proc::start(
            "azure handler",
            Command::new(env!("CARGO_BIN_EXE_tollgate-azure-handler"))
                .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
                .env("TOLLGATE_POLICY_FILE", &policy_file)
                .env("TOLLGATE_MODULE", &module)
                .env(
                    "TOLLGATE_SECRETS",
                    serde_json::to_string(&corpus_secrets()).expect("json"),
                )
                .env("TOLLGATE_RATE", rate)
                .env("TOLLGATE_TEST_ENDPOINTS", "true")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(stderr),
            port,
        );
        Handler { port, proc, dir }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Replaces the policy file the way deployment tools do: written beside, renamed over.
    fn write_policy(&self, policy: &str) {
        let temp = self.dir.path().join("policy.toml.new");
        std::fs::write(&temp, policy).expect("policy");
        std::fs::rename(&temp, self.dir.path().join("policy.toml")).expect("rename");
    }

    /// The decision on an anonymous clone of acme/ok.
    fn clone_decision(&self) -> Value {
        let (status, answer) = self.ask(&json!({
            "request": {"path": "/acme/ok.git/info/refs", "query": "service=git-upload-pack"},
        }));
        assert_eq!(status, 200, "{answer}");
        answer["decision"].clone()
    }

    /// Waits up to 20 s for `done` to hold of the handler's stderr.
    fn await_stderr(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.stderr()) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ask(&self, body: &Value) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/api/decide", self.port))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("handler request");
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().expect("body")).expect("JSON answer"),
        )
    }
}

/// The corpus through the handler, with exact rate limits in the process
/// (`TOLLGATE_RATE=memory`) or in Redis (`redis://...`).
struct Azure {
    rate: String,
    handler: Option<Handler>,
    case: u64,
}

impl Azure {
    fn with_rate(rate: &str) -> Azure {
        Azure {
            rate: rate.to_owned(),
            handler: None,
            case: 0,
        }
    }
}

impl Target for Azure {
    fn name(&self) -> &'static str {
        "azure handler"
    }
    fn load(&mut self, source: &str, _file: &str) -> Result<(), String> {
        self.handler = None;
        self.handler = Some(Handler::start(source, &self.rate));
        Ok(())
    }
    fn reset(&mut self) {
        self.case += 1;
    }
    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let handler = self.handler.as_ref().ok_or("no policy loaded")?;
        let (status, answer) = handler.ask(&json!({
            "request": case.request,
            "now": case.now.as_secs(),
            "rate_namespace": format!("case-{}", self.case),
            "exchange": case.exchange,
        }));
        if status != 200 {
            return Err(format!("handler answered {status}: {answer}"));
        }
        let d = &answer["decision"];
        if d.get("token_request").is_some() {
            // A sign-in callback's token request, shown because the case gave no answer.
            return Ok(d.clone());
        }
        // The flat fields APIM reads must agree with the decision they summarise.
        if answer["allow"] != d["allow"]
            || answer["status"] != d["status"]
            || answer["reason"] != d["reason"]
        {
            return Err(format!("flat fields disagree with the decision: {answer}"));
        }
        Ok(d.clone())
    }
}

/// The response headers of a denial (challenges, Retry-After, a sign-in's redirect and
/// cookie) that apim-policy.xml's return-response sets from the handler's answer.
const RETURNED_HEADERS: [&str; 6] = [
    "www-authenticate",
    "lfs-authenticate",
    "retry-after",
    "location",
    "set-cookie",
    "cache-control",
];

/// A browser sign-in under APIM: the redirect's location and login cookie reach the
/// answer APIM returns, and the handler draws the sign-in's randomness itself (two
/// anonymous page views get two states) even when the caller names some.
#[test]
fn sign_in_redirects_carry_the_handlers_own_randomness() {
    let policy = std::fs::read_to_string(repo().join("tests/corpus/sso.toml")).expect("sso corpus");
    let handler = Handler::start(&policy, "apim");
    let page = json!({ "request": { "path": "/acme/app" }, "now": 1_767_225_600u64 });
    let state_of = |answer: &Value| -> String {
        assert_eq!(
            (answer["allow"].clone(), answer["status"].clone()),
            (json!(false), json!(302)),
            "{answer}"
        );
        let location = answer["response_headers"]["location"]
            .as_str()
            .expect("location");
        assert!(
            location.starts_with(
                "https://idp.conformance.test/auth?response_type=code&client_id=tollgate-web&"
            ),
            "{location}"
        );
        let cookie = answer["response_headers"]["set-cookie"]
            .as_str()
            .expect("set-cookie");
        assert!(
            cookie.starts_with("tollgate_session=l1.")
                && cookie.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
            "{cookie}"
        );
        assert_eq!(answer["response_headers"]["cache-control"], "no-store");
        let state = location.split("&state=").nth(1).expect("state");
        state.split('&').next().unwrap_or_default().to_owned()
    };
    let (_, first) = handler.ask(&page);
    let (_, second) = handler.ask(&page);
    assert_ne!(state_of(&first), state_of(&second));
    // The corpus' fixed randomness is taken only from a test harness, never from APIM's
    // description of a live request.
    let production = Handler::start_with(&policy, "apim", &[("TOLLGATE_TEST_ENDPOINTS", "false")]);
    let named = json!({ "request": { "path": "/acme/app", "entropy": "00".repeat(32) } });
    let (_, answer) = production.ask(&named);
    let (_, again) = production.ask(&named);
    assert_ne!(state_of(&answer), state_of(&again));
}

#[test]
fn handler_passes_the_corpus() {
    let report = run(&mut Azure::with_rate("memory"));
    report.assert_clean(MIN_CORPUS_CASES);
}

/// The same corpus with every rate limit's state in a real `redis-server`; then two
/// handlers sharing it enforce one limit, and Redis going away fails closed.
#[test]
fn handler_with_redis_passes_the_corpus_and_shares_limits() {
    let redis_port = free_port();
    let mut redis = redis_server(redis_port);
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    run(&mut Azure::with_rate(&url)).assert_clean(MIN_CORPUS_CASES);

    // CI's quota is 3 a minute: over two handlers, 3 pass and the 4th waits 20 s.
    let policy =
        std::fs::read_to_string(repo().join("examples/policy.toml")).expect("example policy");
    let handlers = [Handler::start(&policy, &url), Handler::start(&policy, &url)];
    let ci = json!({ "request": { "path": "/acme/app.git/info/refs", "headers": { "Authorization": "token ci-secret-key-0001" } }, "now": 1_767_225_600u64 });
    let answers: Vec<Value> = (0..4).map(|i| handlers[i % 2].ask(&ci).1).collect();
    let allowed: Vec<bool> = answers.iter().map(|a| a["allow"] == true).collect();
    assert_eq!(allowed, [true, true, true, false], "{answers:?}");
    assert_eq!(answers[3]["reason"], "rate_limited");
    assert_eq!(answers[3]["response_headers"]["retry-after"], "20");
    assert_eq!(
        answers[0]["rate_limits"],
        json!([]),
        "the handler enforced it, not APIM"
    );

    redis.terminate();
    let (_, down) = handlers[0].ask(&ci);
    assert_eq!(down["status"], 503, "{down}");
    assert_eq!(down["reason"], "rate_store_unavailable");
}

fn example_request(file: &str) -> Value {
    let text =
        std::fs::read_to_string(repo().join("examples/requests").join(file)).expect("request");
    serde_json::from_str(&text).expect("request JSON")
}

#[test]
fn apim_mode_answers_what_the_policy_xml_reads() {
    let policy =
        std::fs::read_to_string(repo().join("examples/policy.toml")).expect("example policy");
    let handler = Handler::start(&policy, "apim");
    let now = 1_767_225_600u64;

    // Allowed: origin credential, identity, strip list; people's limit goes to APIM.
    let (status, allowed) =
        handler.ask(&json!({ "request": example_request("alice-clone.json"), "now": now }));
    assert_eq!(status, 200);
    assert_eq!(allowed["allow"], true);
    assert_eq!(allowed["identity"], "alice");
    // No X-Request-Id from the client: the handler's own id, also in the audit record;
    // a client's usable one is kept.
    let request_id = allowed["request_id"].as_str().expect("request_id");
    assert!(!request_id.is_empty(), "{allowed}");
    let marker = format!("\"request_id\":\"{request_id}\"");
    handler.await_stderr("no audit record with the request id", |e| {
        e.contains(&marker)
    });
    let mut traced = example_request("alice-clone.json");
    traced["headers"]["X-Request-Id"] = json!("trace-7f3a");
    let (_, traced) = handler.ask(&json!({ "request": traced, "now": now }));
    assert_eq!(traced["request_id"], "trace-7f3a", "{traced}");
    let expected = format!("Basic {}", base64_of("alice:placeholder"));
    assert_eq!(allowed["origin_authorization"], expected);
    assert_eq!(
        allowed["rate_limits"],
        json!([{ "key": "people/user:alice", "calls": 600, "renewal_period": 60 }])
    );
    assert!(allowed["strip"]
        .as_array()
        .expect("strip")
        .contains(&json!("cookie")));

    // A web page: the reverse-proxy user, and the client's cookies without Gogs' sign-in
    // cookies, which the XML sets after deleting the client's `Cookie`.
    let mut page = example_request("alice-clone.json");
    page["path"] = json!("/acme/app/src/master");
    page["query"] = json!("");
    page["headers"]["Cookie"] = json!("lang=en-US; i_like_gogs=bob-session; _csrf=abc");
    let (_, web) = handler.ask(&json!({ "request": page, "now": now }));
    assert_eq!(web["allow"], true, "{web}");
    assert_eq!(web["origin_user"], "alice");
    assert_eq!(web["origin_authorization"], "");
    assert_eq!(web["origin_cookie"], "lang=en-US; _csrf=abc");
    assert!(web["strip"]
        .as_array()
        .expect("strip")
        .contains(&json!("cookie")));
    assert_eq!(allowed["origin_cookie"], "");

    // CI's quota (3 a minute) goes to APIM as it stands, and so does the limit every
    // authenticated caller is under: both apply.
    let ci = json!({ "request": { "path": "/acme/app.git/info/refs", "headers": { "Authorization": "token ci-secret-key-0001" } }, "now": now });
    let (_, ci_answer) = handler.ask(&ci);
    assert_eq!(
        ci_answer["rate_limits"],
        json!([
            { "key": "ci/user:ci-bot", "calls": 3, "renewal_period": 60 },
            { "key": "people/user:ci-bot", "calls": 600, "renewal_period": 60 }
        ])
    );
    // APIM counts, so the handler itself admits every time.
    for _ in 0..5 {
        assert_eq!(handler.ask(&ci).1["allow"], true);
    }

    // Denied: status, challenge and body for return-response.
    let (_, denied) = handler.ask(&json!({ "request": { "path": "/acme/app.git/info/refs", "query": "service=git-upload-pack" }, "now": now }));
    assert_eq!(denied["allow"], false);
    assert_eq!(denied["status"], 401);
    assert_eq!(
        denied["response_headers"]["www-authenticate"],
        "Basic realm=\"Gogs\""
    );
    assert_eq!(denied["body"], "authentication required for `acme/app`\n");
    let (_, lfs) = handler.ask(&json!({ "request": { "method": "POST", "path": "/acme/app.git/info/lfs/objects/batch" }, "now": now }));
    assert_eq!(
        lfs["response_headers"]["lfs-authenticate"],
        "Basic realm=\"Gogs\""
    );

    // Every field and challenge header the XML reads is one the handler answers with.
    let xml =
        std::fs::read_to_string(repo().join("azure-apim/apim-policy.xml")).expect("policy XML");
    let doc = roxmltree::Document::parse(&xml).expect("apim-policy.xml is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "policies");
    let tags: BTreeSet<&str> = root
        .descendants()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    for tag in [
        "inbound",
        "send-request",
        "set-url",
        "choose",
        "return-response",
        "set-header",
        "rate-limit-by-key",
    ] {
        assert!(tags.contains(tag), "the policy has no <{tag}>");
    }
    let set_url = root
        .descendants()
        .find(|n| n.has_tag_name("set-url"))
        .and_then(|n| n.text())
        .unwrap_or_default();
    assert!(
        set_url.ends_with("/api/decide"),
        "send-request goes to {set_url}"
    );
    let header_names: BTreeSet<String> = root
        .descendants()
        .filter(|n| n.has_tag_name("set-header"))
        .filter_map(|n| n.attribute("name").map(str::to_ascii_lowercase))
        .collect();
    for name in [
        "authorization",
        "x-webauth-user",
        "proxy-authorization",
        "cookie",
    ]
    .into_iter()
    .chain(RETURNED_HEADERS)
    {
        assert!(
            header_names.contains(name),
            "the policy never sets or deletes `{name}`"
        );
    }
    // One rate-limit-by-key per limit the handler may hand over, each reading its own.
    let limiters: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("rate-limit-by-key"))
        .collect();
    assert_eq!(
        limiters.len(),
        3,
        "apim-policy.xml counts up to XML_RATE_LIMITS (3) limits"
    );
    for (i, limiter) in limiters.iter().enumerate() {
        assert!(limiter
            .attribute("counter-key")
            .is_some_and(|k| k.contains(&format!("[\"rate_limits\"][{i}][\"key\"]"))));
    }
    let mut fields = BTreeSet::new();
    for piece in xml.split("[\"").skip(1) {
        if let Some(name) = piece.split('"').next() {
            fields.insert(name.to_owned());
        }
    }
    fields.remove("tollgate");
    fields.remove("tollgateResponse");
    // Every header an answer strips is one the XML deletes.
    let deleted: BTreeSet<String> = root
        .descendants()
        .filter(|n| n.has_tag_name("set-header") && n.attribute("exists-action") == Some("delete"))
        .filter_map(|n| n.attribute("name"))
        .map(str::to_ascii_lowercase)
        .collect();
    for answer in [&allowed, &web] {
        for name in answer["strip"].as_array().expect("strip") {
            let name = name.as_str().expect("header name");
            assert!(
                deleted.contains(name),
                "the handler strips `{name}`, which the policy XML never deletes"
            );
        }
    }
    // Gateways may read `_` as `-`, and the client's address is the gateway's to say: every
    // spelling of the identity and address headers goes, and APIM sets the address itself.
    for name in ["x-webauth-user", "x-real-ip", "x-forwarded-for"] {
        let parts: Vec<&str> = name.split('-').collect();
        for separators in 0..(1u32 << (parts.len() - 1)) {
            let mut spelling = String::from(parts[0]);
            for (i, part) in parts.iter().enumerate().skip(1) {
                spelling.push(if separators & (1 << (i - 1)) != 0 {
                    '_'
                } else {
                    '-'
                });
                spelling.push_str(part);
            }
            let handled =
                deleted.contains(&spelling) || (spelling == name && header_names.contains(name));
            assert!(
                handled,
                "the policy XML lets a client's `{spelling}` through"
            );
        }
    }
    assert!(
        deleted.contains("forwarded"),
        "the policy XML lets a client's `Forwarded` through"
    );
    for name in ["X-Real-IP", "X-Forwarded-For"] {
        let set = root.descendants().find(|n| {
            n.has_tag_name("set-header")
                && n.attribute("name") == Some(name)
                && n.attribute("exists-action") == Some("override")
        });
        let value = set
            .and_then(|n| n.descendants().find(|v| v.has_tag_name("value")))
            .and_then(|v| v.text());
        assert_eq!(
            value,
            Some("@(context.Request.IpAddress)"),
            "{name} is not set from the client's address"
        );
    }
    let answers = [&allowed, &denied, &lfs];
    for field in &fields {
        let known = answers.iter().any(|a| a.get(field).is_some())
            || ["key", "calls", "renewal_period"].contains(&field.as_str())
            || RETURNED_HEADERS.contains(&field.as_str());
        assert!(
            known,
            "the policy XML reads `{field}`, which the handler never answers"
        );
    }
    for field in [
        "allow",
        "status",
        "identity",
        "origin_authorization",
        "origin_user",
        "origin_cookie",
        "strip",
        "response_headers",
        "content_type",
        "body",
        "rate_limits",
    ] {
        assert!(
            fields.contains(field),
            "the policy XML ignores the handler's `{field}`"
        );
    }
}

const OPEN: &str = r#"
[origin]
git = "service-token"
service_user = "tollgate-svc"
service_token_secret = "gogs-service"

[[grant]]
who = "*"
repos = "acme/*"
access = "read"

[[test]]
name = "anyone clones acme/ok"
request = { path = "/acme/ok.git/info/refs", query = "service=git-upload-pack" }
expect = { allow = true }
"#;

/// OPEN, with acme/ok closed and a case saying so.
const CLOSED: &str = r#"
[[grant]]
name = "close-ok"
who = "*"
repos = "acme/ok"
access = "read"
effect = "deny"
"#;

#[test]
fn a_policy_file_is_reloaded_on_change_and_on_sighup_once_its_tests_pass() {
    // The watch: an edit is put in place within seconds.
    let watched = Handler::start_with(OPEN, "memory", &[("TOLLGATE_POLICY_WATCH_SECS", "1")]);
    let open = watched.clone_decision();
    assert_eq!(open["allow"], true, "{open}");
    watched.write_policy(&format!(
        "{}{CLOSED}",
        OPEN.replace("expect = { allow = true }", "expect = { allow = false }")
    ));
    watched.await_stderr("no reload on change", |e| {
        e.contains("policy reloaded (file change)")
    });
    let closed = watched.clone_decision();
    assert_eq!(
        (&closed["allow"], &closed["rule"]),
        (&json!(false), &json!("grant:close-ok")),
        "{closed}"
    );
    assert_ne!(closed["policy_revision"], open["policy_revision"]);

    // SIGHUP only (no watch). A policy whose own case fails is refused, and the old one
    // keeps deciding; one that passes is put in place.
    let signalled = Handler::start_with(OPEN, "memory", &[("TOLLGATE_POLICY_WATCH_SECS", "0")]);
    let hangup = |handler: &Handler| {
        let status = Command::new("kill")
            .args(["-HUP", &handler.proc.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signalled.write_policy(&format!("{OPEN}{CLOSED}"));
    hangup(&signalled);
    signalled.await_stderr("no refusal", |e| {
        e.contains("policy reload (SIGHUP) refused")
    });
    let stderr = signalled.stderr();
    assert!(stderr.contains("1 of 1 test cases fail"), "{stderr}");
    assert!(stderr.contains("anyone clones acme/ok"), "{stderr}");
    assert_eq!(
        signalled.clone_decision()["policy_revision"],
        open["policy_revision"]
    );
    assert_eq!(signalled.clone_decision()["allow"], true);

    signalled.write_policy(&format!(
        "{}{CLOSED}",
        OPEN.replace("expect = { allow = true }", "expect = { allow = false }")
    ));
    hangup(&signalled);
    signalled.await_stderr("no reload on SIGHUP", |e| {
        e.contains("policy reloaded (SIGHUP)")
    });
    assert_eq!(
        signalled.clone_decision()["policy_revision"],
        closed["policy_revision"]
    );
    assert_eq!(signalled.clone_decision()["allow"], false);
}

/// APIM sets header names only as literals, and the XML's reverse-proxy header is
/// X-WEBAUTH-USER: with any other `user_header` the client's copy of that header would
/// reach Gogs untouched, so the handler refuses to start.
#[test]
fn a_user_header_the_xml_cannot_handle_stops_the_handler() {
    let policy =
        std::fs::read_to_string(repo().join("examples/policy.toml")).expect("example policy");
    let custom = policy.replacen(
        "[origin]\n",
        "[origin]\nuser_header = \"X-Remote-User\"\n",
        1,
    );
    assert_ne!(custom, policy, "the example policy has an [origin] table");
    let stderr = handler_refuses_to_start(&custom);
    assert!(
        stderr.contains("origin.user_header `x-remote-user` cannot be used under API Management"),
        "{stderr}"
    );
}

#[test]
fn a_bad_policy_stops_the_handler_with_its_position() {
    let stderr = handler_refuses_to_start("[gateway]\nrelm = \"x\"\n");
    assert!(
        stderr.contains("TOLLGATE_POLICY:2:1: unknown field `relm`"),
        "{stderr}"
    );
}

/// Starts the handler on `policy`, asserts that it exits with status 1 instead of serving
/// (killing it after a minute if it serves), and returns what it wrote to stderr.
fn handler_refuses_to_start(policy: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-azure-handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
        .env("TOLLGATE_POLICY_FILE", &file)
        .env("TOLLGATE_MODULE", build_wasm_module())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run handler");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for handler") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the handler started serving instead of refusing the policy");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("handler stderr");
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

fn base64_of(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The policy the webhook tests start the handler on: the shared `[[webhook]]` with an
/// origin that needs only a service token.
fn webhook_policy() -> String {
    format!(
        "[origin]\ngit = \"service-token\"\nservice_user = \"svc\"\nservice_token_secret = \"svc-token\"\n{WEBHOOK}"
    )
}

/// A handler relaying the shared webhook's deliveries to `sink`, with its secret and
/// `env`.
fn webhook_handler(sink: &str, env: &[(&str, &str)]) -> Handler {
    let secrets = json!({"svc-token": "t", "hook-secret": SECRET}).to_string();
    let mut all = vec![
        ("TOLLGATE_SECRETS", secrets.as_str()),
        ("TOLLGATE_WEBHOOK_SINK", sink),
    ];
    all.extend_from_slice(env);
    Handler::start_with(&webhook_policy(), "memory", &all)
}

impl Handler {
    /// Where apim-webhook-policy.xml forwards deliveries to the shared webhook's path.
    fn webhook_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/api/webhook/_tollgate/hooks/gogs",
            self.port
        )
    }

    /// Delivers the signed push of acme/app as delivery `id`, as APIM forwards it.
    fn push(&self, id: &str) -> (u16, Value) {
        let payload = push_payload("acme/app");
        let signature = sign(&payload, SECRET);
        deliver(&self.webhook_url(), "push", id, JSON, &payload, &signature)
    }

    /// The delivery audit records the handler wrote to stderr, once there are `count`
    /// (its audit writer takes a moment), or after 10 s.
    fn delivery_audits(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<Value> = self
                .stderr()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r.get("webhook").is_some())
                .collect();
            if records.len() >= count || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Deliveries as APIM forwards them (the body and Gogs' headers as they came): a signed
/// push is relayed once, every bad delivery is refused and never reaches the sink, each
/// is audited, and a path with no `[[webhook]]` is a 404.
#[test]
fn webhook_deliveries_are_verified_and_relayed_once() {
    let sink_dir = tempfile::tempdir().expect("tempdir");
    let sink = sink_dir.path().join("events.jsonl");
    let handler = webhook_handler(&sink.display().to_string(), &[]);
    let sunk = || -> Vec<Value> {
        std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("envelope JSON"))
            .collect()
    };
    let payload = push_payload("acme/app");
    let (status, answer) = handler.push(ACCEPTED_DELIVERY);
    assert_eq!((status, answer["result"].as_str()), (202, Some("accepted")));
    let envelopes = sunk();
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
    assert_eq!(envelopes[0]["delivery"], ACCEPTED_DELIVERY);
    assert_eq!(envelopes[0]["repository"], "acme/app");
    assert_eq!(envelopes[0]["webhook"], "gogs-events");
    assert_eq!(
        envelopes[0]["payload"],
        serde_json::from_str::<Value>(&payload).expect("payload")
    );

    let refused = assert_bad_deliveries_refused(&handler.webhook_url());
    assert_eq!(sunk().len(), 1, "a refused delivery reached the sink");
    let audits = handler.delivery_audits(refused + 1);
    assert_eq!(audits.len(), refused + 1, "{audits:?}");
    assert!(audits.iter().any(|r| r["delivery"] == ACCEPTED_DELIVERY
        && r["reason"] == "accepted"
        && r["repository"] == "acme/app"));
    assert!(audits
        .iter()
        .any(|r| r["delivery"] == ACCEPTED_DELIVERY && r["reason"] == "duplicate"));

    let elsewhere = format!("http://127.0.0.1:{}/api/webhook/acme/app", handler.port);
    let (status, answer) = deliver(&elsewhere, "push", "x", JSON, &payload, "");
    assert_eq!(status, 404, "{answer}");
    assert_eq!(sunk().len(), 1);

    // A reloaded policy without the webhook takes no more deliveries at its path.
    let policy = webhook_policy();
    handler.write_policy(&policy[..policy.find("[[webhook]]").expect("a webhook")]);
    handler.await_stderr("no reload", |e| e.contains("policy reloaded (file change)"));
    let (status, _) = handler.push("5f0e8a52-0000-4000-8000-000000000042");
    assert_eq!(status, 404);
    assert_eq!(sunk().len(), 1);
}

/// Event Hubs' place taken by a Kafka-compatible broker: a delivery is produced once,
/// keyed by repository, before the 202; with the broker gone Gogs gets a 503, and the
/// delivery is not remembered, so a redelivery can go through.
#[test]
fn webhook_deliveries_reach_a_kafka_topic_and_a_stopped_broker_is_a_503() {
    let mut kafka = KafkaTopic::start("gogs-events");
    let handler = webhook_handler(&kafka.address, &[]);
    let (status, answer) = handler.push(ACCEPTED_DELIVERY);
    assert_eq!((status, answer["result"].as_str()), (202, Some("accepted")));
    let records = kafka.records(1_000);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0].record;
    assert_eq!(record.key.as_deref(), Some(b"acme/app".as_slice()));
    assert_eq!(
        record.headers.get("delivery").map(Vec::as_slice),
        Some(ACCEPTED_DELIVERY.as_bytes())
    );
    let envelope: Value =
        serde_json::from_slice(record.value.as_deref().expect("value")).expect("envelope");
    assert_eq!(envelope["event"], "push");
    assert_eq!(envelope["repository"], "acme/app");

    kafka.broker.terminate();
    let again = "5f0e8a52-0000-4000-8000-000000000099";
    for _ in 0..2 {
        let (status, answer) = handler.push(again);
        assert_eq!(
            (status, answer["result"].as_str()),
            (503, Some("sink_unavailable")),
            "{answer}"
        );
    }
}

/// Audit records shipped to a Kafka topic (`TOLLGATE_AUDIT_LOG`), as serve ships them;
/// with `TOLLGATE_AUDIT_REQUIRED=true` and the broker gone, an allowed request is
/// refused (once the writer has seen a batch fail), never forwarded unrecorded.
#[test]
fn audit_records_reach_a_kafka_topic_and_audit_required_refuses_without_it() {
    let mut kafka = KafkaTopic::start("tollgate-audit");
    let handler = webhook_handler(
        "stdout",
        &[
            ("TOLLGATE_AUDIT_LOG", kafka.address.as_str()),
            ("TOLLGATE_AUDIT_REQUIRED", "true"),
        ],
    );
    let clone_of = |repo: &str| {
        handler.ask(&json!({
            "request": {"path": format!("/{repo}.git/info/refs"), "query": "service=git-upload-pack"},
        }))
    };
    let (status, allowed) = clone_of("acme/ok");
    assert_eq!(
        (status, &allowed["allow"]),
        (200, &json!(true)),
        "{allowed}"
    );
    let (_, refused) = clone_of("other/x");
    assert_eq!(refused["reason"], "missing_credential", "{refused}");

    let records = kafka.json_values(2);
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["allowed", "missing_credential"], "{records:?}");
    assert!(
        records.iter().all(|r| r["path"].as_str().is_some()),
        "{records:?}"
    );

    kafka.broker.terminate();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let (status, answer) = clone_of("acme/ok");
        assert_eq!(status, 200, "{answer}");
        if answer["allow"] == json!(false) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "allowed requests were never refused"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        (&refusal["status"], &refusal["reason"]),
        (&json!(503), &json!("audit_unavailable")),
        "{refusal}"
    );
    assert_eq!(refusal["response_headers"]["retry-after"], "1");
    assert_eq!(refusal["origin_authorization"], "");
}

/// apim-webhook-policy.xml forwards a delivery untouched to the function's webhook route
/// (the path after `/api/webhook` is the `[[webhook]]` path), and the function routes it.
#[test]
fn the_webhook_policy_xml_forwards_deliveries_as_they_came() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let xml = std::fs::read_to_string(format!("{root}/apim-webhook-policy.xml")).expect("xml");
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let named = |name: &str| -> Vec<roxmltree::Node<'_, '_>> {
        doc.descendants().filter(|n| n.has_tag_name(name)).collect()
    };
    let backend = named("set-backend-service");
    assert_eq!(backend.len(), 1);
    assert_eq!(
        backend[0].attribute("base-url"),
        Some("{{tollgate-function-url}}")
    );
    let rewrite = named("rewrite-uri");
    assert_eq!(rewrite.len(), 1);
    assert_eq!(
        rewrite[0].attribute("template"),
        Some("@(\"/api/webhook\" + context.Request.OriginalUrl.Path)")
    );
    assert_eq!(rewrite[0].attribute("copy-unmatched-params"), Some("false"));
    let key = named("set-header");
    assert!(key.iter().any(|h| {
        h.attribute("name") == Some("x-functions-key")
            && h.children()
                .any(|c| c.has_tag_name("value") && c.text() == Some("{{tollgate-function-key}}"))
    }));
    // The signature is over the exact bytes: nothing may rewrite the body or drop a header.
    assert!(named("set-body").is_empty());
    assert!(key
        .iter()
        .all(|h| h.attribute("exists-action") != Some("delete")));
    assert_eq!(named("forward-request").len(), 1);

    let function: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/function/webhook/function.json"))
            .expect("function.json"),
    )
    .expect("JSON");
    assert_eq!(function["bindings"][0]["route"], "webhook/{*path}");
    assert_eq!(function["bindings"][0]["methods"], json!(["post"]));
}
