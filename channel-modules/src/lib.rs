//! # channel-modules
//!
//! The payment-channel module contract of ilp-bridge: the legacy `ilp-plugin-payment-channel-framework`
//! module hooks as the [`ChannelModule`] trait, the [`ChannelContext`] a module works through, the interfaces of
//! the two money-holding primitives ([`store::TransferLog`], [`store::MaxValueTracker`]), and the stock modules.
//!
//! This crate does no networking of its own toward the peer and knows nothing of BTP or HTTP: the host (the
//! `ilp-bridge` crate) runs a module either inside a BTP/1.0 trustline (peer mode) or behind an RFC 38
//! settlement-engine account (engine mode).
//!
//! Layout:
//! * [`module`]: the trait and when each hook is called; [`claim`]: claims and credits; [`error`]: module
//!   errors;
//! * [`context`]: what a module can reach; [`identity`]: the rules of the node's ledger identity registry;
//! * [`store`]: transfer log / max-value tracker interfaces and their types; [`ledger`]: the limit and state
//!   rules both transfer-log stores apply; [`memory`]: the in-memory stores;
//! * [`amount`]: money in ledger, module and connector units, and the one bound on and parser of decimal
//!   amounts read from outside (claims, RFC 38 requests);
//! * [`sync`]: the shared poison-tolerant `lock` helper;
//! * the stock modules: [`iou`], [`xrp`], [`eth`] (`eth-payment`, `eth-channel`) and, with the `testing`
//!   feature, `claim_test`; [`build_module`] builds one by name;
//! * `testing` (feature `testing`): test hosts and the `ChannelModule` conformance suite.

pub mod amount;
pub mod claim;
#[cfg(any(test, feature = "testing"))]
pub mod claim_test;
pub mod clock;
pub mod context;
pub mod error;
pub mod eth;
pub mod identity;
pub mod iou;
pub mod ledger;
pub mod memory;
pub mod module;
pub mod store;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod xrp;

use std::sync::Arc;

pub use claim::{Claim, IncomingCredit};
pub use context::{ChannelContext, ContextHost};
pub use error::ModuleError;
pub use module::ChannelModule;

/// Names of the stock modules compiled in, as used in configuration (`module = "..."`). The `iou` module is
/// also selected by its alias [`iou::IOU_MODULE_ALIAS`] (`trustline`); `claim-test` exists only with the
/// `testing` feature, so a production build cannot be configured to run it.
pub const STOCK_MODULES: &[&str] = &[
    iou::IOU_MODULE_NAME,
    xrp::XRP_PAYCHAN_MODULE_NAME,
    eth::payment::ETH_PAYMENT_MODULE_NAME,
    eth::channel::ETH_CHANNEL_MODULE_NAME,
    #[cfg(any(test, feature = "testing"))]
    claim_test::CLAIM_TEST_MODULE_NAME,
];

/// The option names stock module `name` reads (its configuration's keys), or `None` for a name that is not a stock
/// module. A host refuses any other key by name, so that a typo is not silently a default.
pub fn module_option_names(name: &str) -> Option<&'static [&'static str]> {
    const SCALE: [&str; 2] = ["scale", "currencyScale"];
    const ETH_COMMON: [&str; 9] = [
        "rpcUri",
        "confirmations",
        "pollIntervalMs",
        "receiptTimeoutMs",
        "maxUnsecured",
        "peerAddress",
        "privateKeyFile",
        "privateKeyEnv",
        "privateKey",
    ];
    const IOU: [&str; 3] = [SCALE[0], SCALE[1], iou::OPT_TRUST_LIMIT];
    const CLAIM_TEST: [&str; 4] = ["secret", "maxUnsecured", SCALE[0], SCALE[1]];
    const XRP: [&str; 13] = [
        "secret",
        "secretFile",
        "secretEnv",
        "rippled",
        "address",
        "maxUnsecured",
        "claimInterval",
        "minSettleDelay",
        "expiryMargin",
        "expiryCheckInterval",
        "channel",
        "channelSecret",
        "peerChannel",
    ];
    const ETH_PAYMENT: [&str; 11] = [
        ETH_COMMON[0],
        ETH_COMMON[1],
        ETH_COMMON[2],
        ETH_COMMON[3],
        ETH_COMMON[4],
        ETH_COMMON[5],
        ETH_COMMON[6],
        ETH_COMMON[7],
        ETH_COMMON[8],
        eth::payment::OPT_TOKEN_ADDRESS,
        eth::payment::OPT_TOKEN_DECIMALS,
    ];
    const ETH_CHANNEL: [&str; 13] = [
        ETH_COMMON[0],
        ETH_COMMON[1],
        ETH_COMMON[2],
        ETH_COMMON[3],
        ETH_COMMON[4],
        ETH_COMMON[5],
        ETH_COMMON[6],
        ETH_COMMON[7],
        ETH_COMMON[8],
        eth::channel::OPT_CHANNEL_DEPOSIT,
        eth::channel::OPT_CHANNEL_TIMEOUT_SECS,
        eth::channel::OPT_CLOSE_MARGIN_SECS,
        eth::channel::OPT_EXPIRY_CHECK_INTERVAL_MS,
    ];
    match name {
        iou::IOU_MODULE_NAME | iou::IOU_MODULE_ALIAS => Some(&IOU),
        "claim-test" => Some(&CLAIM_TEST),
        xrp::XRP_PAYCHAN_MODULE_NAME => Some(&XRP),
        eth::payment::ETH_PAYMENT_MODULE_NAME => Some(&ETH_PAYMENT),
        eth::channel::ETH_CHANNEL_MODULE_NAME => Some(&ETH_CHANNEL),
        _ => None,
    }
}

/// Builds a stock module by name from its options (the legacy plugin options JSON, or the module section of
/// the TOML config). `iou` (or its alias `trustline`) is built for peer mode here; an engine builds it with
/// [`iou::IouModule::for_engine`].
pub fn build_module(
    name: &str,
    options: &serde_json::Value,
) -> Result<Arc<dyn ChannelModule>, ModuleError> {
    match name {
        iou::IOU_MODULE_NAME | iou::IOU_MODULE_ALIAS => Ok(Arc::new(
            iou::IouModule::from_options(options)?.configured_as(name),
        )),
        #[cfg(any(test, feature = "testing"))]
        claim_test::CLAIM_TEST_MODULE_NAME => Ok(Arc::new(
            claim_test::ClaimTestModule::from_options(options)?,
        )),
        xrp::XRP_PAYCHAN_MODULE_NAME => Ok(Arc::new(xrp::XrpPaychan::from_options(options)?)),
        eth::payment::ETH_PAYMENT_MODULE_NAME => Ok(Arc::new(
            eth::payment::EthPaymentModule::from_options(options)?,
        )),
        eth::channel::ETH_CHANNEL_MODULE_NAME => Ok(Arc::new(
            eth::channel::EthChannelModule::from_options(options)?,
        )),
        other => Err(ModuleError::InvalidFields(format!(
            "unknown channel module {other:?} (known: {})",
            STOCK_MODULES.join(", ")
        ))),
    }
}
