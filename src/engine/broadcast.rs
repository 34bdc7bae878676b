//! The broadcast path: a lock-free pass over the topic's subscribers, one push per session, a
//! chunk of sessions at a time; then, under `block`, the wait for full mailboxes.

use std::future::Future;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::close_reason::CloseReason;
use crate::concurrent::{Prepaid, Shared};
use crate::config::{DeliveryRule, OverflowPolicy};
use crate::error::Result;
use crate::message::Broadcast;
use crate::stats::{Counters, DropReason, Tally};
use crate::sync::Arc;
use crate::topic::{check_payload, check_topic};

use super::claimed::ClaimedDeliveries;
use super::mailbox::{Full, RoomOutcome};
use super::session::Session;
use super::{Engine, Fanout};

/// One broadcast's tallies, added to the shared counters when it ends, even if the broadcast
/// future is dropped while a `block` policy waits: then the sessions still waited for count as
/// `drop_newest` (their message was never queued), so the accounting identity holds.
struct Publication<'a> {
    counters: &'a Counters,
    tally: Tally,
    /// Blocked sessions not yet resolved.
    unresolved: u64,
}

impl Drop for Publication<'_> {
    fn drop(&mut self) {
        for _ in 0..self.unresolved {
            self.tally.drop(DropReason::DropNewest);
        }
        self.counters.add_tally(&self.tally);
    }
}

/// Sessions a `block` broadcast still has to wait for, after the lock-free pass.
struct Blocked {
    broadcast: Shared<Broadcast>,
    rule: DeliveryRule,
    sessions: SmallVec<[Arc<Session>; 4]>,
}

/// A broadcast's payload, made a [`Bytes`] only if the topic has subscribers here: a borrowed
/// one is cloned then, so a broadcast no local session receives (one for other instances)
/// costs no clone, and no promotion of a `Vec`-backed payload to a shared one.
pub(crate) trait Payload: AsRef<[u8]> {
    fn into_bytes(self) -> Bytes;
}

