//! What every Kafka sink (webhook deliveries, audit records; serve and the Azure handler)
//! shares: the address (`kafka://` or, over TLS, `kafkas://HOST:PORT/TOPIC`, with SASL
//! credentials from the secrets), connecting to every partition of an existing topic,
//! placing each record where Kafka's default partitioner would, producing within a bound,
//! and the records' timestamp.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Credentials, SaslConfig};
use rskafka::record::Record;

/// How long a broker has to answer a connection or acknowledge a batch.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Where a Kafka sink writes, and how it signs in:
///
/// `kafka[s]://HOST:PORT/TOPIC[?sasl=MECHANISM&user=NAME&password=SECRET&ca=FILE]`
///
/// `kafkas` is TLS, verified against the web PKI roots or the PEM certificates in `ca`;
/// `sasl` is `plain`, `scram-sha-256` or `scram-sha-512`, with `user` and `password` the
/// name of a secret in the host's secrets (Azure Event Hubs: `sasl=plain`,
/// `user=$ConnectionString`, the connection string as the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub broker: String,
    pub topic: String,
    pub tls: bool,
    /// PEM certificates to trust instead of the web PKI roots.
    pub ca: Option<PathBuf>,
    pub sasl: Option<Sasl>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub user: String,
    /// The secret holding the password, by name.
    pub password_secret: String,
    /// Filled from the secrets by [`Address::resolve`].
    password: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl std::fmt::Debug for Sasl {
    /// Never the password itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password_secret", &self.password_secret)
            .finish_non_exhaustive()
    }
}

/// The address in `text`; `None` when it is not a Kafka address at all, `Some(Err)` when
/// it is one written wrong.
pub fn parse_address(text: &str) -> Option<Result<Address, String>> {
    let (tls, rest) = match (
        text.strip_prefix("kafka://"),
        text.strip_prefix("kafkas://"),
    ) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return None,
    };
    Some(parse(tls, rest).map_err(|why| {
        format!("`{text}`: {why} (expected kafka[s]://HOST:PORT/TOPIC[?sasl=plain|scram-sha-256|scram-sha-512&user=NAME&password=SECRET&ca=FILE])")
    }))
}

fn parse(tls: bool, rest: &str) -> Result<Address, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (broker, topic) = location
        .split_once('/')
        .filter(|(b, t)| !b.is_empty() && !t.is_empty() && !t.contains('/'))
        .ok_or("no HOST:PORT/TOPIC")?;
    let params: Vec<(String, String)> = url::Url::parse(&format!("kafka://x/?{query}"))
        .map_err(|e| e.to_string())?
        .query_pairs()
        .into_owned()
        .collect();
    let known = ["sasl", "user", "password", "ca"];
    for (i, (name, _)) in params.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown parameter `{name}`"));
        }
        if params.iter().skip(i + 1).any(|(other, _)| other == name) {
            return Err(format!("`{name}` given twice"));
        }
    }
    let one = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sasl = match one("sasl") {
        None => None,
        Some(mechanism) => {
            let mechanism = match mechanism.as_str() {
                "plain" => Mechanism::Plain,
                "scram-sha-256" => Mechanism::ScramSha256,
                "scram-sha-512" => Mechanism::ScramSha512,
                other => return Err(format!("unknown SASL mechanism `{other}`")),
            };
            let user = one("user").ok_or("SASL needs `user`")?;
            let password_secret =
                one("password").ok_or("SASL needs `password` (a secret's name)")?;
            let loopback = broker.starts_with("127.")
                || broker.starts_with("localhost:")
                || broker.starts_with("[::1]:");
            if mechanism == Mechanism::Plain && !tls && !loopback {
                return Err("SASL PLAIN sends the password as it is: use kafkas://".into());
            }
            Some(Sasl {
                mechanism,
                user,
                password_secret,
                password: None,
            })
        }
    };
    let ca = one("ca").map(PathBuf::from);
    if ca.is_some() && !tls {
        return Err("`ca` is for kafkas:// (TLS)".into());
    }
    Ok(Address {
        broker: broker.to_owned(),
        topic: topic.to_owned(),
        tls,
        ca,
        sasl,
    })
}

