//! Gogs webhooks through `tollgate serve`, with deliveries made byte for byte as Gogs makes
//! them (headers, lowercase hex HMAC-SHA256 over the JSON payload, `json.MarshalIndent`
//! layout, form deliveries signed over the `payload` field): a signed push is relayed to
//! the sink (a file, a Kafka topic: plain, over TLS, or signed in with SASL SCRAM) exactly
//! once; forged, replayed, oversize, wrong-repository and wrong-event deliveries are
//! refused and never reach it; a sink that cannot take it answers 503, and one that
//! refuses serve's TLS or sign-in stops its start. And audit records shipped to a Kafka
//! topic, failing closed with `--audit-required` when the broker goes away, and those of a
//! real clone and push read back from it.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tollgate_conformance::gogs_webhook::{
    assert_bad_deliveries_refused, deliver, push_payload, sign, ACCEPTED_DELIVERY, JSON, SECRET,
    WEBHOOK,
};
use tollgate_conformance::kafka_broker::KafkaTopic;
use tollgate_conformance::process::{faulty_origin, free_port, git_ok, Proc};
use tollgate_conformance::world::{git_with, text, World};

const ORIGIN: &str = r#"
[origin]
git = "service-token"
service_user = "svc"
service_token_secret = "svc-token"
"#;

struct Gateway {
    port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
    _serve: Proc,
    _origin: Proc,
}

impl Gateway {
    fn start(sink: Option<&Path>) -> Gateway {
        let sink = sink.map(|p| p.display().to_string());
        Self::start_to(sink.as_deref())
    }

    /// A gateway whose `--webhook-sink` is `sink` (default: `events.jsonl` in its folder).
    fn start_to(sink: Option<&str>) -> Gateway {
        Self::start_with(sink, None, &[])
    }

    /// [`Gateway::start_to`], auditing to `audit` (default: `audit.log` in its folder),
    /// with `extra` flags.
    fn start_with(sink: Option<&str>, audit: Option<&str>, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin_port = free_port();
        let origin = faulty_origin(origin_port);
        let (port, admin_port) = (free_port(), free_port());
        let sink = sink.map_or_else(
            || dir.path().join("events.jsonl").display().to_string(),
            str::to_owned,
        );
        let serve = Proc::start(
            "tollgate serve",
            serve_command(dir.path(), &sink)
                .arg("--audit-log")
                .arg(audit.map_or_else(
                    || dir.path().join("audit.log").display().to_string(),
                    str::to_owned,
                ))
                .args(extra)
                .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
                .stdout(Stdio::null())
                .stderr(File::create(dir.path().join("serve.stderr")).expect("stderr")),
            port,
        );
        Gateway {
            port,
            admin_port,
            dir,
            _serve: serve,
            _origin: origin,
        }
    }

    /// Delivers `body` as Gogs does: POST with its delivery, event and signature headers.
    fn deliver(
        &self,
        event: &str,
        delivery: &str,
        content_type: &str,
        body: &str,
        signature: &str,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/_tollgate/hooks/gogs", self.port);
        deliver(&url, event, delivery, content_type, body, signature)
    }

    fn sunk(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("envelope JSON"))
            .collect()
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }
}

const DELIVERY: &str = ACCEPTED_DELIVERY;

/// `tollgate serve` with the webhook policy and its secrets written into `dir`, relaying
/// to `sink`.
fn serve_command(dir: &Path, sink: &str) -> Command {
    std::fs::write(dir.join("policy.toml"), format!("{ORIGIN}{WEBHOOK}")).expect("policy");
    std::fs::write(
        dir.join("secrets.json"),
        format!(
            r#"{{"svc-token": "t", "hook-secret": "{SECRET}", "{KAFKA_PASSWORD_SECRET}": "{KAFKA_PASSWORD}"}}"#
        ),
    )
    .expect("secrets");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(["serve", "--policy"])
        .arg(dir.join("policy.toml"))
        .arg("--secrets")
        .arg(dir.join("secrets.json"))
        .arg("--webhook-sink")
        .arg(sink);
    command
}

