//! What the mock node saw, kept for assertions: ILP packets per account and transport, settle attempts, SE
//! account setups, peer.settle deliveries and settlement credits. Nothing here changes behaviour.

use btp::ilp_v4::IlpV4Packet;
use uuid::Uuid;

use crate::settlement::quantity::Scaled;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the account.
    In,
    /// Sent to the account.
    Out,
}

/// How a packet travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// BTP/2.0 (either side dialled).
    Btp,
    /// ILP-over-HTTP.
    Http,
    /// Inside the node: a payment a test originated ([`super::IlpNode::pay`]) or a local receiver's answer.
    Local,
}

/// One ILP packet on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRecord {
    /// The account's username.
    pub account: String,
    /// In or out.
    pub direction: Direction,
    /// BTP, HTTP or local.
    pub transport: Transport,
    /// The packet (a Prepare, or the Fulfill/Reject answering one).
    pub packet: IlpV4Packet,
}

impl PacketRecord {
    /// The ILP type byte (12 Prepare, 13 Fulfill, 14 Reject).
    pub fn type_id(&self) -> u8 {
        self.packet.type_id()
    }

    /// The amount of a Prepare (`None` for a Fulfill or Reject).
    pub fn amount(&self) -> Option<u64> {
        match &self.packet {
            IlpV4Packet::Prepare(p) => Some(p.amount),
            _ => None,
        }
    }

    /// The destination of a Prepare.
    pub fn destination(&self) -> Option<String> {
        match &self.packet {
            IlpV4Packet::Prepare(p) => Some(p.destination.to_string()),
            _ => None,
        }
    }

    /// The code of a Reject.
    pub fn reject_code(&self) -> Option<String> {
        match &self.packet {
            IlpV4Packet::Reject(r) => Some(r.code_str().to_owned()),
            _ => None,
        }
    }
}

/// One attempt to ask an SE to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRecord {
    /// The account's username.
    pub account: String,
    /// Amount in the account's units.
    pub amount: u64,
    /// The account's asset scale (the Quantity's scale).
    pub scale: u8,
    /// The Idempotency-Key of this attempt.
    pub key: String,
    /// HTTP status, `None` for a timeout or connection error.
    pub status: Option<u16>,
}

/// One `POST <se>/accounts` the node made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRecord {
    /// The account ID sent in `{"id"}`.
    pub account_id: Uuid,
    /// The full URL posted to.
    pub url: String,
    /// HTTP status, `None` for a timeout or connection error.
    pub status: Option<u16>,
}

/// One `peer.settle` message the node delivered to an SE (`POST <se>/accounts/<id>/messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The account's username.
    pub account: String,
    /// The full URL posted to.
    pub url: String,
    /// The Idempotency-Key sent.
    pub key: String,
    /// HTTP status, `None` for a timeout or connection error.
    pub status: Option<u16>,
}

/// One credit (`POST /accounts/<id>/settlements` from an SE) the node accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRecord {
    /// The account's username.
    pub account: String,
    /// The Idempotency-Key.
    pub key: String,
    /// The Quantity as received.
    pub quantity: Scaled,
    /// What was added, in the account's units (leftovers included, clamped to `u64::MAX`).
    pub credited: u64,
}

/// Everything recorded, in order.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub(crate) packets: Vec<PacketRecord>,
    pub(crate) settles: Vec<SettleRecord>,
    pub(crate) setups: Vec<SetupRecord>,
    pub(crate) messages: Vec<MessageRecord>,
    pub(crate) credits: Vec<CreditRecord>,
}
