//! M's `peer.*` requests (docs/modern.md §4), answered here and never forwarded to P, and the ones we send M.
//!
//! | request from M | answer |
//! |--|--|
//! | `peer.config` (IL-DCP), M our child | Fulfill: the configured child address, the modern asset scale and code |
//! | `peer.config`, M not our child | Reject F00 |
//! | `peer.route.control` | Fulfill (the CCP response); in Sync mode, when M takes our routes, a route update follows |
//! | `peer.route.update`, when we take M's routes | Fulfill; the routes are not kept (everything from P goes to M) |
//! | `peer.route.update` otherwise | Reject F00 `Your route broadcasts are not accepted here` (interledger-rs's words) |
//! | `peer.settle` | Reject F00: a bridged account settles through this node's RFC 38 API, with no engine messages |
//! | any other `peer.*` | Reject F02 |
//!
//! Our route update advertises one route, P's ledger prefix (without its trailing dot), with our address as
//! its path; interledger-rs keeps it until our routing table ID changes. When M is our parent we ask it for our
//! address (IL-DCP) once the link is up ([`BridgedPair::ask_address`]).

use btp::ccp::{ccp_response, Mode, Route, RouteControlRequest, RouteUpdateRequest};
use btp::ildcp::{IldcpRequest, IldcpResponse, ILDCP_DESTINATION};
use btp::ilp_v4;
use bytes::Bytes;

use super::modern::{time_until, IlpReply};
use super::pair::{system_time, BridgedPair, Relation};

/// How long routes we advertise stay valid without a refresh, in milliseconds (interledger-rs's default
/// hold-down time).
pub const ROUTE_HOLD_DOWN_MS: u32 = 45_000;

/// The `peer.*` address of settlement-engine messages (docs/modern.md §4.2).
const PEER_SETTLE: &str = "peer.settle";

/// Why asking M for our address failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No link to M.
    #[error("no link to the modern connector")]
    NoLink,
    /// The request got no usable answer.
    #[error("IL-DCP request failed: {0}")]
    Failed(String),
    /// M's account has another asset than the pair is configured with.
    #[error("the modern connector's account is {code} at scale {scale}, the bridge is configured with {configured_code} at scale {configured_scale}")]
    AssetMismatch {
        /// M's asset code.
        code: String,
        /// M's asset scale.
        scale: u8,
        /// Ours.
        configured_code: String,
        /// Ours.
        configured_scale: u8,
    },
}

impl BridgedPair {
    pub(super) async fn peer_protocol(&self, prepare: &ilp_v4::Prepare) -> IlpReply {
        let translation = self.translation();
        let settings = self.settings();
        let reject = |code: &[u8; 3], message: &str| {
            Err(translation.modern_reject(code, message, Bytes::new()))
        };
        match prepare.destination.as_str() {
            ILDCP_DESTINATION => {
                let (Relation::Child, Some(address)) = (settings.relation, settings.child_address)
                else {
                    return reject(b"F00", "IL-DCP is answered only to a child");
                };
                if let Err(e) = IldcpRequest::check(prepare) {
                    return reject(b"F00", &format!("invalid IL-DCP request: {e}"));
                }
                Ok(IldcpResponse {
                    address,
                    asset_scale: settings.scales.modern,
                    asset_code: settings.asset_code,
                }
                .to_fulfill())
            }
            btp::ccp::CCP_CONTROL_DESTINATION => {
                let control = match RouteControlRequest::from_prepare(prepare) {
                    Ok(c) => c,
                    Err(_) => return reject(b"F00", "Invalid route control request"),
                };
                if !settings.relation.sends_routes() {
                    return reject(b"F00", "We are not configured to send routes to you, sorry");
                }
                if control.mode == Mode::Sync {
                    let pair = self.clone();
                    tokio::spawn(async move { pair.send_routes().await });
                }
                Ok(ccp_response())
            }
            btp::ccp::CCP_UPDATE_DESTINATION => {
                if !settings.relation.takes_routes() {
                    return reject(b"F00", "Your route broadcasts are not accepted here");
                }
                match RouteUpdateRequest::from_prepare(prepare) {
                    Ok(_) => Ok(ccp_response()),
                    Err(_) => reject(b"F00", "Invalid route update request"),
                }
            }
            PEER_SETTLE => reject(
                b"F00",
                "a bridged account settles through the bridge's RFC 38 API; it takes no settlement messages",
            ),
            other => reject(b"F02", &format!("unknown peer protocol {other}")),
        }
    }

