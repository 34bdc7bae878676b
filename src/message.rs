//! What a broadcast carries to each session.

use bytes::Bytes;

use crate::sync::Shared;
use crate::topic::Topic;

/// One broadcast, shared by every mailbox it is queued in: a single allocation per broadcast,
/// its references to the recipients paid for in one step (`sync::Prepaid`), and no clone of
/// the topic or payload.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) topic: Topic,
    pub(crate) payload: Bytes,
}

/// A message received by a pull-form session ([`SessionReceiver`](crate::SessionReceiver)).
#[derive(Debug, Clone)]
pub struct Message {
    envelope: Shared<Envelope>,
    missed: u64,
}

impl Message {
    pub(crate) fn new(envelope: Shared<Envelope>, missed: u64) -> Self {
        Self { envelope, missed }
    }

    /// The topic it was broadcast on.
    pub fn topic(&self) -> &Topic {
        &self.envelope.topic
    }

    /// The payload, as broadcast.
    pub fn payload(&self) -> &Bytes {
        &self.envelope.payload
    }

    /// How many messages the `drop_oldest` policy evicted from this session's mailbox since the
    /// previous message it received. Zero when nothing was missed.
    pub fn missed_before(&self) -> u64 {
        self.missed
    }

    /// Decodes the payload as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.envelope.payload)
    }
}
