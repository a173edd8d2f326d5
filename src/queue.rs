//! [`FrameQueue`]: a connection's bounded queue of frames, filled by the hub's deliveries
//! and drained by the connection's transport task.
//!
//! It replaces a `tokio::sync::mpsc` channel, for what a fan-out costs per recipient: one
//! uncontended lock around a `VecDeque` push, in the connection's own allocation (the
//! delivery has just read the connection's end reason, so it is in cache), and a wake-up
//! only when the queue was empty. Frames pushed while the transport has not drained the
//! queue yet ride on the wake-up already sent, and go out in the same write. A channel
//! pays a semaphore permit, a slot in its block list and a wake-up for every frame, and
//! allocates its first block (about a kilobyte) for every connection, idle or not.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::message::Frame;

/// A queue that grew past this many frames is freed once drained, so that a connection
/// keeps no burst's worth of memory while idle.
const SHRINK_ABOVE: usize = 64;

/// Why [`FrameQueue::try_send`] did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue holds its capacity: the reader is too slow.
    Full,
    /// The reader is gone: the connection's transport ended.
    Closed,
}

/// A bounded queue of frames with one reader (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameQueue {
    state: Mutex<State>,
    /// The reader's task, registered when it found the queue empty.
    reader: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: bool,
}

impl FrameQueue {
    /// An empty queue of at most `capacity` frames (at least one); allocates nothing until
    /// a frame comes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            reader: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `frame`, waking the reader if the queue was empty; `Ok` with the room left.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<usize, SendError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        let queued = state.frames.len();
        if queued >= self.capacity {
            return Err(SendError::Full);
        }
        state.frames.push_back(frame);
        drop(state);
        if queued == 0 {
            self.reader.wake();
        }
        Ok(self.capacity - queued - 1)
    }

    /// Room left: how many more frames the queue takes now.
    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.lock().frames.len())
    }

    /// The next frame, if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Frame> {
        let mut state = self.lock();
        let frame = state.frames.pop_front();
        shrink_if_drained(&mut state);
        frame
    }

    /// The next frame; `Pending` (the reader woken by the next push) while there is none.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Frame> {
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(frame);
        }
        // Registered before looking again: a push after that look wakes this task.
        self.reader.register(cx.waker());
        match self.try_recv() {
            Some(frame) => Poll::Ready(frame),
            None => Poll::Pending,
        }
    }

    /// Moves up to `max` queued frames to `out`, under one lock; how many it moved. With
    /// none queued, the reader is woken by the next push.
    pub(crate) fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let moved = self.take_into(out, max);
        if moved > 0 || max == 0 {
            return moved;
        }
        self.reader.register(cx.waker());
        self.take_into(out, max)
    }

    fn take_into(&self, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut state = self.lock();
        let count = state.frames.len().min(max);
        out.extend(state.frames.drain(..count));
        shrink_if_drained(&mut state);
        count
    }

    /// The reader is gone: what is queued is dropped and later sends fail as `Closed`.
    pub(crate) fn close(&self) {
        let frames = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.frames)
        };
        // The frames' last references, maybe, dropped outside the lock.
        drop(frames);
    }
}

fn shrink_if_drained(state: &mut State) {
    if state.frames.is_empty() && state.frames.capacity() > SHRINK_ABOVE {
        state.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    fn frame(n: u64) -> Frame {
        Frame::encode(format!("e-{n}").into(), &Message::json("t", n.into()), None)
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn frames_come_out_in_order_and_the_bound_holds() {
        let queue = FrameQueue::new(2);
        assert_eq!(queue.try_send(frame(1)), Ok(1));
        assert_eq!(queue.try_send(frame(2)), Ok(0));
        assert_eq!(queue.try_send(frame(3)), Err(SendError::Full));
        assert_eq!(queue.free(), 0);
        assert_eq!(
            queue.try_recv().map(|f| f.id().to_string()),
            Some("e-1".into())
        );
        assert_eq!(
            queue.try_recv().map(|f| f.id().to_string()),
            Some("e-2".into())
        );
        assert!(queue.try_recv().is_none());
        assert_eq!(queue.free(), 2);
    }

    /// One wake-up per time the queue goes from empty to not empty, and none is missed:
    /// a reader that found it empty is woken by the next push.
    #[test]
    fn the_reader_is_woken_once_per_empty_queue_it_waits_on() {
        let queue = FrameQueue::new(8);
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(queue.poll_recv(&mut cx).is_pending());
        queue.try_send(frame(1)).unwrap();
        queue.try_send(frame(2)).unwrap();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "woken by the first push only"
        );
        let mut out = Vec::new();
        assert_eq!(queue.poll_recv_many(&mut cx, &mut out, 64), 2);
        assert_eq!(queue.poll_recv_many(&mut cx, &mut out, 64), 0);
        queue.try_send(frame(3)).unwrap();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "woken again once empty"
        );
        assert!(matches!(queue.poll_recv(&mut cx), Poll::Ready(f) if f.id() == "e-3"));
    }

    #[test]
    fn a_batch_takes_at_most_its_share_and_the_rest_stays_queued() {
        let queue = FrameQueue::new(8);
        for n in 0..5 {
            queue.try_send(frame(n)).unwrap();
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        assert_eq!(queue.poll_recv_many(&mut cx, &mut out, 3), 3);
        assert_eq!(queue.poll_recv_many(&mut cx, &mut out, 3), 2);
        let ids: Vec<String> = out.iter().map(|f| f.id().to_string()).collect();
        assert_eq!(ids, ["e-0", "e-1", "e-2", "e-3", "e-4"]);
    }

    #[test]
    fn a_closed_queue_drops_what_it_held_and_refuses_more() {
        let queue = FrameQueue::new(4);
        queue.try_send(frame(1)).unwrap();
        queue.close();
        assert!(queue.try_recv().is_none());
        assert_eq!(queue.lock().frames.capacity(), 0, "freed");
        assert_eq!(queue.try_send(frame(2)), Err(SendError::Closed));
    }

    #[test]
    fn a_burst_s_memory_is_freed_once_drained() {
        let queue = FrameQueue::new(1024);
        for n in 0..500 {
            queue.try_send(frame(n)).unwrap();
        }
        while queue.try_recv().is_some() {}
        assert_eq!(queue.lock().frames.capacity(), 0);
    }
}
