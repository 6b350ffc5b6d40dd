//! [`ClosedStreams`]: how a connection's recently closed streams ended, so that a late frame on
//! one gets the answer RFC 9113 section 5.1 gives it.
//!
//! A frame on a stream this server reset may have been in flight and is ignored; a frame on a
//! stream whose peer had ended or reset it is the peer's error. Only the newest few are kept
//! (a fixed, small bound per connection, nothing until a stream closes): an older closed
//! stream is answered as one whose end is forgotten.

use std::collections::VecDeque;

/// Closed streams remembered per connection.
const REMEMBERED: usize = 16;

/// How a stream closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// This server sent RST_STREAM: frames the peer had already sent are ignored (5.1).
    Reset,
    /// The peer ended its side (END_STREAM) or reset the stream: any later frame but PRIORITY,
    /// WINDOW_UPDATE and RST_STREAM is a STREAM_CLOSED error (5.1).
    ByPeer,
}

/// The newest closed streams of one connection.
#[derive(Debug, Default)]
pub(super) struct ClosedStreams {
    recent: VecDeque<(u32, Closed)>,
}

impl ClosedStreams {
    /// Records that `id` closed `how` (again, if it was recorded before).
    pub(super) fn close(&mut self, id: u32, how: Closed) {
        if let Some(entry) = self.recent.iter_mut().find(|(known, _)| *known == id) {
            entry.1 = how;
            return;
        }
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((id, how));
    }

    /// How `id` closed, if it is among the newest closed streams.
    pub(super) fn get(&self, id: u32) -> Option<Closed> {
        self.recent
            .iter()
            .find(|(known, _)| *known == id)
            .map(|&(_, how)| how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_closed_streams_are_remembered_with_how_they_ended() {
        let mut closed = ClosedStreams::default();
        assert_eq!(closed.get(1), None);
        closed.close(1, Closed::ByPeer);
        closed.close(3, Closed::Reset);
        assert_eq!(closed.get(1), Some(Closed::ByPeer));
        assert_eq!(closed.get(3), Some(Closed::Reset));
        // Answering a late frame with RST_STREAM turns a stream into one reset here.
        closed.close(1, Closed::Reset);
        assert_eq!(closed.get(1), Some(Closed::Reset));
        for id in (5..).step_by(2).take(REMEMBERED) {
            closed.close(id, Closed::ByPeer);
        }
        assert_eq!(closed.recent.len(), REMEMBERED);
        assert_eq!(closed.get(1), None, "the oldest are forgotten");
        assert_eq!(closed.get(5), Some(Closed::ByPeer));
    }
}
