//! CCP, the Connector-to-Connector Protocol (`peer.route.*`, docs/modern.md §4.3): the two requests connectors
//! exchange routes with. Both travel in the `data` of a `peer.*` Prepare (amount 0, condition
//! [`PEER_PROTOCOL_CONDITION`], expiry 60 s after the sender's clock) and are answered with the "CCP response",
//! a Fulfill with [`PEER_PROTOCOL_FULFILLMENT`] and empty data ([`ccp_response`]).
//!
//! **`peer.route.control`, [`RouteControlRequest`]** ("send me your routes"):
//!
//! ```text
//! mode u8 (0 Idle, 1 Sync) | lastKnownRoutingTableId 16 | lastKnownEpoch u32 | var-uint n | n × var(feature, UTF-8)
//! ```
//!
//! **`peer.route.update`, [`RouteUpdateRequest`]** (new and withdrawn routes between two epochs):
//!
//! ```text
//! routingTableId 16 | currentEpochIndex u32 | fromEpochIndex u32 | toEpochIndex u32 | holdDownTime u32 (ms)
//! | var(speaker address) | var-uint n | n × Route | var-uint m | m × var(withdrawn prefix, UTF-8)
//! Route = var(prefix, UTF-8) | var-uint p | p × var(path address, UTF-8) | auth 32
//!         | var-uint q | q × RouteProp
//! RouteProp = meta u8 (0x80 optional, 0x40 transitive, 0x20 partial, 0x10 utf8) | id u16 | var(value)
//! ```
//!
//! The layout is interledger-rs's (`crates/interledger-ccp/src/packet.rs`), recorded in docs/modern.md §4.3.
//! Decoding follows it: integers big-endian; text fields must be UTF-8; the speaker must be a valid ILP address;
//! prefixes and path entries are kept as text (a prefix such as `g.` need not be a valid address); meta bits
//! other than the four flags are dropped (interledger-rs keeps only the four booleans); bytes after the last
//! field are ignored, as interledger-rs ignores them. Counts are checked against the bytes present before
//! anything is allocated, and the whole `data` is bounded by [`MAX_DATA_BYTES`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::ilp_v4::{Address, Fulfill, Prepare, MAX_DATA_BYTES};
use crate::oer::{self, Reader};
use crate::peer_protocol::{
    check_peer_prepare, peer_address, peer_fulfill, peer_prepare, PEER_PROTOCOL_EXPIRY,
};
#[cfg(doc)]
use crate::peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
use crate::time::Timestamp;

/// Destination of a route control request.
pub const CCP_CONTROL_DESTINATION: &str = "peer.route.control";
/// Destination of a route update request.
pub const CCP_UPDATE_DESTINATION: &str = "peer.route.update";

/// Route property flag: the property is optional.
pub const PROP_FLAG_OPTIONAL: u8 = 0x80;
/// Route property flag: the property is transitive.
pub const PROP_FLAG_TRANSITIVE: u8 = 0x40;
/// Route property flag: the property is partial.
pub const PROP_FLAG_PARTIAL: u8 = 0x20;
/// Route property flag: the value is UTF-8 text.
pub const PROP_FLAG_UTF8: u8 = 0x10;

/// Smallest encoded text field (a feature, path entry or withdrawn prefix): an empty var-oct.
const MIN_TEXT_BYTES: usize = 1;
/// Smallest encoded route property: meta, id, empty value.
const MIN_PROP_BYTES: usize = 1 + 2 + 1;
/// Smallest encoded route: empty prefix, a one-byte zero count (`01 00`), auth, a zero count.
const MIN_ROUTE_BYTES: usize = 1 + 2 + 32 + 2;

/// The mode of a route control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: the sender does not want routes.
    Idle,
    /// 1: the sender wants routes (from its last known epoch on).
    Sync,
}

impl Mode {
    /// The mode byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Mode::Idle => 0,
            Mode::Sync => 1,
        }
    }

    fn from_u8(mode: u8) -> Result<Mode, DecodeError> {
        match mode {
            0 => Ok(Mode::Idle),
            1 => Ok(Mode::Sync),
            type_id => Err(DecodeError::UnknownType {
                field: "ccp.control.mode",
                type_id,
            }),
        }
    }
}

/// `peer.route.control`: asks the receiver to send (Sync) or stop sending (Idle) route updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteControlRequest {
    /// Idle or Sync.
    pub mode: Mode,
    /// The ID of the sender's copy of the receiver's routing table (all zeros when it has none).
    pub last_known_routing_table_id: [u8; 16],
    /// The last epoch of that table the sender has applied.
    pub last_known_epoch: u32,
    /// Feature names (UTF-8).
    pub features: Vec<String>,
}

