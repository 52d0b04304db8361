//! The mock node as an IL-DCP child (docs/modern.md §4.1). Answering `peer.config` is step 3 of the incoming
//! pipeline ([`super::pipeline`]); this module is the other direction, what interledger-rs's
//! `get_address_from_parent_and_update_routes` does when a Parent account is created:
//!
//! 1. send the parent an IL-DCP request (from = to = the parent, through the outgoing pipeline);
//! 2. make the parent the default route;
//! 3. take the address it returns, and give every account that is neither Parent nor Peer the address
//!    `<new address>.<username>` (or the new address itself when its last segment is the username);
//! 4. send the parent a route control request (Sync, all-zero table ID, epoch 0).
//!
//! A Reject or an unreadable answer fails the account creation (the account stays), as in interledger-rs.

use std::sync::Arc;

use btp::ccp::{Mode, RouteControlRequest};
use btp::ildcp::{IldcpRequest, IldcpResponse};
use btp::ilp_v4::Address;
use btp::Timestamp;
use channel_modules::sync::lock;

use super::accounts::{with_suffix, Account, RoutingRelation};
use super::{pipeline, Node, NodeError, State};

/// Runs steps 1–4 with `parent`.
pub(crate) async fn ask_parent(node: &Arc<Node>, parent: &Account) -> Result<(), NodeError> {
    let request = IldcpRequest.to_prepare(Timestamp::now());
    let fulfill = pipeline::send_outgoing(node, parent, parent, request, 0)
        .await
        .map_err(|r| {
            NodeError::Ildcp(format!(
                "Error getting ILDCP info: {} {}",
                r.code_str(),
                r.message
            ))
        })?;
    let info = IldcpResponse::from_fulfill(&fulfill).map_err(|e| {
        NodeError::Ildcp(format!(
            "Unable to parse ILDCP response from fulfill packet: {e}"
        ))
    })?;
    {
        let mut state = lock(&node.state);
        state.routing.set_default_route(parent.id);
        set_address(&mut state, info.address);
    }
    let control = RouteControlRequest {
        mode: Mode::Sync,
        last_known_routing_table_id: [0; 16],
        last_known_epoch: 0,
        features: Vec::new(),
    }
    .to_prepare(Timestamp::now());
    pipeline::send_outgoing(node, parent, parent, control, 0)
        .await
        .map_err(|r| {
            NodeError::Ildcp(format!(
                "Error getting routes from parent: {} {}",
                r.code_str(),
                r.message
            ))
        })?;
    Ok(())
}

/// interledger-rs's `set_ilp_address`: the node's address and the addresses (and routes) of its children and
/// non-routing accounts.
pub(crate) fn set_address(state: &mut State, address: Address) {
    state.address = address.clone();
    let last_segment = address
        .as_str()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let ids: Vec<_> = state.accounts.keys().copied().collect();
    for id in ids {
        let Some(account) = state.accounts.get(&id) else {
            continue;
        };
        if matches!(
            account.routing_relation,
            RoutingRelation::Parent | RoutingRelation::Peer
        ) {
            continue;
        }
        let new = if last_segment == account.username {
            address.clone()
        } else {
            match with_suffix(&address, &account.username) {
                Ok(a) => a,
                Err(_) => continue,
            }
        };
        let old = account.ilp_address.clone();
        state
            .routing
            .move_account_route(old.as_str(), new.as_str(), id);
        if let Some(account) = state.accounts.get_mut(&id) {
            account.ilp_address = new;
        }
    }
}
