//! The `claim-test` stock module: the legacy README's claim-based example, with an HMAC in place of a ledger
//! signature.
//!
//! The payer signs the cumulative total it owes and sends `{"amount": "<total>", "signature": "<hex>"}`; the
//! signature is HMAC-SHA256 under the shared `secret` option over [`SIGNING_DOMAIN`] followed by the decimal
//! total. The payee verifies it (constant time), keeps the best claim in the max-value tracker
//! [`INCOMING_CLAIM_KEY`] and credits the increase over the previous best, so replayed or older claims credit
//! nothing and forged ones are refused. Incoming prepares that would leave more than `maxUnsecured` of incoming
//! fulfilled-and-prepared value above the best claim are refused (`NotAcceptedError`), as in the legacy example.
//!
//! The module holds no ledger; it exists to exercise the claim path of trustlines and settlement engines with a
//! real check in `handle_incoming_claim`.
//!
//! Options:
//!
//! | option | meaning | default |
//! |--|--|--|
//! | `secret` | shared HMAC key (both sides must use the same) | required, non-empty |
//! | `maxUnsecured` | most incoming value not yet covered by a claim, in module units (string or number) | `"0"` |
//! | `scale` (or `currencyScale`) | scale of the unit claims count in | 9 |

use std::fmt;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::amount::{parse_amount, ModuleUnits};
use crate::claim::{claim_amount, claim_object, keep_best_claim};
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::iou::scale_option;
use crate::module::ChannelModule;
use crate::store::TransferRecord;

pub use crate::iou::INCOMING_CLAIM_KEY;

/// Name of the module in configuration.
pub const CLAIM_TEST_MODULE_NAME: &str = "claim-test";

/// Prefix of the signed message, so a signature over a total can never be confused with another HMAC use of
/// the same secret.
pub const SIGNING_DOMAIN: &str = "ilp-bridge claim-test v1\n";

type HmacSha256 = Hmac<Sha256>;

/// The `claim-test` module: HMAC-signed cumulative claims with a `maxUnsecured` bound.
#[derive(Clone)]
pub struct ClaimTestModule {
    /// Shared HMAC key.
    secret: Vec<u8>,
    /// Most incoming value (module units) allowed above the best claim.
    max_unsecured: ModuleUnits,
    /// Scale of the unit claims count in.
    scale: u8,
}

impl fmt::Debug for ClaimTestModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("ClaimTestModule")
            .field("max_unsecured", &self.max_unsecured)
            .field("scale", &self.scale)
            .finish_non_exhaustive()
    }
}