impl RouteControlRequest {
    /// Exact encoded size of the `data`.
    pub fn encoded_len(&self) -> usize {
        1 + 16
            + 4
            + oer::var_uint_len(self.features.len() as u64)
            + self
                .features
                .iter()
                .map(|f| oer::var_octet_string_len(f.len()))
                .sum::<usize>()
    }

    /// Appends the `data` encoding to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.mode.to_u8());
        buf.put_slice(&self.last_known_routing_table_id);
        buf.put_u32(self.last_known_epoch);
        oer::write_var_uint(buf, self.features.len() as u64);
        for feature in &self.features {
            oer::write_var_octet_string(buf, feature.as_bytes());
        }
    }

    /// The `data` encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes the `data` of a control request.
    pub fn decode(data: &Bytes) -> Result<RouteControlRequest, DecodeError> {
        check_size(data, "ccp.control")?;
        let mut r = Reader::new(data);
        let mode = Mode::from_u8(r.read_u8("ccp.control.mode")?)?;
        let last_known_routing_table_id = r.read_array("ccp.control.lastKnownRoutingTableId")?;
        let last_known_epoch = r.read_u32("ccp.control.lastKnownEpoch")?;
        let count = read_count(&mut r, MIN_TEXT_BYTES, "ccp.control.features.count")?;
        let mut features = Vec::with_capacity(count);
        for _ in 0..count {
            features.push(read_text(&mut r, "ccp.control.feature")?);
        }
        Ok(RouteControlRequest {
            mode,
            last_known_routing_table_id,
            last_known_epoch,
            features,
        })
    }

    /// The request Prepare, expiring [`PEER_PROTOCOL_EXPIRY`] after `now`.
    pub fn to_prepare(&self, now: Timestamp) -> Prepare {
        peer_prepare(
            peer_address(CCP_CONTROL_DESTINATION),
            self.to_bytes(),
            now,
            PEER_PROTOCOL_EXPIRY,
        )
    }

    /// Checks the destination and condition of `prepare` (as interledger-rs does) and decodes its data. Expiry is
    /// the caller's to check.
    pub fn from_prepare(prepare: &Prepare) -> Result<RouteControlRequest, DecodeError> {
        check_peer_prepare(prepare, CCP_CONTROL_DESTINATION, "ccp.control")?;
        RouteControlRequest::decode(&prepare.data)
    }
}

/// One property of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProp {
    /// Meta flag 0x80.
    pub is_optional: bool,
    /// Meta flag 0x40.
    pub is_transitive: bool,
    /// Meta flag 0x20.
    pub is_partial: bool,
    /// Meta flag 0x10: `value` is UTF-8 text (not checked).
    pub is_utf8: bool,
    /// Property ID.
    pub id: u16,
    /// Property value.
    pub value: Bytes,
}

impl RouteProp {
    fn meta(&self) -> u8 {
        let mut meta = 0;
        for (set, flag) in [
            (self.is_optional, PROP_FLAG_OPTIONAL),
            (self.is_transitive, PROP_FLAG_TRANSITIVE),
            (self.is_partial, PROP_FLAG_PARTIAL),
            (self.is_utf8, PROP_FLAG_UTF8),
        ] {
            if set {
                meta |= flag;
            }
        }
        meta
    }

    fn encoded_len(&self) -> usize {
        1 + 2 + oer::var_octet_string_len(self.value.len())
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.meta());
        buf.put_u16(self.id);
        oer::write_var_octet_string(buf, &self.value);
    }

    fn decode(r: &mut Reader<'_>) -> Result<RouteProp, DecodeError> {
        let meta = r.read_u8("ccp.update.route.prop.meta")?;
        let id = r.read_u16("ccp.update.route.prop.id")?;
        let value = r.read_var_octet_string("ccp.update.route.prop.value")?;
        Ok(RouteProp {
            is_optional: meta & PROP_FLAG_OPTIONAL != 0,
            is_transitive: meta & PROP_FLAG_TRANSITIVE != 0,
            is_partial: meta & PROP_FLAG_PARTIAL != 0,
            is_utf8: meta & PROP_FLAG_UTF8 != 0,
            id,
            value,
        })
    }
}

/// A route in an update: a prefix, the path of connectors to it, an auth value and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The address prefix this route reaches.
    pub prefix: String,
    /// The connectors on the way, nearest first.
    pub path: Vec<String>,
    /// Route authentication (each hop hashes it before forwarding).
    pub auth: [u8; 32],
    /// Properties.
    pub props: Vec<RouteProp>,
}

