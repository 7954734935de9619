//! What the router has in flight to one client, and who answers it.
//!
//! rumqttd takes acknowledgements only in the order it sent the messages
//! (PUBACK and PUBREC in PUBLISH order, PUBCOMP in PUBREC order) and drops a
//! connection on any other. The front door sometimes must not pass a message
//! on (MQTT 5: bigger than the client's Maximum Packet Size), so it answers
//! that one itself, and its answer must wait until every earlier message is
//! answered. The ledger keeps both queues, holds answers until their turn, and
//! counts the messages the client has not finished (MQTT 5 Receive Maximum).
//!
//! The downstream task (router → client) records what it forwards and what it
//! settles; the upstream task (client → router) records the client's answers
//! and is the only one that writes answers to the router, so they reach it in
//! the order the ledger released them.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::codec::{packet_type, publish_ack, MqttVersion};

/// The answers here go to the router, which speaks MQTT 5 (a success is
/// the same two bytes in 3.1.1).
const ROUTER: MqttVersion = MqttVersion::V5;

/// One message (or QoS 2 release) the router waits to hear about.
struct Awaited {
    packet_id: u16,
    /// The answer, once someone gave it; it goes to the router in turn.
    answer: Option<Bytes>,
    /// A QoS 2 message the client got at QoS 1: its PUBACK is the router's
    /// PUBREC, and the router's PUBREL is answered here.
    downgraded: bool,
    /// The client's answer finishes a message it was sent on this
    /// connection (it counts against its Receive Maximum); not so for what
    /// the front door answers, nor for a PUBREL the router sends again
    /// after a reconnect.
    counted: bool,
}

