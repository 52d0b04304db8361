//! The `iou` stock module (configuration also accepts its alias `trustline`): no ledger at all, only unsigned
//! IOUs. The payer sends, as its claim, an IOU for the cumulative total it owes, `{"amount": "<total>"}`, signed
//! by nobody; the payee keeps the best IOU in the max-value tracker [`INCOMING_CLAIM_KEY`] and credits the
//! increase over the previous best, so a replayed or older IOU credits nothing. The IOU's cumulative amount is
//! its settlement ID.
//!
//! In peer mode (inside a BTP/1.0 trustline) the trustline's `maxBalance` bounds the peer, so the module accepts
//! every prepare and, unless `trustLimit` is given, every IOU. In engine mode (RFC 38) an accepted IOU credits
//! the connector with money the peer has not paid and nothing else bounds the peer, so the module accepts IOUs
//! only up to `trustLimit`, **0 when unset** ([`IouModule::for_engine`]). An IOU past the limit is refused
//! whole and changes nothing: an IOU states one cumulative total and the peer's engine counts it delivered once
//! accepted, so crediting part of it would leave the two sides' totals disagreeing; refused, the settlement
//! stays pending on both sides and goes through once the operator raises `trustLimit`.
//!
//! Options (legacy plugin options JSON or the module section of the TOML config):
//!
//! | option | meaning | default |
//! |--|--|--|
//! | `scale` (or `currencyScale`) | scale of the unit IOUs count in | 9 |
//! | `trustLimit` | most the cumulative IOUs accepted from the peer may reach, in the module's units (a decimal string or an integer); an IOU past it is refused | engine mode: `"0"` (no credit); peer mode: none (the trustline's `maxBalance` bounds the peer) |

use crate::amount::ModuleUnits;
use async_trait::async_trait;

use crate::amount::parse_amount;
use crate::claim::{claim_amount, claim_object, keep_best_claim, Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::TransferRecord;

/// Name of the module in configuration.
pub const IOU_MODULE_NAME: &str = "iou";

/// The other name configuration accepts for this module (its name before the BTP/1.0 peer relationship took
/// the word "trustline"). A module built under it reports it as its [`ChannelModule::name`].
pub const IOU_MODULE_ALIAS: &str = "trustline";

/// Max-value tracker key holding the best incoming IOU (legacy key name).
pub const INCOMING_CLAIM_KEY: &str = "incoming_claim";

/// Default asset scale when no `scale`/`currencyScale` option is given.
pub const DEFAULT_SCALE: u8 = 9;

/// Option naming the most the cumulative IOUs accepted from the peer may reach, in the module's units.
pub const OPT_TRUST_LIMIT: &str = "trustLimit";

/// The `iou` module: unsecured credit, settled by unsigned cumulative IOUs.
#[derive(Debug, Clone)]
pub struct IouModule {
    /// The name it was configured under: [`IOU_MODULE_NAME`] or [`IOU_MODULE_ALIAS`].
    name: &'static str,
    /// Scale of the unit IOUs count in.
    scale: u8,
    /// Most the cumulative IOUs accepted from the peer may reach; `None`: no limit of the module's own (peer
    /// mode, where the transfer log's `maxBalance` bounds the peer).
    trust_limit: Option<ModuleUnits>,
}

impl IouModule {
    /// Builds the module for peer mode (inside a BTP/1.0 trustline) from its options: `scale` or
    /// `currencyScale` (default 9) and `trustLimit` (default none: the trustline's `maxBalance` bounds the peer).
    pub fn from_options(options: &serde_json::Value) -> Result<Self, ModuleError> {
        Ok(IouModule {
            name: IOU_MODULE_NAME,
            scale: scale_option(options)?,
            trust_limit: trust_limit_option(options)?,
        })
    }

    /// Builds the module for engine mode (RFC 38), where an accepted IOU credits the connector with prepaid money
    /// and nothing else bounds the peer: `trustLimit` defaults to 0, so without it no IOU is credited.
    pub fn for_engine(options: &serde_json::Value) -> Result<Self, ModuleError> {
        Ok(IouModule {
            name: IOU_MODULE_NAME,
            scale: scale_option(options)?,
            trust_limit: Some(engine_trust_limit(options)?),
        })
    }

    /// Builds the module with an explicit scale and no trust limit of its own (peer mode).
    pub fn new(scale: u8) -> Self {
        IouModule {
            name: IOU_MODULE_NAME,
            scale,
            trust_limit: None,
        }
    }

    /// The most the cumulative IOUs accepted from the peer may reach, if the module limits it.
    pub fn trust_limit(&self) -> Option<&ModuleUnits> {
        self.trust_limit.as_ref()
    }

    /// The module as configured under `configured`: it reports [`IOU_MODULE_ALIAS`] as its name when configured
    /// under the alias (so status output names what the configuration says), else [`IOU_MODULE_NAME`].
    pub fn configured_as(mut self, configured: &str) -> Self {
        self.name = if configured == IOU_MODULE_ALIAS {
            IOU_MODULE_ALIAS
        } else {
            IOU_MODULE_NAME
        };
        self
    }
}

/// Whether the configured module name `name` selects this module ([`IOU_MODULE_NAME`] or [`IOU_MODULE_ALIAS`]).
pub fn selects_iou_module(name: &str) -> bool {
    name == IOU_MODULE_NAME || name == IOU_MODULE_ALIAS
}

/// The trust limit engine mode runs with for these options: `trustLimit`, or 0 when it is not set.
pub fn engine_trust_limit(options: &serde_json::Value) -> Result<ModuleUnits, ModuleError> {
    Ok(trust_limit_option(options)?.unwrap_or_default())
}

/// Reads the `trustLimit` option: a decimal string or a non-negative JSON integer, in the module's units.
fn trust_limit_option(options: &serde_json::Value) -> Result<Option<ModuleUnits>, ModuleError> {
    let invalid = |got: &dyn std::fmt::Display| {
        ModuleError::InvalidFields(format!(
            "{OPT_TRUST_LIMIT} must be a non-negative decimal integer, got {got}"
        ))
    };
    match options.get(OPT_TRUST_LIMIT) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => parse_amount(s)
            .map(|v| Some(ModuleUnits(v)))
            .map_err(|_| invalid(s)),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|v| Some(ModuleUnits::from(v)))
            .ok_or_else(|| invalid(n)),
        Some(other) => Err(invalid(other)),
    }
}