    /// The route update advertising P's ledger through us, from epoch 0.
    pub fn route_update(&self) -> Option<RouteUpdateRequest> {
        let prefix = self.inner.trustline.prefix()?;
        let prefix = prefix.trim_end_matches('.').to_owned();
        let speaker = self.settings().modern_address;
        Some(RouteUpdateRequest {
            routing_table_id: self.inner.routing_table_id,
            current_epoch_index: 1,
            from_epoch_index: 0,
            to_epoch_index: 1,
            hold_down_time: ROUTE_HOLD_DOWN_MS,
            speaker: speaker.clone(),
            new_routes: vec![Route {
                prefix,
                path: vec![speaker.as_str().to_owned()],
                auth: rand::random(),
                props: Vec::new(),
            }],
            withdrawn_routes: Vec::new(),
        })
    }

    /// Sends M our routes (when it takes them). Failures are logged: M asks again with its next control
    /// request.
    pub async fn send_routes(&self) {
        if !self.settings().relation.sends_routes() {
            return;
        }
        let (Some(link), Some(update)) = (self.link(), self.route_update()) else {
            return;
        };
        let now = self.now();
        let prepare = update.to_prepare(btp::Timestamp::from_system_time_clamped(now));
        let wait = time_until(system_time(prepare.expires_at.unix_millis()), now);
        match link.send(&prepare, wait).await {
            Ok(Ok(_)) => {
                tracing::info!(pair = self.name(), prefix = %update.new_routes[0].prefix, "routes sent to the modern connector")
            }
            Ok(Err(r)) => {
                tracing::warn!(pair = self.name(), code = r.code_str(), message = %r.message, "the modern connector refused our routes")
            }
            Err(e) => {
                tracing::warn!(pair = self.name(), error = %e, "sending routes to the modern connector failed")
            }
        }
    }

    /// Asks M (our parent) for our address and checks its asset against ours; on success the address is ours
    /// from now on.
    pub async fn ask_address(&self) -> Result<ilp_v4::Address, AddressError> {
        let link = self.link().ok_or(AddressError::NoLink)?;
        let now = self.now();
        let prepare = IldcpRequest.to_prepare(btp::Timestamp::from_system_time_clamped(now));
        let wait = time_until(system_time(prepare.expires_at.unix_millis()), now);
        let fulfill = match link.send(&prepare, wait).await {
            Ok(Ok(f)) => f,
            Ok(Err(r)) => {
                return Err(AddressError::Failed(format!(
                    "rejected {}: {}",
                    r.code_str(),
                    r.message
                )))
            }
            Err(e) => return Err(AddressError::Failed(e.to_string())),
        };
        let response = IldcpResponse::from_fulfill(&fulfill)
            .map_err(|e| AddressError::Failed(e.to_string()))?;
        let settings = self.settings();
        if response.asset_scale != settings.scales.modern
            || response.asset_code != settings.asset_code
        {
            return Err(AddressError::AssetMismatch {
                code: response.asset_code,
                scale: response.asset_scale,
                configured_code: settings.asset_code,
                configured_scale: settings.scales.modern,
            });
        }
        self.set_modern_address(response.address.clone());
        tracing::info!(pair = self.name(), address = %response.address, "address learned from the modern connector (IL-DCP)");
        Ok(response.address)
    }
}