impl Awaited {
    fn new(packet_id: u16, counted: bool) -> Awaited {
        Awaited {
            packet_id,
            answer: None,
            downgraded: false,
            counted,
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// QoS 1 and 2 PUBLISHes the router sent, oldest first, until their
    /// PUBACK or PUBREC is released to it.
    publishes: VecDeque<Awaited>,
    /// PUBRECs released to the router, oldest first, until their PUBCOMP is.
    releases: VecDeque<Awaited>,
    /// Answers released, in order, not yet written to the router.
    ready: BytesMut,
    /// QoS 2 messages the front door answered (PUBREC) itself: the router's
    /// PUBREL for them is answered here too.
    answered_here: HashSet<u16>,
    /// QoS 1 and 2 PUBLISHes the client got and has not finished (PUBACK,
    /// or PUBCOMP for QoS 2).
    client_unfinished: usize,
}

impl Ledger {
    /// Moves every answer whose turn has come to `ready`.
    fn release(&mut self) {
        while self.publishes.front().is_some_and(|a| a.answer.is_some()) {
            let Some(Awaited {
                packet_id,
                answer: Some(answer),
                downgraded,
                counted,
            }) = self.publishes.pop_front()
            else {
                break;
            };
            if answer.first().map(|b| b >> 4) == Some(packet_type::PUBREC) {
                // The client finishes a QoS 2 message with its PUBCOMP,
                // unless the front door finished it (kept or downgraded).
                let by_client = counted && !downgraded && !self.answered_here.contains(&packet_id);
                self.releases.push_back(Awaited::new(packet_id, by_client));
            }
            self.ready.extend_from_slice(&answer);
        }
        while self.releases.front().is_some_and(|a| a.answer.is_some()) {
            if let Some(Awaited {
                answer: Some(answer),
                ..
            }) = self.releases.pop_front()
            {
                self.ready.extend_from_slice(&answer);
            }
        }
    }

    fn answer(
        queue: &mut VecDeque<Awaited>,
        packet_id: u16,
        answer: Bytes,
    ) -> Option<&mut Awaited> {
        let awaited = queue
            .iter_mut()
            .find(|a| a.packet_id == packet_id && a.answer.is_none())?;
        awaited.answer = Some(answer);
        Some(awaited)
    }
}

/// What the upstream task does with an answer the client sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward it as it is: it is the one the router waits for (or one the
    /// ledger does not know, which the router judges).
    AsItIs,
    /// Forward these bytes instead (all answers now due, in order; empty
    /// when the client's answer must wait for an earlier one).
    Instead(Bytes),
}

/// The ledger of one connection, shared by its two tasks.
pub(crate) struct Deliveries {
    ledger: Mutex<Ledger>,
    /// Wakes the upstream task when answers are ready for the router.
    pub(crate) ready: Notify,
    /// Wakes the downstream task when the client finished a message.
    pub(crate) room: Notify,
}

impl Deliveries {
    pub(crate) fn new() -> Deliveries {
        Deliveries {
            ledger: Mutex::new(Ledger::default()),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The router sent a QoS 1 or 2 PUBLISH that goes to the client (now,
    /// or once it has room: see [`Deliveries::try_send`]).
    pub(crate) fn awaited(&self, packet_id: u16) {
        self.ledger()
            .publishes
            .push_back(Awaited::new(packet_id, true));
    }

    /// Like [`Deliveries::awaited`], for a QoS 2 message the client gets at
    /// QoS 1 (published at QoS 1): the client's PUBACK becomes the router's
    /// PUBREC, and the router's PUBREL is answered here. The router cannot
    /// reuse the packet id before the client has answered.
    pub(crate) fn awaited_downgraded(&self, packet_id: u16) {
        self.ledger().publishes.push_back(Awaited {
            downgraded: true,
            ..Awaited::new(packet_id, true)
        });
    }

    /// Whether the client may get one more QoS 1 or 2 message now, having
    /// `receive_maximum` at most unfinished; if so it is counted as sent.
    pub(crate) fn try_send(&self, receive_maximum: usize) -> bool {
        let mut ledger = self.ledger();
        let room = ledger.client_unfinished < receive_maximum;
        if room {
            ledger.client_unfinished += 1;
        }
        room
    }

    /// The downstream task kept a QoS 1 or 2 PUBLISH from the client: the
    /// front door answers it, in its turn, as if the client had.
    pub(crate) fn settle_here(&self, packet_id: u16, qos: u8) {
        let kind = if qos == 2 {
            packet_type::PUBREC
        } else {
            packet_type::PUBACK
        };
        let mut ledger = self.ledger();
        if qos == 2 {
            ledger.answered_here.insert(packet_id);
        }
        ledger.publishes.push_back(Awaited {
            answer: Some(publish_ack(kind, packet_id, 0, ROUTER)),
            ..Awaited::new(packet_id, false)
        });
        self.release(ledger);
    }

    /// Releases what is due and wakes the upstream task to write it.
    fn release(&self, mut ledger: std::sync::MutexGuard<'_, Ledger>) {
        ledger.release();
        let due = !ledger.ready.is_empty();
        drop(ledger);
        if due {
            self.ready.notify_one();
        }
    }

    /// The router sent a PUBREL. `true`: it is for a message the front door
    /// answered itself, so the PUBCOMP is the front door's too (released in
    /// turn) and the PUBREL must not reach the client.
    pub(crate) fn release_here(&self, packet_id: u16) -> bool {
        let mut guard = self.ledger();
        let ledger = &mut *guard;
        if !ledger.answered_here.remove(&packet_id) {
            // The client's to answer. A PUBREL the router sends again after
            // a reconnect (for a PUBREC of an earlier connection) is not in
            // the queue yet: its PUBCOMP takes its turn there all the same.
            if !ledger.releases.iter().any(|a| a.packet_id == packet_id) {
                ledger.releases.push_back(Awaited::new(packet_id, false));
            }
            return false;
        }
        let pubcomp = publish_ack(packet_type::PUBCOMP, packet_id, 0, ROUTER);
        Ledger::answer(&mut ledger.releases, packet_id, pubcomp);
        self.release(guard);
        true
    }

    /// The client sent a PUBACK, PUBREC or PUBCOMP (`kind`, whole packet in
    /// `bytes`).
    pub(crate) fn client_answered(&self, kind: u8, packet_id: u16, bytes: &[u8]) -> Route {
        let mut guard = self.ledger();
        let ledger = &mut *guard;
        let nothing_due = ledger.ready.is_empty();
        let queue = if kind == packet_type::PUBCOMP {
            &mut ledger.releases
        } else {
            &mut ledger.publishes
        };
        let Some(awaited) = Ledger::answer(queue, packet_id, Bytes::copy_from_slice(bytes)) else {
            return Route::AsItIs;
        };
        let finishes = kind != packet_type::PUBREC && awaited.counted;
        if awaited.downgraded && kind == packet_type::PUBACK {
            awaited.answer = Some(publish_ack(packet_type::PUBREC, packet_id, 0, ROUTER));
            ledger.answered_here.insert(packet_id);
        }
        if finishes {
            ledger.client_unfinished = ledger.client_unfinished.saturating_sub(1);
            self.room.notify_one();
        }
        ledger.release();
        let released = ledger.ready.split().freeze();
        // The usual case: the answer the router waited for, and only it.
        if nothing_due && released.as_ref() == bytes {
            Route::AsItIs
        } else {
            Route::Instead(released)
        }
    }

    /// Answers released by the downstream task, for the upstream task to
    /// write to the router.
    pub(crate) fn take_ready(&self) -> Option<Bytes> {
        let mut ledger = self.ledger();
        (!ledger.ready.is_empty()).then(|| ledger.ready.split().freeze())
    }

    #[cfg(test)]
    fn client_unfinished(&self) -> usize {
        self.ledger().client_unfinished
    }

    #[cfg(test)]
    fn forwarded(&self, packet_id: u16) {
        self.awaited(packet_id);
        assert!(self.try_send(usize::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(kind: u8, id: u16) -> Bytes {
        publish_ack(kind, id, 0, MqttVersion::V311)
    }

    fn joined(acks: &[Bytes]) -> Bytes {
        acks.concat().into()
    }

    #[test]
    fn answers_in_order_pass_as_they_are() {
        let d = Deliveries::new();
        d.forwarded(1);
        d.forwarded(2);
        assert_eq!(d.client_unfinished(), 2);
        let puback = ack(packet_type::PUBACK, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 1, &puback),
            Route::AsItIs
        );
        let puback = ack(packet_type::PUBACK, 2);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 2, &puback),
            Route::AsItIs
        );
        assert_eq!(d.client_unfinished(), 0);
        assert_eq!(d.take_ready(), None);
    }

    #[test]
    fn an_answer_of_the_front_door_waits_for_earlier_ones() {
        let d = Deliveries::new();
        d.forwarded(1);
        d.settle_here(2, 1);
        d.forwarded(3);
        // Nothing may go yet: 1 is the client's.
        assert_eq!(d.take_ready(), None);
        let puback1 = ack(packet_type::PUBACK, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 1, &puback1),
            Route::Instead(joined(&[puback1.clone(), ack(packet_type::PUBACK, 2)]))
        );
        let puback3 = ack(packet_type::PUBACK, 3);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 3, &puback3),
            Route::AsItIs
        );
    }