/// Reads the `scale` (or legacy `currencyScale`) option: a number or a decimal string in 0..=255; default 9.
pub(crate) fn scale_option(options: &serde_json::Value) -> Result<u8, ModuleError> {
    let raw = options
        .get("scale")
        .or_else(|| options.get("currencyScale"));
    match raw {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_SCALE),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| ModuleError::InvalidFields(format!("scale must be 0..=255, got {n}"))),
        Some(serde_json::Value::String(s)) => s
            .parse::<u8>()
            .map_err(|_| ModuleError::InvalidFields(format!("scale must be 0..=255, got {s:?}"))),
        Some(other) => Err(ModuleError::InvalidFields(format!(
            "scale must be a number, got {other}"
        ))),
    }
}

#[async_trait]
impl ChannelModule for IouModule {
    fn name(&self) -> &str {
        self.name
    }

    /// The value of the best incoming claim kept.
    async fn incoming_total(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ModuleUnits>, ModuleError> {
        Ok(Some(ModuleUnits(
            ctx.max_value_tracker(INCOMING_CLAIM_KEY)?
                .get_max()
                .await?
                .value,
        )))
    }

    fn asset_scale(&self) -> u8 {
        self.scale
    }

    async fn connect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    /// Always accepts: the trustline's limit on the transfer log is the only guard.
    async fn handle_incoming_prepare(
        &self,
        _ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        Ok(())
    }

    /// An unsigned IOU for the cumulative total. Idempotent: the same total gives the same IOU.
    async fn create_outgoing_claim(
        &self,
        _ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        Ok(Some(Claim::Json(
            serde_json::json!({ "amount": total.to_string() }),
        )))
    }

    /// Keeps the best IOU and credits its increase; no claim, or an older or equal one, credits nothing.
    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let Some(claim) = claim else {
            return Ok(None);
        };
        let obj = claim_object(claim)?;
        let amount = claim_amount(&obj)?;
        if let Some(limit) = &self.trust_limit {
            if &amount > limit {
                // Refused whole, before the tracker moves: see the module doc for why not credited in part.
                tracing::warn!(account = ctx.account_id(), total = %amount, trust_limit = %limit, "IOU past the trust limit refused");
                return Err(ModuleError::NotAccepted(if limit.is_zero() {
                    format!(
                        "IOU for {amount} refused: this engine extends no credit; set the trustline module's \
                         {OPT_TRUST_LIMIT} option to the most the peer's IOUs may reach"
                    )
                } else {
                    format!("IOU for {amount} is past the {OPT_TRUST_LIMIT} {limit}")
                }));
            }
        }
        let credit = keep_best_claim(ctx, INCOMING_CLAIM_KEY, amount, obj).await?;
        if let Some(c) = &credit {
            tracing::debug!(account = ctx.account_id(), increase = %c.amount, total = %c.settlement_id, "IOU accepted");
        }
        Ok(credit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::MAX_AMOUNT_DIGITS;
    use crate::testing::TestHost;
    use num_bigint::BigUint;

    #[test]
    fn amounts_are_plain_decimals_of_bounded_length() {
        let longest = "9".repeat(MAX_AMOUNT_DIGITS);
        assert!(parse_amount(&longest).is_ok());
        assert!(parse_amount(&format!("{longest}9")).is_err());
        assert!(parse_amount(&"1".repeat(1 << 20)).is_err());
        for bad in ["", "+1", "-1", "1_000", "1e3", " 1"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_amount("0042").ok(), Some(BigUint::from(42u8)));
    }

    fn iou(amount: &str) -> Claim {
        Claim::Json(serde_json::json!({ "amount": amount }))
    }

    #[test]
    fn scale_from_options() -> Result<(), ModuleError> {
        assert_eq!(
            IouModule::from_options(&serde_json::json!({}))?.asset_scale(),
            9
        );
        assert_eq!(
            IouModule::from_options(&serde_json::json!({"scale": 6}))?.asset_scale(),
            6
        );
        assert_eq!(
            IouModule::from_options(&serde_json::json!({"currencyScale": "2"}))?.asset_scale(),
            2
        );
        assert!(IouModule::from_options(&serde_json::json!({"scale": 256})).is_err());
        assert!(IouModule::from_options(&serde_json::json!({"scale": -1})).is_err());
        assert!(IouModule::from_options(&serde_json::json!({"scale": [1]})).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn outgoing_claim_is_the_cumulative_total() -> Result<(), ModuleError> {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        let m = IouModule::new(9);
        let total = ModuleUnits(
            "123456789012345678901234567890"
                .parse()
                .map_err(|_| ModuleError::InvalidFields("test literal".to_owned()))?,
        );
        assert_eq!(
            m.create_outgoing_claim(&ctx, &total).await?,
            Some(iou("123456789012345678901234567890"))
        );
        Ok(())
    }

    #[tokio::test]
    async fn incoming_claims_credit_the_increase_once() -> Result<(), ModuleError> {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        let m = IouModule::new(9);

        assert_eq!(m.handle_incoming_claim(&ctx, None).await?, None);
        let c = m.handle_incoming_claim(&ctx, Some(&iou("100"))).await?;
        assert_eq!(
            c,
            Some(IncomingCredit {
                amount: ModuleUnits::from(100),
                settlement_id: "100".to_owned()
            })
        );
        // Replay and older claims credit nothing.
        assert_eq!(
            m.handle_incoming_claim(&ctx, Some(&iou("100"))).await?,
            None
        );
        assert_eq!(m.handle_incoming_claim(&ctx, Some(&iou("40"))).await?, None);
        let c = m.handle_incoming_claim(&ctx, Some(&iou("250"))).await?;
        assert_eq!(
            c,
            Some(IncomingCredit {
                amount: ModuleUnits::from(150),
                settlement_id: "250".to_owned()
            })
        );
        // A text claim holding the JSON object is accepted too.
        let c = m
            .handle_incoming_claim(&ctx, Some(&Claim::Text(r#"{"amount":"251"}"#.to_owned())))
            .await?;
        assert_eq!(c.map(|c| c.amount), Some(ModuleUnits::from(1)));
        let best = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?.get_max().await?;
        assert_eq!(best.value, BigUint::from(251u32));
        Ok(())
    }

    #[tokio::test]
    async fn malformed_claims_are_refused_and_change_nothing() -> Result<(), ModuleError> {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        let m = IouModule::new(9);
        for bad in [
            Claim::Json(serde_json::json!({})),
            Claim::Json(serde_json::json!({"amount": "-5"})),
            Claim::Json(serde_json::json!({"amount": "1e3"})),
            Claim::Json(serde_json::json!({"amount": ""})),
            Claim::Json(serde_json::json!({"amount": 1.5})),
            Claim::Text("not json".to_owned()),
            Claim::Binary(vec![0xff, 0x00]),
        ] {
            assert!(
                matches!(
                    m.handle_incoming_claim(&ctx, Some(&bad)).await,
                    Err(ModuleError::InvalidFields(_))
                ),
                "{bad:?} accepted"
            );
        }
        let best = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?.get_max().await?;
        assert_eq!(best.value, BigUint::default());
        Ok(())
    }

    #[test]
    fn trust_limit_from_options() -> Result<(), ModuleError> {
        let engine = |o| IouModule::for_engine(&o).map(|m| m.trust_limit().cloned());
        let peer = |o| IouModule::from_options(&o).map(|m| m.trust_limit().cloned());
        assert_eq!(engine(serde_json::json!({}))?, Some(ModuleUnits::zero()));
        assert_eq!(peer(serde_json::json!({}))?, None);
        for (given, want) in [
            (serde_json::json!("1000"), 1000u64),
            (serde_json::json!(7), 7),
        ] {
            let o = serde_json::json!({ "trustLimit": given });
            assert_eq!(engine(o.clone())?, Some(ModuleUnits::from(want)));
            assert_eq!(peer(o)?, Some(ModuleUnits::from(want)));
        }
        for bad in [
            serde_json::json!("-1"),
            serde_json::json!("1e3"),
            serde_json::json!("Infinity"),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!([1]),
        ] {
            let o = serde_json::json!({ "trustLimit": bad });
            assert!(engine(o.clone()).is_err(), "{o}");
            assert!(peer(o.clone()).is_err(), "{o}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn engine_mode_credits_up_to_the_trust_limit_only() -> Result<(), ModuleError> {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        // No trustLimit: nothing is credited, not even one unit.
        let m = IouModule::for_engine(&serde_json::json!({}))?;
        for amount in ["1", &"9".repeat(MAX_AMOUNT_DIGITS)] {
            let refused = m.handle_incoming_claim(&ctx, Some(&iou(amount))).await;
            assert!(
                matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains(OPT_TRUST_LIMIT)),
                "{refused:?}"
            );
        }
        let m = IouModule::for_engine(&serde_json::json!({"trustLimit": "100"}))?;
        let c = m.handle_incoming_claim(&ctx, Some(&iou("60"))).await?;
        assert_eq!(c.map(|c| c.amount), Some(ModuleUnits::from(60)));
        assert!(matches!(
            m.handle_incoming_claim(&ctx, Some(&iou("101"))).await,
            Err(ModuleError::NotAccepted(_))
        ));
        // The refused IOU left the best claim where it was.
        let best = ctx.max_value_tracker(INCOMING_CLAIM_KEY)?.get_max().await?;
        assert_eq!(best.value, BigUint::from(60u32));
        let c = m.handle_incoming_claim(&ctx, Some(&iou("100"))).await?;
        assert_eq!(c.map(|c| c.amount), Some(ModuleUnits::from(40)));
        Ok(())
    }

    /// In peer mode, without `trustLimit`, the log's `maxBalance` is the guard, and the module
    /// records any IOU.
    #[tokio::test]
    async fn peer_mode_has_no_limit_of_its_own() -> Result<(), ModuleError> {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "peer");
        let m = IouModule::from_options(&serde_json::json!({"scale": 6}))?;
        let huge = "9".repeat(MAX_AMOUNT_DIGITS);
        let c = m.handle_incoming_claim(&ctx, Some(&iou(&huge))).await?;
        assert_eq!(c.map(|c| c.settlement_id), Some(huge));
        Ok(())
    }

    #[tokio::test]
    async fn pair_settles_through_ious() -> Result<(), ModuleError> {
        let a: Arc<dyn ChannelModule> = Arc::new(IouModule::new(6));
        let b: Arc<dyn ChannelModule> = Arc::new(IouModule::new(6));
        let pair = TestHost::pair(a, serde_json::json!({}), b, serde_json::json!({}));
        let mut credited = ModuleUnits::zero();
        for total in [5u64, 9, 9, 20, 7, 21] {
            let claim = pair
                .a
                .module
                .create_outgoing_claim(&pair.a.ctx, &ModuleUnits::from(total))
                .await?;
            if let Some(c) = pair
                .b
                .module
                .handle_incoming_claim(&pair.b.ctx, claim.as_ref())
                .await?
            {
                credited += &c.amount;
            }
        }
        assert_eq!(credited, ModuleUnits::from(21));
        Ok(())
    }

    use std::sync::Arc;
}
