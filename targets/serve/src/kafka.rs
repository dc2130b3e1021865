//! What serve's two Kafka sinks (webhook deliveries, audit records) share: the
//! `kafka://HOST:PORT/TOPIC` address, connecting to partition 0 of an existing topic,
//! producing a batch within a bound, and the records' timestamp.

use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

/// How long a broker has to answer a connection or acknowledge a batch.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `(broker, topic)` of a `kafka://HOST:PORT/TOPIC` address; `None` when `text` is not a
/// Kafka address at all, `Some(Err)` when it is one written wrong.
pub fn parse_address(text: &str) -> Option<Result<(String, String), String>> {
    let rest = text.strip_prefix("kafka://")?;
    Some(match rest.split_once('/') {
        Some((broker, topic))
            if !broker.is_empty() && !topic.is_empty() && !topic.contains('/') =>
        {
            Ok((broker.to_owned(), topic.to_owned()))
        }
        _ => Err(format!("`{text}`: expected kafka://HOST:PORT/TOPIC")),
    })
}

/// Partition 0 of `topic` at `broker`, which must exist and answer within [`TIMEOUT`].
pub async fn connect(broker: &str, topic: &str) -> Result<PartitionClient, String> {
    let connect = async {
        let client = rskafka::client::ClientBuilder::new(vec![broker.to_owned()])
            .build()
            .await?;
        client
            .partition_client(topic.to_owned(), 0, UnknownTopicHandling::Error)
            .await
    };
    tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| format!("Kafka broker {broker}: no answer"))?
        .map_err(|e| format!("Kafka topic `{topic}` at {broker}: {e}"))
}

/// Produces `records` and returns once the broker acknowledged them, within [`TIMEOUT`].
pub async fn produce(partition: &PartitionClient, records: Vec<Record>) -> std::io::Result<()> {
    match tokio::time::timeout(
        TIMEOUT,
        partition.produce(records, Compression::NoCompression),
    )
    .await
    {
        Ok(Ok(_offsets)) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
        Err(_) => Err(std::io::Error::other(
            "the Kafka broker did not acknowledge in time",
        )),
    }
}

/// A record of `value` stamped with the current time.
pub fn record(
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: std::collections::BTreeMap<String, Vec<u8>>,
) -> Record {
    let millis = i64::try_from(crate::proxy::now().as_nanos() / 1_000_000).unwrap_or(i64::MAX);
    Record {
        key,
        value: Some(value),
        headers,
        timestamp: chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, millis)
            .single()
            .unwrap_or_default(),
    }
}