impl Address {
    /// Takes the SASL password from the host's secrets, by name.
    pub fn resolve(&mut self, secret: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(sasl) = &mut self.sasl {
            let password = secret(&sasl.password_secret).ok_or_else(|| {
                format!("Kafka SASL password: no secret `{}`", sasl.password_secret)
            })?;
            sasl.password = Some(password);
        }
        Ok(())
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for certificate in certificates {
                    let certificate =
                        certificate.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn sasl_config(&self) -> Result<Option<SaslConfig>, String> {
        let Some(sasl) = &self.sasl else {
            return Ok(None);
        };
        let password = sasl
            .password
            .clone()
            .ok_or("Kafka SASL password was not resolved from the secrets")?;
        let credentials = Credentials::new(sasl.user.clone(), password);
        Ok(Some(match sasl.mechanism {
            Mechanism::Plain => SaslConfig::Plain(credentials),
            Mechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            Mechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        }))
    }
}

/// A topic's partitions, each record produced to the one Kafka's default partitioner
/// picks: by the murmur2 hash of its key (so one repository's deliveries stay in order in
/// one partition, the one a Java producer would use for that key), or, without a key, the
/// next partition in turn for each batch.
pub struct Topic {
    partitions: Vec<PartitionClient>,
    next_unkeyed: AtomicUsize,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

/// Every partition of the address' topic; the topic must exist and the broker answer
/// (and take the TLS and SASL settings) within [`TIMEOUT`].
pub async fn connect(address: &Address) -> Result<Topic, String> {
    let (broker, topic) = (address.broker.as_str(), address.topic.as_str());
    let connect = async {
        // rskafka retries a failing connection forever by default: a deadline inside ours
        // lets its last error (an untrusted certificate, a refused password) be the one said.
        let mut builder = rskafka::client::ClientBuilder::new(vec![broker.to_owned()])
            .backoff_config(rskafka::BackoffConfig {
                deadline: Some(TIMEOUT.saturating_sub(Duration::from_secs(1))),
                ..Default::default()
            });
        if address.tls {
            builder = builder.tls_config(address.tls_config()?);
        }
        if let Some(sasl) = address.sasl_config()? {
            builder = builder.sasl_config(sasl);
        }
        let client = builder.build().await.map_err(|e| e.to_string())?;
        let listed = client.list_topics().await.map_err(|e| e.to_string())?;
        let ids = listed
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions)
            .ok_or_else(|| String::from("no such topic"))?;
        // Kafka numbers a topic's partitions 0..n; the partitioner counts on it.
        if ids.is_empty() || !ids.iter().copied().eq(0..ids.len() as i32) {
            return Err(format!("partitions {ids:?} are not numbered 0 to n-1"));
        }
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            partitions.push(
                client
                    .partition_client(topic.to_owned(), id, UnknownTopicHandling::Error)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Topic {
            partitions,
            next_unkeyed: AtomicUsize::new(0),
        })
    };
    tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| format!("Kafka broker {broker}: no answer"))?
        .map_err(|e: String| format!("Kafka topic `{topic}` at {broker}: {e}"))
}

impl Topic {
    /// The partition Kafka's default partitioner gives `key` among `count`.
    pub fn partition_of(key: &[u8], count: usize) -> usize {
        let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
        hash as usize % count.max(1)
    }