    #[test]
    fn the_front_doors_answer_goes_at_once_when_nothing_is_before_it() {
        let d = Deliveries::new();
        d.settle_here(7, 1);
        assert_eq!(d.take_ready(), Some(ack(packet_type::PUBACK, 7)));
        assert_eq!(d.take_ready(), None);
    }

    #[test]
    fn an_answer_out_of_turn_waits() {
        let d = Deliveries::new();
        d.forwarded(1);
        d.forwarded(2);
        let puback2 = ack(packet_type::PUBACK, 2);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 2, &puback2),
            Route::Instead(Bytes::new())
        );
        let puback1 = ack(packet_type::PUBACK, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 1, &puback1),
            Route::Instead(joined(&[puback1, puback2]))
        );
    }

    #[test]
    fn qos2_kept_from_the_client_is_completed_in_turn() {
        let d = Deliveries::new();
        d.forwarded(1); // QoS 2, the client's
        d.settle_here(2, 2);
        let pubrec1 = ack(packet_type::PUBREC, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBREC, 1, &pubrec1),
            Route::Instead(joined(&[pubrec1.clone(), ack(packet_type::PUBREC, 2)]))
        );
        assert_eq!(
            d.client_unfinished(),
            1,
            "QoS 2 is unfinished until PUBCOMP"
        );
        // The router releases both; 2's PUBREL is the front door's to answer,
        // but only after the client's PUBCOMP for 1.
        assert!(!d.release_here(1));
        assert!(d.release_here(2));
        assert_eq!(d.take_ready(), None);
        let pubcomp1 = ack(packet_type::PUBCOMP, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBCOMP, 1, &pubcomp1),
            Route::Instead(joined(&[pubcomp1, ack(packet_type::PUBCOMP, 2)]))
        );
        assert_eq!(d.client_unfinished(), 0);
    }

    #[test]
    fn the_client_gets_no_more_than_its_receive_maximum() {
        let d = Deliveries::new();
        d.awaited(1);
        assert!(d.try_send(1));
        d.awaited(2);
        assert!(!d.try_send(1), "one is unfinished");
        let puback1 = ack(packet_type::PUBACK, 1);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 1, &puback1),
            Route::AsItIs
        );
        assert!(d.try_send(1));
    }

    #[test]
    fn a_qos2_message_the_client_got_at_qos1_is_finished_with_the_router_here() {
        let d = Deliveries::new();
        d.awaited_downgraded(4);
        assert!(d.try_send(10));
        let puback = ack(packet_type::PUBACK, 4);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 4, &puback),
            Route::Instead(ack(packet_type::PUBREC, 4))
        );
        assert_eq!(d.client_unfinished(), 0);
        assert!(d.release_here(4), "the router's PUBREL is answered here");
        assert_eq!(d.take_ready(), Some(ack(packet_type::PUBCOMP, 4)));
    }

    #[test]
    fn a_pubrel_sent_again_after_a_reconnect_keeps_its_turn() {
        let d = Deliveries::new();
        // The router sends again the PUBREL of an earlier connection, then a
        // message the front door answers itself (published at QoS 0).
        assert!(!d.release_here(9));
        d.settle_here(1, 2);
        assert_eq!(d.take_ready(), Some(ack(packet_type::PUBREC, 1)));
        assert!(d.release_here(1));
        assert_eq!(
            d.take_ready(),
            None,
            "PUBCOMP 1 waits for the client's PUBCOMP 9"
        );
        let pubcomp9 = ack(packet_type::PUBCOMP, 9);
        assert_eq!(
            d.client_answered(packet_type::PUBCOMP, 9, &pubcomp9),
            Route::Instead(joined(&[pubcomp9, ack(packet_type::PUBCOMP, 1)]))
        );
        // That PUBCOMP finished nothing sent on this connection.
        d.awaited(2);
        assert!(d.try_send(1));
        d.awaited(3);
        assert!(!d.try_send(1));
    }

    #[test]
    fn an_unknown_answer_is_left_to_the_router() {
        let d = Deliveries::new();
        let puback = ack(packet_type::PUBACK, 9);
        assert_eq!(
            d.client_answered(packet_type::PUBACK, 9, &puback),
            Route::AsItIs
        );
    }
}