impl ClaimTestModule {
    /// Builds the module from its options (`secret` required; `maxUnsecured`, `scale`/`currencyScale`).
    pub fn from_options(options: &serde_json::Value) -> Result<Self, ModuleError> {
        let secret = match options.get("secret") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.as_bytes().to_vec(),
            _ => {
                return Err(ModuleError::InvalidFields(
                    "claim-test needs a non-empty \"secret\" option".to_owned(),
                ))
            }
        };
        let max_unsecured = match options.get("maxUnsecured") {
            None | Some(serde_json::Value::Null) => ModuleUnits::zero(),
            Some(serde_json::Value::String(s)) => ModuleUnits(parse_amount(s)?),
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(ModuleUnits::from).ok_or_else(|| {
                    ModuleError::InvalidFields(format!(
                        "maxUnsecured must be a non-negative integer, got {n}"
                    ))
                })?
            }
            Some(other) => {
                return Err(ModuleError::InvalidFields(format!(
                    "maxUnsecured must be a string or number, got {other}"
                )))
            }
        };
        Ok(ClaimTestModule {
            secret,
            max_unsecured,
            scale: scale_option(options)?,
        })
    }

    fn mac(&self, total: &ModuleUnits) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` only fails for fixed-size-key MACs.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(SIGNING_DOMAIN.as_bytes());
        mac.update(total.to_string().as_bytes());
        mac
    }

    /// The lowercase hex signature over a cumulative total.
    pub fn sign(&self, total: &ModuleUnits) -> String {
        hex::encode(self.mac(total).finalize().into_bytes())
    }

    /// Checks a hex signature over a total, in constant time.
    pub fn verify(&self, total: &ModuleUnits, signature_hex: &str) -> bool {
        match hex::decode(signature_hex) {
            Ok(sig) => self.mac(total).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }
}

#[async_trait]
impl ChannelModule for ClaimTestModule {
    fn name(&self) -> &str {
        CLAIM_TEST_MODULE_NAME
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

    /// Refuses the prepare if IFP (already including it) exceeds the best claim by more than `maxUnsecured`.
    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        let ifp =
            ModuleUnits::from_peer_ledger(ctx.main_log()?.sums().incoming_fulfilled_and_prepared);
        let best = ModuleUnits(
            ctx.max_value_tracker(INCOMING_CLAIM_KEY)?
                .get_max()
                .await?
                .value,
        );
        let unsecured = ifp.checked_sub(&best).unwrap_or_default();
        if unsecured > self.max_unsecured {
            tracing::debug!(
                account = ctx.account_id(),
                transfer = %record.transfer.id,
                %unsecured,
                max_unsecured = %self.max_unsecured,
                "claim-test refuses prepare"
            );
            return Err(ModuleError::NotAccepted(format!(
                "incoming balance would exceed the best claim by {unsecured} (maxUnsecured {})",
                self.max_unsecured
            )));
        }
        Ok(())
    }

    /// A signed claim for the cumulative total. Deterministic: the same total gives the same claim.
    async fn create_outgoing_claim(
        &self,
        _ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        Ok(Some(Claim::Json(serde_json::json!({
            "amount": total.to_string(),
            "signature": self.sign(total),
        }))))
    }

    /// Verifies the signature, keeps the best claim and credits its increase. A forged claim is an error; no
    /// claim, or an older or equal one, credits nothing.
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
        let signature = obj
            .get("signature")
            .and_then(|s| s.as_str())
            .ok_or_else(|| ModuleError::InvalidFields("claim has no \"signature\"".to_owned()))?;
        if !self.verify(&amount, signature) {
            tracing::warn!(account = ctx.account_id(), %amount, "claim-test: invalid claim signature");
            return Err(ModuleError::NotAccepted(
                "invalid claim signature".to_owned(),
            ));
        }
        keep_best_claim(ctx, INCOMING_CLAIM_KEY, amount, obj).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use num_bigint::BigUint;

    use super::*;
    use crate::amount::LedgerAmount;
    use crate::store::{Direction, Transfer, TransferId};
    use crate::testing::TestHost;

    fn module(max_unsecured: &str) -> Result<ClaimTestModule, ModuleError> {
        ClaimTestModule::from_options(&serde_json::json!({
            "secret": "s3cret",
            "maxUnsecured": max_unsecured,
            "scale": 6,
        }))
    }

    fn transfer(n: u8, amount: u64) -> Transfer {
        Transfer {
            id: TransferId([n; 16]),
            amount: LedgerAmount(amount),
            execution_condition: [7; 32],
            expires_at_ms: 4_000_000_000_000,
            ilp: Vec::new(),
            custom: None,
        }
    }

    #[test]
    fn options_are_checked() -> Result<(), ModuleError> {
        assert!(ClaimTestModule::from_options(&serde_json::json!({})).is_err());
        assert!(ClaimTestModule::from_options(&serde_json::json!({"secret": ""})).is_err());
        assert!(ClaimTestModule::from_options(
            &serde_json::json!({"secret": "x", "maxUnsecured": "-1"})
        )
        .is_err());
        let m = ClaimTestModule::from_options(
            &serde_json::json!({"secret": "hunter2", "maxUnsecured": 10}),
        )?;
        assert_eq!(m.asset_scale(), 9);
        assert!(!format!("{m:?}").contains("hunter2"));
        Ok(())
    }

    #[tokio::test]
    async fn signed_claims_credit_increases_and_forgeries_are_refused() -> Result<(), ModuleError> {
        let payer = module("0")?;
        let payee = module("0")?;
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "payer");

        let claim = payer
            .create_outgoing_claim(&ctx, &ModuleUnits::from(500))
            .await?;
        let credit = payee.handle_incoming_claim(&ctx, claim.as_ref()).await?;
        assert_eq!(
            credit,
            Some(IncomingCredit {
                amount: ModuleUnits::from(500),
                settlement_id: "500".to_owned()
            })
        );
        // Replayed: nothing.
        assert_eq!(
            payee.handle_incoming_claim(&ctx, claim.as_ref()).await?,
            None
        );

        // A claim whose amount was raised without re-signing is refused.
        let forged = Claim::Json(serde_json::json!({
            "amount": "900",
            "signature": payer.sign(&ModuleUnits::from(500)),
        }));
        assert!(matches!(
            payee.handle_incoming_claim(&ctx, Some(&forged)).await,
            Err(ModuleError::NotAccepted(_))
        ));
        // Signed with another secret: refused.
        let other = ClaimTestModule::from_options(&serde_json::json!({"secret": "other"}))?;
        let foreign = other
            .create_outgoing_claim(&ctx, &ModuleUnits::from(900))
            .await?;
        assert!(payee
            .handle_incoming_claim(&ctx, foreign.as_ref())
            .await
            .is_err());
        // No signature / non-hex signature: refused.
        let unsigned = Claim::Json(serde_json::json!({"amount": "900"}));
        assert!(payee
            .handle_incoming_claim(&ctx, Some(&unsigned))
            .await
            .is_err());
        let garbage = Claim::Json(serde_json::json!({"amount": "900", "signature": "zz"}));
        assert!(payee
            .handle_incoming_claim(&ctx, Some(&garbage))
            .await
            .is_err());
        assert_eq!(
            ctx.max_value_tracker(INCOMING_CLAIM_KEY)?
                .get_max()
                .await?
                .value,
            BigUint::from(500u32)
        );

        let claim = payer
            .create_outgoing_claim(&ctx, &ModuleUnits::from(800))
            .await?;
        let credit = payee.handle_incoming_claim(&ctx, claim.as_ref()).await?;
        assert_eq!(credit.map(|c| c.amount), Some(ModuleUnits::from(300)));
        Ok(())
    }

    #[tokio::test]
    async fn prepares_beyond_max_unsecured_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let payee = module("100")?;
        let payer = module("100")?;
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "payer");
        let log = ctx.main_log()?;

        // IFP 60: fine.
        log.prepare(&transfer(1, 60), Direction::Incoming).await?;
        let rec = log.get(&TransferId([1; 16])).await?.ok_or("missing")?;
        payee.handle_incoming_prepare(&ctx, &rec).await?;
        // IFP 100: exactly at the bound, fine.
        log.prepare(&transfer(2, 40), Direction::Incoming).await?;
        let rec = log.get(&TransferId([2; 16])).await?.ok_or("missing")?;
        payee.handle_incoming_prepare(&ctx, &rec).await?;
        // IFP 101: refused.
        log.prepare(&transfer(3, 1), Direction::Incoming).await?;
        let rec = log.get(&TransferId([3; 16])).await?.ok_or("missing")?;
        assert!(matches!(
            payee.handle_incoming_prepare(&ctx, &rec).await,
            Err(ModuleError::NotAccepted(_))
        ));
        // Once a claim for 50 arrives, 101 − 50 = 51 ≤ 100 passes.
        let claim = payer
            .create_outgoing_claim(&ctx, &ModuleUnits::from(50))
            .await?;
        payee.handle_incoming_claim(&ctx, claim.as_ref()).await?;
        payee.handle_incoming_prepare(&ctx, &rec).await?;
        Ok(())
    }

    #[tokio::test]
    async fn built_by_name() -> Result<(), ModuleError> {
        let m: Arc<dyn ChannelModule> =
            crate::build_module("claim-test", &serde_json::json!({"secret": "k"}))?;
        assert_eq!(m.name(), "claim-test");
        let t = crate::build_module("iou", &serde_json::json!({"scale": 3}))?;
        assert_eq!((t.name(), t.asset_scale()), ("iou", 3));
        let t = crate::build_module("trustline", &serde_json::json!({"scale": 3}))?;
        assert_eq!((t.name(), t.asset_scale()), ("trustline", 3));
        assert!(crate::build_module("nope", &serde_json::json!({})).is_err());
        Ok(())
    }
}
