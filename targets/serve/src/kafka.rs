//! What serve's two Kafka sinks (webhook deliveries, audit records) share: the
//! `kafka://HOST:PORT/TOPIC` address, connecting to every partition of an existing topic,
//! placing each record where Kafka's default partitioner would, producing within a bound,
//! and the records' timestamp.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Every partition of `topic` at `broker`; the topic must exist and the broker answer
/// within [`TIMEOUT`].
pub async fn connect(broker: &str, topic: &str) -> Result<Topic, String> {
    let connect = async {
        let client = rskafka::client::ClientBuilder::new(vec![broker.to_owned()])
            .build()
            .await
            .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::Topic;

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
