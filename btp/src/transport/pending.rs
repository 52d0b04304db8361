//! The requests a session has sent and is waiting on, by request ID: a reply is matched by its ID whichever
//! socket it arrives on.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::limits::MAX_PENDING_REQUESTS;
use super::reply::{Reply, RpcError};
use super::sync::lock;

/// Where a waiting request's outcome goes.
pub(crate) type ReplySender = oneshot::Sender<Result<Reply, RpcError>>;

/// A request waiting for its reply.
struct Pending {
    /// The socket the request was written to; its drop fails the request.
    socket_id: u64,
    /// Completes [`BtpSession::request`](crate::transport::BtpSession::request).
    tx: ReplySender,
}

/// The table of requests in flight on one session (at most [`MAX_PENDING_REQUESTS`]).
#[derive(Default)]
pub(crate) struct PendingRequests {
    by_id: Mutex<HashMap<u32, Pending>>,
}

impl PendingRequests {
    /// Registers a request to be written on socket `socket_id` under a fresh random request ID not in flight;
    /// [`RpcError::TooManyPending`] if the table is full.
    pub(crate) fn register(
        &self,
        socket_id: u64,
    ) -> Result<(u32, oneshot::Receiver<Result<Reply, RpcError>>), RpcError> {
        let mut pending = lock(&self.by_id);
        if pending.len() >= MAX_PENDING_REQUESTS {
            return Err(RpcError::TooManyPending);
        }
        let mut request_id = rand::random::<u32>();
        while pending.contains_key(&request_id) {
            request_id = rand::random::<u32>();
        }
        let (tx, rx) = oneshot::channel();
        pending.insert(request_id, Pending { socket_id, tx });
        Ok((request_id, rx))
    }

    /// Takes request `request_id` out of the table, to complete it.
    pub(crate) fn take(&self, request_id: u32) -> Option<ReplySender> {
        lock(&self.by_id).remove(&request_id).map(|p| p.tx)
    }

    /// Whether request `request_id` is waiting for its reply.
    pub(crate) fn contains(&self, request_id: u32) -> bool {
        lock(&self.by_id).contains_key(&request_id)
    }

    /// Forgets request `request_id` (its caller returned or gave up).
    pub(crate) fn remove(&self, request_id: u32) {
        lock(&self.by_id).remove(&request_id);
    }

    /// Fails every request written to socket `socket_id` with `error`.
    pub(crate) fn fail_socket(&self, socket_id: u64, error: RpcError) {
        let failed: Vec<Pending> = {
            let mut pending = lock(&self.by_id);
            let ids: Vec<u32> = pending
                .iter()
                .filter(|(_, p)| p.socket_id == socket_id)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id))
                .collect()
        };
        for p in failed {
            let _ = p.tx.send(Err(error));
        }
    }

    /// Fails every request in flight with `error`.
    pub(crate) fn fail_all(&self, error: RpcError) {
        let pending = std::mem::take(&mut *lock(&self.by_id));
        for (_, p) in pending {
            let _ = p.tx.send(Err(error));
        }
    }
}