/// Delivers the signed push of acme/app to `gateway` and checks that it reached `kafka`'s
/// topic once, keyed by its repository.
fn push_reaches_the_topic(gateway: &Gateway, kafka: &KafkaTopic) {
    let payload = push_payload("acme/app");
    let (status, answer) =
        gateway.deliver("push", DELIVERY, JSON, &payload, &sign(&payload, SECRET));
    assert_eq!(status, 202, "{answer}");
    let records = kafka.records(1_000);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].record.key.as_deref(),
        Some(b"acme/app".as_slice())
    );
}

/// Asserts that serve relaying to `address` refuses to start, and that it says why
/// (`why` in its message about the webhook sink).
fn serve_refuses_the_sink(address: &str, why: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = serve_command(dir.path(), address)
        .args(["--audit-log", "/dev/null", "--origin", "http://127.0.0.1:9"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("serve");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{address}: serve started");
    assert!(
        stderr.contains("webhook sink: ") && stderr.contains(why),
        "{address}: {stderr}"
    );
}

#[test]
fn a_signed_push_is_relayed_once_and_nothing_else_reaches_the_sink() {
    let gateway = Gateway::start(None);
    let payload = push_payload("acme/app");
    let signature = sign(&payload, SECRET);

    let (status, answer) = gateway.deliver("push", DELIVERY, JSON, &payload, &signature);
    assert_eq!(
        (status, &answer["result"]),
        (202, &Value::from("accepted")),
        "{answer}"
    );
    let sunk = gateway.sunk();
    assert_eq!(sunk.len(), 1, "{sunk:?}");
    let envelope = &sunk[0];
    assert_eq!(envelope["delivery"], DELIVERY);
    assert_eq!(envelope["event"], "push");
    assert_eq!(envelope["repository"], "acme/app");
    assert_eq!(envelope["ref"], "refs/heads/main");
    assert_eq!(
        envelope["after"],
        "9f3c1d2e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    );
    assert_eq!(envelope["pusher"], "alice");
    assert_eq!(envelope["webhook"], "gogs-events");
    assert_eq!(
        envelope["payload"],
        serde_json::from_str::<Value>(&payload).expect("payload")
    );

    // Each of these is refused and never reaches the sink.
    let url = format!("http://127.0.0.1:{}/_tollgate/hooks/gogs", gateway.port);
    let refused = assert_bad_deliveries_refused(&url);
    assert_eq!(
        gateway.sunk().len(),
        1,
        "a refused delivery reached the sink"
    );

    // A form delivery, signed over its `payload` field as Gogs signs it.
    let form = format!("payload={}", form_encode(&payload));
    let (status, answer) = gateway.deliver(
        "push",
        "5f0e8a52-0000-4000-8000-000000000008",
        "application/x-www-form-urlencoded",
        &form,
        &signature,
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(gateway.sunk().len(), 2);

    let metrics = gateway.metrics();
    for line in [
        "tollgate_webhook_deliveries_total{status=\"202\"} 2\n",
        "tollgate_webhook_deliveries_total{status=\"401\"} 3\n",
        "tollgate_webhook_deliveries_total{status=\"409\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line}in:\n{metrics}");
    }
    // Every delivery is audited, with its delivery id and what came of it (the log's
    // writer takes a moment).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let audit =
            std::fs::read_to_string(gateway.dir.path().join("audit.log")).unwrap_or_default();
        let records: Vec<Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r.get("webhook").is_some())
            .collect();
        // The accepted push, the refused ones and the form delivery.
        if records.len() > refused + 1 || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(records.len(), refused + 2, "{records:?}");
    assert!(records
        .iter()
        .any(|r| r["delivery"] == DELIVERY && r["reason"] == "duplicate" && r["status"] == 409));
}

#[test]
fn a_sink_that_cannot_write_answers_503_and_forgets_the_delivery() {
    let gateway = Gateway::start(Some(Path::new("/dev/full")));
    let payload = push_payload("acme/app");
    let signature = sign(&payload, SECRET);
    for _ in 0..2 {
        // Not a duplicate the second time: a delivery the sink did not take is not "seen".
        let (status, answer) = gateway.deliver("push", DELIVERY, JSON, &payload, &signature);
        assert_eq!(
            (status, answer["result"].as_str()),
            (503, Some("sink_unavailable")),
            "{answer}"
        );
    }
}

/// `application/x-www-form-urlencoded` encoding, as Go's `url.Values.Encode` writes it.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Deliveries to a broker reached over TLS (`kafkas://`, the certificate trusted through
/// `ca`), as Azure Event Hubs' Kafka endpoint is: relayed and read back over TLS. Without
/// the certificate's CA (the web PKI roots) or without TLS, serve refuses to start rather
/// than run without its sink.
#[test]
fn deliveries_reach_a_topic_over_tls_and_an_untrusted_broker_stops_the_start() {
    let kafka = KafkaTopic::start_behind_tls("gogs-events");
    let gateway = Gateway::start_to(Some(&kafka.address));
    push_reaches_the_topic(&gateway, &kafka);

    let untrusted = kafka.address.split_once('?').expect("ca").0.to_owned();
    serve_refuses_the_sink(&untrusted, "certificate");
    serve_refuses_the_sink(&untrusted.replacen("kafkas://", "kafka://", 1), "");
}

/// The SASL password the SCRAM broker knows for `tollgate`, and the secret naming it.
const KAFKA_PASSWORD: &str = "kafka-scram-password-1";
const KAFKA_PASSWORD_SECRET: &str = "kafka-password";

/// Deliveries to a broker that signs clients in with SASL SCRAM-SHA-256, the password
/// taken by name from `--secrets`: relayed and read back. A user the broker does not
/// know, or a wrong password, stops serve's start with the broker's refusal.
#[test]
fn deliveries_reach_a_topic_behind_scram_sign_in_and_a_refused_one_stops_the_start() {
    let kafka = KafkaTopic::start_with_scram(
        "gogs-events",
        "tollgate",
        KAFKA_PASSWORD,
        KAFKA_PASSWORD_SECRET,
    );
    let gateway = Gateway::start_to(Some(&kafka.address));
    push_reaches_the_topic(&gateway, &kafka);

    let stranger = kafka.address.replace("user=tollgate", "user=mallory");
    serve_refuses_the_sink(&stranger, "Sasl handshake failed");
    let wrong_password = kafka.address.replace(KAFKA_PASSWORD_SECRET, "hook-secret");
    serve_refuses_the_sink(&wrong_password, "Sasl handshake failed");
    assert_eq!(kafka.records(200).len(), 1);
}

#[test]
fn deliveries_spread_over_partitions_by_repository_as_kafkas_partitioner_places_them() {
    const PARTITIONS: usize = 3;
    let kafka = KafkaTopic::start_with_partitions("gogs-events", PARTITIONS as i32);
    let gateway = Gateway::start_to(Some(&kafka.address));
    let repositories = ["acme/app", "acme/docs", "acme/web", "acme/api", "acme/ops"];
    // Three pushes to each repository, interleaved.
    for round in 0..3 {
        for (r, repository) in repositories.iter().enumerate() {
            let payload = push_payload(repository)
                .replace("refs/heads/main", &format!("refs/heads/round-{round}"));
            let delivery = format!("5f0e8a52-0000-4000-8000-0000000{round}{r:04}");
            let (status, answer) =
                gateway.deliver("push", &delivery, JSON, &payload, &sign(&payload, SECRET));
            assert_eq!(status, 202, "{answer}");
        }
    }
    // Every delivery is in the partition Kafka's partitioner gives its repository, each
    // repository's in the order they came.
    let mut seen = Vec::new();
    for partition in 0..PARTITIONS {
        for record in kafka.records_in(partition, 500) {
            let record = record.record;
            let repository = String::from_utf8(record.key.clone().expect("key")).expect("utf-8");
            assert_eq!(
                tollgate_host_kit::kafka::Topic::partition_of(repository.as_bytes(), PARTITIONS),
                partition,
                "{repository}"
            );
            let envelope: Value =
                serde_json::from_slice(record.value.as_deref().expect("value")).expect("json");
            assert_eq!(envelope["repository"], repository.as_str());
            seen.push((
                repository,
                envelope["ref"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    assert_eq!(seen.len(), 15, "{seen:?}");
    for repository in repositories {
        let refs: Vec<&str> = seen
            .iter()
            .filter(|(r, _)| r == repository)
            .map(|(_, git_ref)| git_ref.as_str())
            .collect();
        assert_eq!(
            refs,
            [
                "refs/heads/round-0",
                "refs/heads/round-1",
                "refs/heads/round-2"
            ],
            "{repository}"
        );
    }
    let used: std::collections::BTreeSet<usize> = repositories
        .iter()
        .map(|r| tollgate_host_kit::kafka::Topic::partition_of(r.as_bytes(), PARTITIONS))
        .collect();
    assert!(
        used.len() > 1,
        "every repository hashed to one partition: {used:?}"
    );
}

#[test]
fn deliveries_reach_a_kafka_topic_once_keyed_by_repository_and_a_stopped_broker_is_a_503() {
    let mut kafka = KafkaTopic::start("gogs-events");

    let gateway = Gateway::start_to(Some(&kafka.address));
    let payload = push_payload("acme/app");
    let signature = sign(&payload, SECRET);
    let (status, answer) = gateway.deliver("push", DELIVERY, JSON, &payload, &signature);
    assert_eq!(status, 202, "{answer}");
    let (status, _) = gateway.deliver("push", DELIVERY, JSON, &payload, &signature);
    assert_eq!(status, 409, "a replay");
    let forged = payload.replace("alice", "mallory");
    let (status, _) = gateway.deliver(
        "push",
        "5f0e8a52-0000-4000-8000-00000000000a",
        JSON,
        &forged,
        &signature,
    );
    assert_eq!(status, 401, "a forgery");

    // Exactly the one delivery is in the topic, keyed by its repository.
    let records = kafka.records(1_000);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0].record;
    assert_eq!(record.key.as_deref(), Some(b"acme/app".as_slice()));
    assert_eq!(
        record.headers.get("delivery").map(Vec::as_slice),
        Some(DELIVERY.as_bytes())
    );
    let envelope: Value =
        serde_json::from_slice(record.value.as_deref().expect("value")).expect("envelope");
    assert_eq!(envelope["delivery"], DELIVERY);
    assert_eq!(envelope["pusher"], "alice");
    assert_eq!(envelope["payload"]["repository"]["full_name"], "acme/app");

    // The broker gone: the delivery cannot be relayed, so Gogs hears 503, not 202.
    kafka.broker.terminate();
    let (status, answer) = gateway.deliver(
        "push",
        "5f0e8a52-0000-4000-8000-00000000000b",
        JSON,
        &payload,
        &signature,
    );
    assert_eq!(
        (status, answer["result"].as_str()),
        (503, Some("sink_unavailable")),
        "{answer}"
    );
}

#[test]
fn audit_records_reach_a_kafka_topic_and_audit_required_refuses_without_it() {
    let mut kafka = KafkaTopic::start("tollgate-audit");
    let gateway = Gateway::start_with(None, Some(&kafka.address), &["--audit-required"]);
    let get = |path: &str| {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", gateway.port))
            .header("X-Request-Id", "audit-via-kafka-1")
            .timeout(Duration::from_secs(20))
            .send()
            .expect("answer")
            .status()
            .as_u16()
    };
    assert_eq!(get("/acme/ok.git/info/refs?service=git-upload-pack"), 200);
    assert_eq!(get("/other/x.git/info/refs?service=git-upload-pack"), 401);

    // Both decisions (and the forwarded one's outcome) are in the topic.
    let records = kafka.json_values(3);
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["allowed", "missing_credential"], "{records:?}");
    assert!(records
        .iter()
        .all(|r| r["request_id"] == "audit-via-kafka-1" || r.get("outcome").is_some()));
    assert!(
        records.iter().any(|r| r.get("outcome").is_some()),
        "{records:?}"
    );

    // The broker gone, audit records cannot be kept: with --audit-required an allowed
    // request is refused (once the writer has seen a batch fail), never forwarded unrecorded.
    kafka.broker.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = get("/acme/ok.git/info/refs?service=git-upload-pack");
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "allowed requests were never refused"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = gateway.metrics();
    assert!(
        metrics.contains("tollgate_audit_refused_total ")
            && !metrics.contains("tollgate_audit_refused_total 0\n"),
        "{metrics}"
    );
}

/// The audit trail of real git traffic, shipped to a topic: a clone and a push by alice
/// through serve (the real git origin, a token from the real identity provider), then
/// every decision and outcome read back from the broker.
#[test]
fn audit_records_of_a_real_git_push_are_read_back_from_the_topic() {
    let kafka = KafkaTopic::start("tollgate-audit");
    let world = World::start();
    let tollgate = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let (_serve, port) = world.serve(
        tollgate,
        &["--audit-log", &kafka.address, "--audit-required"],
    );
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let alice = format!("Bearer {}", world.token("alice", "es256"));
    let url = format!("http://127.0.0.1:{port}/acme/app.git");
    let out = git_with(&world.home(), &alice, &work, &["clone", "-q", &url, "app"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(work.join("app/pushed.txt"), "through the edge\n").expect("write");
    git_ok(&world.home(), &work.join("app"), &["add", "pushed.txt"]);
    git_ok(
        &world.home(),
        &work.join("app"),
        &["commit", "-q", "-m", "audited"],
    );
    let out = git_with(
        &world.home(),
        &alice,
        &work.join("app"),
        &["push", "-q", "origin", "main"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The push's decision (alice, write, the grant that allowed it) and its outcome (the
    // origin's 200, the pack's bytes) share an id in the topic.
    let push = |records: &[Value]| -> Option<(Value, Value)> {
        let decided = records
            .iter()
            .find(|r| r["method"] == "POST" && r["path"] == "/acme/app.git/git-receive-pack")?;
        let outcome = records
            .iter()
            .find(|r| r["id"] == decided["id"] && r.get("outcome").is_some())?;
        Some((decided.clone(), outcome["outcome"].clone()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (records, found) = loop {
        let records: Vec<Value> = kafka
            .records(500)
            .iter()
            .filter_map(|r| serde_json::from_slice(r.record.value.as_deref()?).ok())
            .collect();
        let found = push(&records);
        if found.is_some() || std::time::Instant::now() > deadline {
            break (records, found);
        }
    };
    let (decided, outcome) = found.unwrap_or_else(|| panic!("no push in {records:?}"));
    assert_eq!(decided["allow"], true, "{decided}");
    assert_eq!(decided["identity"]["user"], "alice", "{decided}");
    assert_eq!(decided["identity"]["via"], "jwt", "{decided}");
    assert_eq!(decided["access"], "write", "{decided}");
    assert_eq!(decided["repo"], "acme/app", "{decided}");
    assert!(
        decided["rule"]
            .as_str()
            .is_some_and(|r| r.starts_with("grant:")),
        "{decided}"
    );
    assert_eq!(outcome["origin_status"], 200, "{outcome}");
    assert_eq!(outcome["failure"], Value::Null, "{outcome}");
    assert!(
        outcome["bytes_from_client"].as_u64().unwrap_or(0) > 0,
        "{outcome}"
    );
    // The clone before it is there too: every request of both commands was recorded.
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/acme/app.git/git-upload-pack" && r["allow"] == true),
        "{records:?}"
    );
    let pushed = git_ok(
        &world.home(),
        &world.path("repos/acme/app.git"),
        &["show", "main:pushed.txt"],
    );
    assert_eq!(pushed, "through the edge\n");
}
