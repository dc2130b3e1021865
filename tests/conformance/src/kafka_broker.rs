//! A Kafka-compatible broker for the event tests: tansu with its in-memory engine on
//! 127.0.0.1 (behind Debian's stunnel for TLS, or on SQLite for SASL SCRAM users), one
//! topic made in it, and a client reading the topic back.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::{free_port, Proc};

/// tansu, a Kafka-compatible broker, on 127.0.0.1, holding one topic, and a client reading
/// it back.
pub struct KafkaTopic {
    pub broker: Proc,
    /// `kafka://HOST:PORT/TOPIC` (or `kafkas://...?ca=...` behind TLS), as the hosts take it.
    pub address: String,
    runtime: tokio::runtime::Runtime,
    partitions: Vec<rskafka::client::partition::PartitionClient>,
    /// The TLS front (stunnel) and its certificate's folder, when behind TLS.
    _tls: Option<(Proc, tempfile::TempDir)>,
    /// The broker's SQLite store, when it signs clients in.
    _store: Option<tempfile::TempDir>,
}

/// How clients reach the broker.
enum Access {
    Open,
    Tls,
    /// SASL SCRAM-SHA-256 or -512 as `user` with `password`; the hosts' address names the
    /// password by the secret `password_secret`.
    Scram {
        user: String,
        password: String,
        password_secret: String,
    },
}