impl Route {
    fn encoded_len(&self) -> usize {
        oer::var_octet_string_len(self.prefix.len())
            + oer::var_uint_len(self.path.len() as u64)
            + self
                .path
                .iter()
                .map(|p| oer::var_octet_string_len(p.len()))
                .sum::<usize>()
            + 32
            + oer::var_uint_len(self.props.len() as u64)
            + self.props.iter().map(RouteProp::encoded_len).sum::<usize>()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        oer::write_var_octet_string(buf, self.prefix.as_bytes());
        oer::write_var_uint(buf, self.path.len() as u64);
        for hop in &self.path {
            oer::write_var_octet_string(buf, hop.as_bytes());
        }
        buf.put_slice(&self.auth);
        oer::write_var_uint(buf, self.props.len() as u64);
        for prop in &self.props {
            prop.encode(buf);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Route, DecodeError> {
        let prefix = read_text(r, "ccp.update.route.prefix")?;
        let hops = read_count(r, MIN_TEXT_BYTES, "ccp.update.route.path.count")?;
        let mut path = Vec::with_capacity(hops);
        for _ in 0..hops {
            path.push(read_text(r, "ccp.update.route.path")?);
        }
        let auth = r.read_array("ccp.update.route.auth")?;
        let props_count = read_count(r, MIN_PROP_BYTES, "ccp.update.route.props.count")?;
        let mut props = Vec::with_capacity(props_count);
        for _ in 0..props_count {
            props.push(RouteProp::decode(r)?);
        }
        Ok(Route {
            prefix,
            path,
            auth,
            props,
        })
    }
}

/// `peer.route.update`: the changes to the speaker's routing table from one epoch to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUpdateRequest {
    /// The speaker's routing table ID (a new one after every restart).
    pub routing_table_id: [u8; 16],
    /// The speaker's current epoch.
    pub current_epoch_index: u32,
    /// The first epoch this update covers.
    pub from_epoch_index: u32,
    /// The epoch this update brings the receiver to.
    pub to_epoch_index: u32,
    /// How long the routes stay valid without a refresh, in milliseconds.
    pub hold_down_time: u32,
    /// The speaker's ILP address.
    pub speaker: Address,
    /// Routes added or changed.
    pub new_routes: Vec<Route>,
    /// Prefixes no longer reachable.
    pub withdrawn_routes: Vec<String>,
}

impl RouteUpdateRequest {
    /// Exact encoded size of the `data`.
    pub fn encoded_len(&self) -> usize {
        16 + 4 * 4
            + oer::var_octet_string_len(self.speaker.as_bytes().len())
            + oer::var_uint_len(self.new_routes.len() as u64)
            + self
                .new_routes
                .iter()
                .map(Route::encoded_len)
                .sum::<usize>()
            + oer::var_uint_len(self.withdrawn_routes.len() as u64)
            + self
                .withdrawn_routes
                .iter()
                .map(|w| oer::var_octet_string_len(w.len()))
                .sum::<usize>()
    }

    /// Appends the `data` encoding to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.routing_table_id);
        buf.put_u32(self.current_epoch_index);
        buf.put_u32(self.from_epoch_index);
        buf.put_u32(self.to_epoch_index);
        buf.put_u32(self.hold_down_time);
        oer::write_var_octet_string(buf, self.speaker.as_bytes());
        oer::write_var_uint(buf, self.new_routes.len() as u64);
        for route in &self.new_routes {
            route.encode(buf);
        }
        oer::write_var_uint(buf, self.withdrawn_routes.len() as u64);
        for prefix in &self.withdrawn_routes {
            oer::write_var_octet_string(buf, prefix.as_bytes());
        }
    }

    /// The `data` encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes the `data` of an update request.
    pub fn decode(data: &Bytes) -> Result<RouteUpdateRequest, DecodeError> {
        check_size(data, "ccp.update")?;
        let mut r = Reader::new(data);
        let routing_table_id = r.read_array("ccp.update.routingTableId")?;
        let current_epoch_index = r.read_u32("ccp.update.currentEpochIndex")?;
        let from_epoch_index = r.read_u32("ccp.update.fromEpochIndex")?;
        let to_epoch_index = r.read_u32("ccp.update.toEpochIndex")?;
        let hold_down_time = r.read_u32("ccp.update.holdDownTime")?;
        let speaker = Address::from_bytes(
            r.read_var_octet_string("ccp.update.speaker")?,
            "ccp.update.speaker",
        )?;
        let routes = read_count(&mut r, MIN_ROUTE_BYTES, "ccp.update.newRoutes.count")?;
        let mut new_routes = Vec::with_capacity(routes);
        for _ in 0..routes {
            new_routes.push(Route::decode(&mut r)?);
        }
        let withdrawn = read_count(&mut r, MIN_TEXT_BYTES, "ccp.update.withdrawnRoutes.count")?;
        let mut withdrawn_routes = Vec::with_capacity(withdrawn);
        for _ in 0..withdrawn {
            withdrawn_routes.push(read_text(&mut r, "ccp.update.withdrawnRoute")?);
        }
        Ok(RouteUpdateRequest {
            routing_table_id,
            current_epoch_index,
            from_epoch_index,
            to_epoch_index,
            hold_down_time,
            speaker,
            new_routes,
            withdrawn_routes,
        })
    }

