//! Delivery: a message is encoded once and a refcounted clone goes into each recipient's
//! bounded outbox; a connection that cannot take it is ended and reported as failed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dualcast_layers::metrics::Transport;
use serde::Serialize;
use tokio::sync::mpsc;

use super::registry::Player;
use super::Hub;
use crate::connection::{Connection, ConnectionKind, DisconnectReason};
use crate::message::{Frame, Message};

/// What a publish reached (SPEC §4); serializes to the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// The envelope id every recipient got.
    pub id: Arc<str>,
    /// Connections reached, both kinds.
    pub delivered: usize,
    /// WebSocket connections reached.
    pub websocket: usize,
    /// SSE connections reached.
    pub sse: usize,
    /// Connections that could not take the message: they were ending, gone, or overflowed;
    /// each was removed from the hub.
    pub failed: usize,
    /// Whether the message was kept for later delivery. Always `false` until pending
    /// queues exist.
    pub queued: bool,
    /// Players reached (room and global broadcasts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub players: Option<usize>,
}

impl DeliveryReport {
    fn new(id: Arc<str>, players: Option<usize>) -> Self {
        Self {
            id,
            delivered: 0,
            websocket: 0,
            sse: 0,
            failed: 0,
            queued: false,
            players,
        }
    }
}

impl Hub {
    /// Sends `message` to every live connection of `player_id`, both kinds.
    pub fn send_to_player(&self, player_id: &str, message: &Message) -> DeliveryReport {
        let frame = self.encode(message, None);
        let mut report = DeliveryReport::new(frame.shared_id(), None);
        let mut failed = Vec::new();
        {
            let registry = self.read();
            if let Some(player) = registry.players.get(player_id) {
                self.deliver_to_player(player, &frame, &mut report, &mut failed);
            }
        }
        self.finish(&report, failed);
        report
    }

    /// Sends `message` to every connection of every member of `room`, except the players
    /// in `exclude`.
    pub fn broadcast_to_room(
        &self,
        room: &str,
        message: &Message,
        exclude: &[&str],
    ) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let frame = self.encode(message, Some(room));
        let mut report = DeliveryReport::new(frame.shared_id(), Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            if let Some(members) = registry.rooms.get(room) {
                for member in members {
                    if excluded.contains(member) {
                        continue;
                    }
                    if let Some(player) = registry.players.get(member) {
                        self.deliver_to_player(player, &frame, &mut report, &mut failed);
                    }
                }
            }
        }
        self.finish(&report, failed);
        report
    }

    /// Sends `message` to every connection of every player, except the players in
    /// `exclude`.
    pub fn broadcast_global(&self, message: &Message, exclude: &[&str]) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let frame = self.encode(message, None);
        let mut report = DeliveryReport::new(frame.shared_id(), Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            for (player_id, player) in &registry.players {
                if !excluded.contains(player_id) {
                    self.deliver_to_player(player, &frame, &mut report, &mut failed);
                }
            }
        }
        self.finish(&report, failed);
        report
    }

    pub(super) fn encode(&self, message: &Message, room: Option<&str>) -> Frame {
        let sequence = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{}-{sequence}", self.inner.epoch).into();
        Frame::encode(id, message, room)
    }

    fn deliver_to_player(
        &self,
        player: &Player,
        frame: &Frame,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        let reached_before = report.delivered;
        for connection in &player.connections {
            if connection.end_reason().is_some() {
                // Ending already (its transport is closing it): it cannot take the message.
                // Removed now, so it is counted once.
                report.failed += 1;
                failed.push(connection.clone());
                continue;
            }
            match connection.outbox.try_send(frame.clone()) {
                Ok(()) => {
                    report.delivered += 1;
                    match connection.kind {
                        ConnectionKind::WebSocket => report.websocket += 1,
                        ConnectionKind::Sse => report.sse += 1,
                    }
                    let free = connection.outbox.capacity();
                    let capacity = self.inner.settings.outbox_capacity;
                    if free < capacity / 4 {
                        connection.set_outbox_high(true);
                    } else if free > capacity / 2 {
                        connection.set_outbox_high(false);
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    report.failed += 1;
                    if let Some(observer) = self.observer() {
                        observer.outbox_overflow();
                    }
                    connection.end(DisconnectReason::SlowConsumer);
                    failed.push(connection.clone());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    report.failed += 1;
                    connection.end(DisconnectReason::ClientClosed);
                    failed.push(connection.clone());
                }
            }
        }
        if let Some(players) = report.players.as_mut() {
            *players += usize::from(report.delivered > reached_before);
        }
    }

    /// Reports the delivery to the observer and removes the connections that failed.
    fn finish(&self, report: &DeliveryReport, failed: Vec<Arc<Connection>>) {
        if let Some(observer) = self.observer() {
            observer.delivered(Transport::WebSocket, report.websocket as u64);
            observer.delivered(Transport::Sse, report.sse as u64);
            if report.failed > 0 {
                observer.delivery_failed(report.failed as u64);
            }
        }
        self.remove_failed(failed);
    }

    fn remove_failed(&self, failed: Vec<Arc<Connection>>) {
        for connection in failed {
            let reason = connection
                .end_reason()
                .unwrap_or(DisconnectReason::ClientClosed);
            tracing::warn!(
                connection_id = %connection.id,
                player_id = &*connection.player_id,
                kind = connection.kind.as_str(),
                reason = reason.code(),
                "connection failed during delivery; removed"
            );
            self.remove(&connection, reason, None);
        }
    }
}

/// The players a broadcast skips: a slice scan for a few, a set for many.
enum Excluded<'a> {
    Few(&'a [&'a str]),
    Many(HashSet<&'a str>),
}

impl<'a> Excluded<'a> {
    fn new(exclude: &'a [&'a str]) -> Self {
        if exclude.len() <= 16 {
            Self::Few(exclude)
        } else {
            Self::Many(exclude.iter().copied().collect())
        }
    }

    fn contains(&self, player_id: &str) -> bool {
        match self {
            Self::Few(few) => few.contains(&player_id),
            Self::Many(many) => many.contains(player_id),
        }
    }
}