impl std::fmt::Debug for KafkaTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTopic")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl KafkaTopic {
    pub fn start(topic: &str) -> KafkaTopic {
        Self::start_with_partitions(topic, 1)
    }

    pub fn start_with_partitions(topic: &str, count: i32) -> KafkaTopic {
        Self::start_broker(topic, count, Access::Open)
    }

    /// A topic reached only over TLS: tansu advertises the port of a TLS front (Debian's
    /// stunnel, with a certificate made here for 127.0.0.1), so every client connection,
    /// the host's and the reader's, goes through it.
    pub fn start_behind_tls(topic: &str) -> KafkaTopic {
        Self::start_broker(topic, 1, Access::Tls)
    }

    /// A topic reached only by signing in with SASL SCRAM as `user` (SHA-256 or -512)
    /// with `password`, which the hosts' address names as the secret `password_secret`.
    /// tansu keeps SCRAM users in its store and takes none while it requires sign-in, so
    /// it runs first without, on SQLite, to be given the user and the topic, then again on
    /// the same store with `--authentication`.
    pub fn start_with_scram(
        topic: &str,
        user: &str,
        password: &str,
        password_secret: &str,
    ) -> KafkaTopic {
        Self::start_broker(
            topic,
            1,
            Access::Scram {
                user: user.to_owned(),
                password: password.to_owned(),
                password_secret: password_secret.to_owned(),
            },
        )
    }

    fn start_broker(topic: &str, count: i32, access: Access) -> KafkaTopic {
        let port = free_port();
        let front_port = free_port();
        let tls = matches!(access, Access::Tls);
        let advertised = if tls { front_port } else { port };
        let store =
            matches!(access, Access::Scram { .. }).then(|| tempfile::tempdir().expect("tempdir"));
        let tansu = |authentication: bool| {
            let mut command = Command::new("tansu");
            command
                .args([
                    "broker",
                    "--listener-url",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .args([
                    "--advertised-listener-url",
                    &format!("tcp://127.0.0.1:{advertised}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match &store {
                // tansu opens a SQLite path relative to where it runs.
                Some(dir) => command
                    .current_dir(dir.path())
                    .args(["--storage-engine", "sqlite://tansu.db"]),
                None => command.args(["--storage-engine", "memory://tansu/"]),
            };
            if authentication {
                command.arg("--authentication");
            }
            Proc::start("tansu", &mut command, port)
        };
        let mut broker = tansu(false);
        let front = tls.then(|| tls_front(front_port, port));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bootstrap = format!("127.0.0.1:{advertised}");
        let ca = front.as_ref().map(|(_, dir)| dir.path().join("ca.pem"));
        let client = |sasl: Option<rskafka::client::SaslConfig>| {
            let mut builder = rskafka::client::ClientBuilder::new(vec![bootstrap.clone()]);
            if let Some(ca) = &ca {
                builder = builder.tls_config(trusting(ca));
            }
            if let Some(sasl) = sasl {
                builder = builder.sasl_config(sasl);
            }
            builder.build()
        };
        runtime.block_on(async {
            client(None)
                .await
                .expect("kafka client")
                .controller_client()
                .expect("controller")
                .create_topic(topic, count, 1, 5_000)
                .await
                .expect("create topic");
        });
        let mut sasl = None;
        if let Access::Scram { user, password, .. } = &access {
            for mechanism in ["scram256", "scram512"] {
                let made = Command::new("tansu")
                    .args(["user", "create", "--broker"])
                    .arg(format!("tcp://127.0.0.1:{port}"))
                    .args(["--mechanism", mechanism, user, password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("tansu user create");
                assert!(made.success(), "tansu user create --mechanism {mechanism}");
            }
            broker.terminate();
            broker = tansu(true);
            sasl = Some(rskafka::client::SaslConfig::ScramSha256(
                rskafka::client::Credentials::new(user.clone(), password.clone()),
            ));
        }
        let partitions = runtime.block_on(async {
            let client = client(sasl).await.expect("kafka client");
            let mut partitions = Vec::new();
            for id in 0..count {
                partitions.push(
                    client
                        .partition_client(
                            topic,
                            id,
                            rskafka::client::partition::UnknownTopicHandling::Retry,
                        )
                        .await
                        .expect("partition"),
                );
            }
            partitions
        });
        let address = match (&ca, &access) {
            (Some(ca), _) => format!("kafkas://{bootstrap}/{topic}?ca={}", ca.display()),
            (
                None,
                Access::Scram {
                    user,
                    password_secret,
                    ..
                },
            ) => format!(
                "kafka://{bootstrap}/{topic}?sasl=scram-sha-256&user={user}&password={password_secret}"
            ),
            (None, _) => format!("kafka://{bootstrap}/{topic}"),
        };
        KafkaTopic {
            broker,
            address,
            runtime,
            partitions,
            _tls: front,
            _store: store,
        }
    }

    /// The JSON values of the first partition's records, once there are `count` of them
    /// (or after 10 s).
    pub fn json_values(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let values: Vec<serde_json::Value> = self
                .records(500)
                .iter()
                .filter_map(|r| serde_json::from_slice(r.record.value.as_deref()?).ok())
                .collect();
            if values.len() >= count || std::time::Instant::now() > deadline {
                return values;
            }
        }
    }

    /// Every record in the topic's first partition, waiting up to `max_wait_ms` for one.
    pub fn records(&self, max_wait_ms: i32) -> Vec<rskafka::record::RecordAndOffset> {
        self.records_in(0, max_wait_ms)
    }

    /// Every record in partition `id`, in order, waiting up to `max_wait_ms` for one.
    pub fn records_in(&self, id: usize, max_wait_ms: i32) -> Vec<rskafka::record::RecordAndOffset> {
        let (records, _high_watermark) = self
            .runtime
            .block_on(self.partitions[id].fetch_records(0, 1..1_000_000, max_wait_ms))
            .expect("fetch");
        records
    }
}

/// stunnel on `port` in front of `backend`, its certificate for 127.0.0.1 issued by a CA
/// made here with openssl, in the folder it returns (`ca.pem` is the CA to trust).
fn tls_front(port: u16, backend: u16) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        at("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tollgate test CA",
            "-keyout",
            &at("ca.key"),
            "-out",
            &at("ca.pem"),
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &at("key.pem"),
            "-out",
            &at("leaf.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &at("leaf.csr"),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &at("leaf.ext"),
            "-out",
            &at("cert.pem"),
        ],
    ] {
        let made = Command::new("openssl")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(made.success(), "openssl {args:?} failed");
    }
    let config = dir.path().join("stunnel.conf");
    std::fs::write(
        &config,
        format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("stunnel config");
    let front = Proc::start(
        "stunnel",
        Command::new("stunnel")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
    );
    (front, dir)
}

/// A TLS client configuration trusting only the certificate in `ca`.
fn trusting(ca: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(certificate.expect("certificate")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