    /// Produces `records` and returns once the broker acknowledged every one, within
    /// [`TIMEOUT`]: each partition's share as one batch, the batches at once.
    pub async fn produce(&self, records: Vec<Record>) -> std::io::Result<()> {
        let count = self.partitions.len();
        let unkeyed = self.next_unkeyed.fetch_add(1, Ordering::Relaxed) % count;
        let mut batches: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for record in records {
            let partition = record
                .key
                .as_deref()
                .map_or(unkeyed, |key| Self::partition_of(key, count));
            batches.entry(partition).or_default().push(record);
        }
        let produced =
            futures_util::future::try_join_all(batches.into_iter().map(|(partition, batch)| {
                self.partitions[partition].produce(batch, Compression::NoCompression)
            }));
        match tokio::time::timeout(TIMEOUT, produced).await {
            Ok(Ok(_offsets)) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(_) => Err(std::io::Error::other(
                "the Kafka broker did not acknowledge in time",
            )),
        }
    }
}

/// A record of `value` stamped with the current time.
pub fn record(
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: std::collections::BTreeMap<String, Vec<u8>>,
) -> Record {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Record {
        key,
        value: Some(value),
        headers,
        timestamp: chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, millis)
            .single()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_address, Mechanism, Topic};

    #[test]
    fn addresses_say_where_and_how_to_sign_in() {
        let event_hubs = parse_address("kafkas://ns.servicebus.windows.net:9093/gogs?sasl=plain&user=%24ConnectionString&password=event-hubs")
            .expect("an address")
            .expect("valid");
        assert!(event_hubs.tls);
        assert_eq!(
            (event_hubs.broker.as_str(), event_hubs.topic.as_str()),
            ("ns.servicebus.windows.net:9093", "gogs")
        );
        let sasl = event_hubs.sasl.as_ref().expect("sasl");
        assert_eq!(
            (
                sasl.mechanism,
                sasl.user.as_str(),
                sasl.password_secret.as_str()
            ),
            (Mechanism::Plain, "$ConnectionString", "event-hubs")
        );
        let mut resolved = event_hubs.clone();
        resolved
            .resolve(|name| (name == "event-hubs").then(|| "Endpoint=sb://secret".to_owned()))
            .expect("resolved");
        assert!(!format!("{resolved:?}").contains("sb://secret"));
        let plain = parse_address("kafka://127.0.0.1:9092/audit")
            .expect("an address")
            .expect("valid");
        assert!(!plain.tls && plain.sasl.is_none() && plain.ca.is_none());
        assert!(parse_address("/var/log/audit.log").is_none());
        for (bad, why) in [
            (
                "kafka://broker.example:9092/t?sasl=plain&user=u&password=p",
                "use kafkas://",
            ),
            (
                "kafkas://b:9093/t?sasl=gssapi&user=u&password=p",
                "unknown SASL mechanism `gssapi`",
            ),
            (
                "kafkas://b:9093/t?sasl=plain&password=p",
                "SASL needs `user`",
            ),
            ("kafka://b:9092/t?ca=ca.pem", "`ca` is for kafkas://"),
            ("kafkas://b:9093/t?tls=1", "unknown parameter `tls`"),
            ("kafka://b:9092/a/b", "no HOST:PORT/TOPIC"),
            ("kafkas://b:9093/t?user=a&user=b", "`user` given twice"),
        ] {
            let error = parse_address(bad).expect("an address").expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        let mut address = event_hubs.clone();
        assert!(address
            .resolve(|_| None)
            .unwrap_err()
            .contains("no secret `event-hubs`"));
        address
            .resolve(|name| (name == "event-hubs").then(|| "Endpoint=sb://...".to_owned()))
            .expect("resolved");
        assert!(address.sasl_config().expect("sasl").is_some());
    }

    /// Kafka's own cases for its murmur2 (`UtilsTest.testMurmur2`), as signed 32-bit.
    #[test]
    fn keys_hash_as_kafkas_partitioner_hashes_them() {
        for (key, kafka) in [
            ("21", -973_932_308i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            let ours = murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED);
            assert_eq!(ours as i32, kafka, "{key}");
            let expected = (kafka & 0x7fff_ffff) as usize % 3;
            assert_eq!(Topic::partition_of(key.as_bytes(), 3), expected, "{key}");
        }
    }
}
