//! What a broadcast carries to each session.

use bytes::Bytes;

use crate::concurrent::Shared;
use crate::topic::Topic;

/// One broadcast's topic and payload, shared by every mailbox it is queued in: a single
/// allocation per broadcast, its references to the recipients paid for in one step
/// (`concurrent::Prepaid`), and no clone of the topic or payload.
#[derive(Debug)]
pub(crate) struct Broadcast {
    pub(crate) topic: Topic,
    pub(crate) payload: Bytes,
}

/// A message received by a pull-form session ([`SessionReceiver`](crate::SessionReceiver)).
#[derive(Debug, Clone)]
pub struct Message {
    broadcast: Shared<Broadcast>,
    missed: u64,
}

impl Message {
    pub(crate) fn new(broadcast: Shared<Broadcast>, missed: u64) -> Self {
        Self { broadcast, missed }
    }

    /// The topic it was broadcast on.
    pub fn topic(&self) -> &Topic {
        &self.broadcast.topic
    }

    /// The payload, as broadcast.
    pub fn payload(&self) -> &Bytes {
        &self.broadcast.payload
    }

    /// How many messages the `drop_oldest` policy evicted from this session's mailbox since the
    /// previous message it received. Zero when nothing was missed.
    pub fn missed_before(&self) -> u64 {
        self.missed
    }

    /// Decodes the payload as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.broadcast.payload)
    }
}