impl Payload for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl Payload for &Bytes {
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl Engine {
    pub(super) async fn publish(
        &self,
        topic: &str,
        payload: impl Payload,
        sender: Option<&Arc<Session>>,
    ) -> Result<Fanout> {
        self.check_running()?;
        let limits = &self.inner.config.limits;
        check_topic(topic, limits)?;
        check_payload(payload.as_ref(), limits)?;
        let mut publication = Publication {
            counters: &self.inner.counters,
            tally: Tally::default(),
            unresolved: 0,
        };
        if let Some(blocked) = self.fan_out(topic, payload, sender, &mut publication.tally) {
            publication.unresolved = blocked.sessions.len() as u64;
            self.wait_for_blocked(blocked, &mut publication).await;
        }
        let tally = publication.tally;
        if tally.dropped_total() > 0 {
            tracing::debug!(
                topic,
                recipients = tally.recipients,
                dropped = tally.dropped_total(),
                disconnects = tally.disconnects,
                "broadcast dropped messages"
            );
        }
        Ok(Fanout {
            recipients: tally.recipients as usize,
            queued: tally.queued as usize,
            dropped: tally.dropped_total() as usize,
        })
    }

    /// The lock-free pass: one push per subscriber, a chunk of subscribers at a time (claimed,
    /// written, fenced once: `claimed`). Returns the sessions a `block` policy must wait for.
    fn fan_out(
        &self,
        topic: &str,
        payload: impl Payload,
        sender: Option<&Arc<Session>>,
        tally: &mut Tally,
    ) -> Option<Blocked> {
        self.inner
            .topics
            .with_entry(topic, |entry| {
                // One reference per subscriber paid for at once. A reference a policy did not
                // queue is given back by its own decrement where it is dropped; the unissued
                // ones (the skipped sender's, or more than the set's gauge counted) in one
                // decrement when `broadcast` drops.
                let mut broadcast = Prepaid::new(
                    Broadcast {
                        topic: entry.name.clone(),
                        payload: payload.into_bytes(),
                    },
                    entry.subscribers.len(),
                );
                let rule = entry.rule;
                let mut blocked = SmallVec::new();
                entry.subscribers.for_each_chunk(|members| {
                    // Each claim below is a locked instruction, which lets no later load start
                    // before it: without this, the chunk's misses would be taken one by one.
                    for session in members.clone() {
                        session.prefetch_for_broadcast();
                    }
                    let mut claimed = ClaimedDeliveries::new();
                    for session in members {
                        if sender.is_some_and(|s| Arc::ptr_eq(s, session)) {
                            continue;
                        }
                        tally.recipients += 1;
                        if dropped_as_closed(session, tally) {
                            continue;
                        }
                        match session.mailbox.try_claim(broadcast.issue(), rule.max_queued) {
                            Ok(claim) => claimed.hold(session, claim),
                            Err(Full(message)) => {
                                // The policy may wait for another broadcaster's claim: hold
                                // none meanwhile (see `claimed`).
                                claimed.publish(tally);
                                if let Err(Full(back)) = self.overflow(session, message, rule, tally) {
                                    drop(back);
                                    blocked.push(Arc::clone(session));
                                }
                            }
                        }
                    }
                    claimed.publish(tally);
                });
                (!blocked.is_empty()).then(|| Blocked {
                    broadcast: broadcast.issue(),
                    rule,
                    sessions: blocked,
                })
            })
            .flatten()
    }

    /// Pushes one message to one session, applying the rule's policy if the mailbox is full.
    /// Hands the message back only when the policy is `block`.
    #[inline]
    fn offer(
        &self,
        session: &Arc<Session>,
        message: Shared<Broadcast>,
        rule: DeliveryRule,
        tally: &mut Tally,
    ) -> std::result::Result<(), Full> {
        if dropped_as_closed(session, tally) {
            return Ok(());
        }
        let Err(Full(message)) = session.mailbox.try_push(message, rule.max_queued) else {
            count_queued(session, tally);
            return Ok(());
        };
        self.overflow(session, message, rule, tally)
    }

    /// Applies the rule's policy to `message`, which `session`'s full mailbox refused. Hands
    /// the message back only when the policy is `block`.
    fn overflow(
        &self,
        session: &Arc<Session>,
        message: Shared<Broadcast>,
        rule: DeliveryRule,
        tally: &mut Tally,
    ) -> std::result::Result<(), Full> {
        match rule.policy {
            OverflowPolicy::DropNewest => tally.drop(DropReason::DropNewest),
            OverflowPolicy::DropOldest => {
                let evicted = session.mailbox.push_evicting(message, rule.max_queued);
                for _ in 0..evicted {
                    tally.drop(DropReason::DropOldest);
                }
                count_queued(session, tally);
            }
            OverflowPolicy::Disconnect => {
                drop(message);
                tally.drop(DropReason::SlowConsumer);
                self.disconnect(session, rule, tally);
            }
            OverflowPolicy::BlockOnce { then, .. } if session.mailbox.is_stalled() => {
                tally.block_skips += 1;
                return self.offer(session, message, rule.falling_back_to(then), tally);
            }
            OverflowPolicy::Block { .. } | OverflowPolicy::BlockOnce { .. } => return Err(Full(message)),
        }
        Ok(())
    }

    fn disconnect(&self, session: &Arc<Session>, rule: DeliveryRule, tally: &mut Tally) {
        if session.close(CloseReason::SlowConsumer) {
            tally.disconnects += 1;
            tracing::info!(
                session_id = &*session.id,
                capacity = session.mailbox.capacity(),
                max_queued = rule.max_queued,
                "disconnecting slow session: its mailbox is full"
            );
            // Its queued messages are counted now, not when the reaper retires it.
            session.discard_queued();
            self.inner.retiring.push(Arc::clone(session));
            self.inner.reaper.wake();
        }
    }

    /// The `block` policy: wait, up to the timeout shared by the whole broadcast, for each full
    /// mailbox to make room; then fall back.
    async fn wait_for_blocked(&self, blocked: Blocked, publication: &mut Publication<'_>) {
        let tally = &mut publication.tally;
        let Some((timeout, then)) = blocked.rule.policy.wait() else {
            return;
        };
        let fallback = blocked.rule.falling_back_to(then);
        let Some(deadline) = block_deadline(timeout) else {
            tracing::warn!(
                topic = &*blocked.broadcast.topic,
                "the block policy needs a tokio runtime with timers to wait; falling back at once"
            );
            for session in blocked.sessions {
                tally.block_timeouts += 1;
                let _ = self.offer(&session, blocked.broadcast.clone(), fallback, tally);
            }
            publication.unresolved = 0;
            return;
        };
        tokio::pin!(deadline);
        for session in blocked.sessions {
            tally.block_waits += 1;
            let outcome = session
                .mailbox
                .wait_for_room(
                    blocked.broadcast.clone(),
                    blocked.rule.max_queued,
                    || !session.is_open(),
                    deadline.as_mut(),
                )
                .await;
            match outcome {
                RoomOutcome::Queued => count_queued(&session, tally),
                RoomOutcome::Closed => {
                    let reason = session.close_reason().unwrap_or(CloseReason::Unsubscribed);
                    tally.drop(reason.drop_reason());
                }
                RoomOutcome::TimedOut(message) => {
                    tally.block_timeouts += 1;
                    if matches!(blocked.rule.policy, OverflowPolicy::BlockOnce { .. }) {
                        session.mailbox.mark_stalled();
                    }
                    // The fallback policy never hands the message back.
                    let _ = self.offer(&session, message, fallback, tally);
                }
            }
            publication.unresolved -= 1;
        }
    }
}

/// Counts a message for a closed session as dropped, for the reason it closed; returns whether
/// the session was closed (then nothing is pushed).
#[inline]
fn dropped_as_closed(session: &Session, tally: &mut Tally) -> bool {
    let Some(reason) = session.close_reason() else {
        return false;
    };
    tally.drop(reason.drop_reason());
    true
}

/// Counts a message that `session`'s mailbox took, and discards it again if the session closed
/// meanwhile (`Session::discard_if_closed`, which relies on the fence every push path ends in).
/// Every successful push goes through here.
#[inline]
pub(super) fn count_queued(session: &Session, tally: &mut Tally) {
    tally.queued += 1;
    session.discard_if_closed();
}

/// The end of a `block` wait, `timeout` from now. `sleep` panics on a runtime built without
/// timers; that, like no runtime at all, gives `None`: the broadcast falls back at once instead
/// of failing.
#[cfg(not(fanout_loom))]
pub(super) fn block_deadline(timeout: std::time::Duration) -> Option<impl Future<Output = ()>> {
    tokio::runtime::Handle::try_current()
        .ok()
        .and_then(|_| std::panic::catch_unwind(|| tokio::time::sleep(timeout)).ok())
}

/// Loom models have no timers: a blocked broadcaster waits until a pop or a close releases it.
/// A model in which nothing does deadlocks, and loom reports it.
#[cfg(fanout_loom)]
pub(super) fn block_deadline(_timeout: std::time::Duration) -> Option<impl Future<Output = ()>> {
    Some(std::future::pending::<()>())
}