    /// The request Prepare, expiring [`PEER_PROTOCOL_EXPIRY`] after `now`.
    pub fn to_prepare(&self, now: Timestamp) -> Prepare {
        peer_prepare(
            peer_address(CCP_UPDATE_DESTINATION),
            self.to_bytes(),
            now,
            PEER_PROTOCOL_EXPIRY,
        )
    }

    /// Checks the destination and condition of `prepare` (as interledger-rs does) and decodes its data. Expiry is
    /// the caller's to check.
    pub fn from_prepare(prepare: &Prepare) -> Result<RouteUpdateRequest, DecodeError> {
        check_peer_prepare(prepare, CCP_UPDATE_DESTINATION, "ccp.update")?;
        RouteUpdateRequest::decode(&prepare.data)
    }
}

/// The "CCP response": the Fulfill answering an accepted control or update request (32 zero bytes, empty data).
pub fn ccp_response() -> Fulfill {
    peer_fulfill(Bytes::new())
}

fn check_size(data: &Bytes, field: &'static str) -> Result<(), DecodeError> {
    if data.len() > MAX_DATA_BYTES {
        return Err(DecodeError::TooLarge {
            field,
            actual: data.len() as u64,
            max: MAX_DATA_BYTES as u64,
        });
    }
    Ok(())
}

/// Reads a var-uint count of items that each take at least `min_item_bytes`, refusing counts the remaining
/// bytes cannot hold (so a hostile count cannot make us allocate).
fn read_count(
    r: &mut Reader<'_>,
    min_item_bytes: usize,
    field: &'static str,
) -> Result<usize, DecodeError> {
    let count = r.read_var_uint(field)?;
    let available = r.remaining();
    let max = (available / min_item_bytes) as u64;
    if count > max {
        return Err(DecodeError::Truncated {
            field,
            needed: usize::try_from(count)
                .unwrap_or(usize::MAX)
                .saturating_mul(min_item_bytes),
            available,
        });
    }
    // `count <= available`, which is a usize.
    Ok(count as usize)
}

fn read_text(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    Ok(r.read_utf8_str_max(MAX_DATA_BYTES, field)?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};

    #[test]
    fn destinations_are_valid_addresses() {
        assert!(Address::new(CCP_CONTROL_DESTINATION).is_ok());
        assert!(Address::new(CCP_UPDATE_DESTINATION).is_ok());
    }

    #[test]
    fn response_is_zero_fulfillment_empty_data() {
        let f = ccp_response();
        assert_eq!(f.fulfillment, PEER_PROTOCOL_FULFILLMENT);
        assert!(f.data.is_empty());
    }

    #[test]
    fn prepare_checks() -> Result<(), DecodeError> {
        let now = Timestamp::from_unix_millis(5_000).ok_or(DecodeError::InvalidTime {
            field: "test",
            reason: "range",
        })?;
        let control = RouteControlRequest {
            mode: Mode::Sync,
            last_known_routing_table_id: [0; 16],
            last_known_epoch: 0,
            features: Vec::new(),
        };
        let p = control.to_prepare(now);
        assert_eq!(p.amount, 0);
        assert_eq!(p.execution_condition, PEER_PROTOCOL_CONDITION);
        assert_eq!(p.expires_at.unix_millis(), 65_000);
        assert_eq!(RouteControlRequest::from_prepare(&p)?, control);
        assert!(matches!(
            RouteUpdateRequest::from_prepare(&p),
            Err(DecodeError::Mismatch {
                field: "ccp.update",
                expected: CCP_UPDATE_DESTINATION
            })
        ));
        let mut wrong = p;
        wrong.execution_condition = [0; 32];
        assert!(matches!(
            RouteControlRequest::from_prepare(&wrong),
            Err(DecodeError::Mismatch {
                field: "ccp.control",
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn unknown_meta_bits_are_dropped() -> Result<(), DecodeError> {
        let bytes = Bytes::from_static(&[0x5f, 0x00, 0x07, 0x01, 0xaa]);
        let mut r = Reader::new(&bytes);
        let prop = RouteProp::decode(&mut r)?;
        assert!(!prop.is_optional && prop.is_transitive && !prop.is_partial && prop.is_utf8);
        assert_eq!(prop.meta(), 0x50);
        assert_eq!(prop.id, 7);
        Ok(())
    }
}
