//! IL-DCP, the Interledger Dynamic Configuration Protocol (`peer.config`, docs/modern.md §4.1): a child asks its
//! parent for its ILP address and asset.
//!
//! * **Request:** a Prepare to `peer.config`, amount 0, empty `data`, condition
//!   [`PEER_PROTOCOL_CONDITION`] (`66687aad…`), expiring 60 s after the sender's clock ([`IldcpRequest`]).
//! * **Response:** a Fulfill with [`PEER_PROTOCOL_FULFILLMENT`] (32 zero bytes) and `data` =
//!   `var(address) | u8 asset scale | var(asset code)` ([`IldcpResponse`]).
//!
//! interledger-rs answers only a Prepare with exactly that destination *and* condition
//! (`is_ildcp_request` in `crates/interledger-ildcp/src/packet.rs`); [`IldcpRequest::matches`] applies the same
//! test.
//!
//! **Decoding the response.** The address must be a valid ILP address (interledger-rs parses it as an `Address`),
//! the asset code must be UTF-8 (it is a currency code; `ilp-protocol-ildcp` reads it as a string). Bytes after
//! the asset code are ignored, as interledger-rs and `ilp-protocol-ildcp` ignore them, so re-encoding a decoded
//! response gives its canonical bytes. Every field is bounded by the ILPv4 `data` limit
//! ([`MAX_DATA_BYTES`]).

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

/// The destination of an IL-DCP request.
pub const ILDCP_DESTINATION: &str = "peer.config";

/// An IL-DCP request. It carries nothing: the parent answers from the account the request arrived on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IldcpRequest;

impl IldcpRequest {
    /// The request Prepare, expiring [`PEER_PROTOCOL_EXPIRY`] after `now`.
    pub fn to_prepare(self, now: Timestamp) -> Prepare {
        peer_prepare(
            peer_address(ILDCP_DESTINATION),
            Bytes::new(),
            now,
            PEER_PROTOCOL_EXPIRY,
        )
    }

    /// True when `prepare` is an IL-DCP request by interledger-rs's test: destination `peer.config` and the
    /// peer-protocol condition, both exact. Amount, expiry and data are not looked at.
    pub fn matches(prepare: &Prepare) -> bool {
        check_peer_prepare(prepare, ILDCP_DESTINATION, "ildcp.request").is_ok()
    }

    /// Like [`Self::matches`], but says which field differs.
    pub fn check(prepare: &Prepare) -> Result<IldcpRequest, DecodeError> {
        check_peer_prepare(prepare, ILDCP_DESTINATION, "ildcp.request")?;
        Ok(IldcpRequest)
    }
}

/// An IL-DCP response: the child's address and asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IldcpResponse {
    /// The ILP address the parent assigns to the child.
    pub address: Address,
    /// The asset scale of the account.
    pub asset_scale: u8,
    /// The asset code of the account (for example `XRP`).
    pub asset_code: String,
}

impl IldcpResponse {
    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        oer::var_octet_string_len(self.address.as_bytes().len())
            + 1
            + oer::var_octet_string_len(self.asset_code.len())
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        oer::write_var_octet_string(buf, self.address.as_bytes());
        buf.put_u8(self.asset_scale);
        oer::write_var_octet_string(buf, self.asset_code.as_bytes());
    }

    /// The encoding as a new buffer (the Fulfill `data`).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes the Fulfill `data` of an IL-DCP response.
    pub fn decode(data: &Bytes) -> Result<IldcpResponse, DecodeError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(DecodeError::TooLarge {
                field: "ildcp.response",
                actual: data.len() as u64,
                max: MAX_DATA_BYTES as u64,
            });
        }
        let mut r = Reader::new(data);
        let address =
            Address::from_bytes(r.read_var_octet_string("ildcp.address")?, "ildcp.address")?;
        let asset_scale = r.read_u8("ildcp.assetScale")?;
        let asset_code = r
            .read_utf8_str_max(MAX_DATA_BYTES, "ildcp.assetCode")?
            .to_owned();
        // Anything after the asset code is ignored (see the module docs).
        Ok(IldcpResponse {
            address,
            asset_scale,
            asset_code,
        })
    }

    /// The Fulfill carrying this response.
    pub fn to_fulfill(&self) -> Fulfill {
        peer_fulfill(self.to_bytes())
    }

    /// Decodes the response carried by `fulfill`. The fulfillment is not checked: a `peer.*` reply is never
    /// checked against its condition (docs/modern.md §1.10, bridge rule).
    pub fn from_fulfill(fulfill: &Fulfill) -> Result<IldcpResponse, DecodeError> {
        IldcpResponse::decode(&fulfill.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};

    #[test]
    fn destination_is_a_valid_address() {
        assert!(Address::new(ILDCP_DESTINATION).is_ok());
    }

    #[test]
    fn request_prepare_and_match() -> Result<(), DecodeError> {
        let now = Timestamp::from_unix_millis(0).ok_or(DecodeError::InvalidTime {
            field: "test",
            reason: "range",
        })?;
        let p = IldcpRequest.to_prepare(now);
        assert_eq!(p.destination.as_str(), "peer.config");
        assert_eq!(p.amount, 0);
        assert!(p.data.is_empty());
        assert_eq!(p.execution_condition, PEER_PROTOCOL_CONDITION);
        assert_eq!(p.expires_at.unix_millis(), 60_000);
        assert!(IldcpRequest::matches(&p));
        let mut wrong = p.clone();
        wrong.execution_condition[31] ^= 1;
        assert!(!IldcpRequest::matches(&wrong));
        assert!(matches!(
            IldcpRequest::check(&wrong),
            Err(DecodeError::Mismatch {
                field: "ildcp.request",
                ..
            })
        ));
        let mut elsewhere = p;
        elsewhere.destination = Address::new("peer.configx")?;
        assert!(!IldcpRequest::matches(&elsewhere));
        Ok(())
    }

    #[test]
    fn response_fulfill() -> Result<(), DecodeError> {
        let r = IldcpResponse {
            address: Address::new("example.parent.child")?,
            asset_scale: 9,
            asset_code: "XRP".to_owned(),
        };
        let f = r.to_fulfill();
        assert_eq!(f.fulfillment, PEER_PROTOCOL_FULFILLMENT);
        assert_eq!(IldcpResponse::from_fulfill(&f)?, r);
        Ok(())
    }
}
