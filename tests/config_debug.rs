//! A whole node configuration printed with `{:?}` and `{:#?}` (as a log line or a panic message would) shows
//! no secret: incoming secrets, tokens in server URLs, module private keys, the engine's tokens.

use ilp_bridge::config::node::NodeConfig;

/// Every secret of [`CONFIG`], each unique so a hit names the field that leaked.
const SECRETS: &[&str] = &[
    "incoming-secret-9f2c",
    "url-token-71ab",
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "snoPBrXtMeMyMHUVTgbuqAfg1SUTb",
    "xrp-secret-in-options-json-5d1e",
    "admin-token-0c3d",
    "api-token-6a7b",
    "conn-pass-8e4f",
];

const CONFIG: &str = r#"
[[peer]]
name = "legacy-client"
options = { listener = { port = 4195 }, incomingSecret = "incoming-secret-9f2c", maxBalance = "1000", store = true, prefix = "test.a.", info = { currencyCode = "USD", currencyScale = 9 }, module = "eth-payment", moduleOptions = { rpcUri = "http://127.0.0.1:8545", privateKey = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318" } }

[[peer]]
name = "legacy-server"
options_json = '{"server":"btp+ws://:url-token-71ab@127.0.0.1:9000","maxBalance":"1000","store":true,"module":"xrp-paychan","moduleOptions":{"secret":"xrp-secret-in-options-json-5d1e","peerChannel":{"list":[{"key":"snoPBrXtMeMyMHUVTgbuqAfg1SUTb"}]}}}'

[settlement-engine]
admin_token = "admin-token-0c3d"
api_token = "api-token-6a7b"
connector = "http://ilp:conn-pass-8e4f@127.0.0.1:7771"
module = "xrp-paychan"
module_options = { secret = "snoPBrXtMeMyMHUVTgbuqAfg1SUTb", rippled = "ws://127.0.0.1:6006" }
"#;

#[test]
fn debug_output_of_a_config_holds_no_secret() -> Result<(), Box<dyn std::error::Error>> {
    let config = NodeConfig::parse(CONFIG)?;
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{secret} is printed in:\n{shown}");
        }
        // The output still says what is configured: option names, not their values.
        for name in [
            "incomingSecret",
            "privateKey",
            "moduleOptions",
            "admin_token",
            "rpcUri",
        ] {
            assert!(shown.contains(name), "{name} is missing from:\n{shown}");
        }
    }
    Ok(())
}
