//! Which names the legacy options object may hold: the plugin's own ([`PLUGIN_OPTIONS`]), ilp-bridge's additions
//! ([`BRIDGE_OPTIONS`]), those the plugin knows and ilp-bridge accepts without applying
//! ([`UNUSED_PLUGIN_OPTIONS`]), and the options each stock channel module reads
//! ([`channel_modules::module_option_names`]). Any other name is refused, naming it.

use serde_json::{Map, Value};

use super::error::ConfigError;

/// Options of the legacy plugin that ilp-bridge reads and applies.
pub const PLUGIN_OPTIONS: &[&str] = &[
    "listener",
    "server",
    "incomingSecret",
    "maxBalance",
    "minBalance",
    "prefix",
    "info",
];

/// ilp-bridge's own additions to the options object: `store` (stateful or not, as ILP Kit's ledger-level `store`
/// decides), `module` and `moduleOptions` (the channel module and its options).
pub const BRIDGE_OPTIONS: &[&str] = &["store", "module", "moduleOptions"];

/// Options the legacy plugin (or ILP Kit's connector, which builds its options) knows that ilp-bridge accepts
/// and does not apply, each with the reason logged at start. Accepted so that options copied from a working
/// deployment still start.
pub const UNUSED_PLUGIN_OPTIONS: &[(&str, &str)] = &[
    (
        "token",
        "has no effect in the legacy plugin either; inbound clients present incomingSecret",
    ),
    (
        "authCheck",
        "a JavaScript function, which JSON cannot carry; the default check (empty username, incomingSecret) is used",
    ),
    (
        "_store",
        "a JavaScript store object; records are kept in the node's database, and `store` or maxBalance decides \
         stateful mode",
    ),
    (
        "_backend",
        "a JavaScript backend object; records are kept in the node's database, and `store` or maxBalance \
         decides stateful mode",
    ),
    ("_log", "the connector's logger; ilp-bridge logs through its own [log] settings"),
];

/// Keys of the `listener` object, as the legacy listener reads them.
const LISTENER_KEYS: &[&str] = &["port", "cert", "key", "ca"];
/// Refuses a key of `options` (a module's options, given under `field`) that stock module `module` does not read,
/// naming it. A module ilp-bridge does not know is left alone here (building it reports the name).
pub(crate) fn check_module_option_names(
    field: &str,
    module: &str,
    options: &Map<String, Value>,
) -> Result<(), ConfigError> {
    let Some(known) = channel_modules::module_option_names(module) else {
        return Ok(());
    };
    match options.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ConfigError::field(
            format!("{field}.{key}"),
            format!(
                "unknown option of module {module:?}: it reads {}",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses an option name that neither the legacy plugin nor ilp-bridge knows, naming it (a typo such as
/// `maxBalence` would otherwise leave the peer without the limit meant for it), and logs the known options that
/// have no effect here. When a module is set without `moduleOptions`, the module reads its options from the whole
/// object, as the legacy plugin hands its module the plugin's options: the names outside the plugin's are then
/// the module's and are left to it.
pub(crate) fn check_option_names(peer: &str, obj: &Map<String, Value>) -> Result<(), ConfigError> {
    let module = obj.get("module").and_then(Value::as_str);
    let module_reads_top_level =
        module.is_some() && obj.get("moduleOptions").is_none_or(Value::is_null);
    if let (Some(module), Some(Value::Object(options))) = (module, obj.get("moduleOptions")) {
        check_module_option_names("moduleOptions", module, options)?;
    }
    let module_reads = module.and_then(channel_modules::module_option_names);
    for key in obj.keys() {
        let key = key.as_str();
        if PLUGIN_OPTIONS.contains(&key) || BRIDGE_OPTIONS.contains(&key) {
            continue;
        }
        if let Some((_, why)) = UNUSED_PLUGIN_OPTIONS.iter().find(|(n, _)| *n == key) {
            tracing::warn!(peer, option = key, why, "legacy plugin option not applied");
            continue;
        }
        if module_reads_top_level && module_reads.is_some_and(|known| !known.contains(&key)) {
            return Err(ConfigError::field(
                key,
                format!(
                    "unknown option: neither the legacy plugin, ilp-bridge nor module {:?} reads it (the module \
                     reads {})",
                    module.unwrap_or_default(),
                    module_reads.unwrap_or_default().join(", ")
                ),
            ));
        }
        if !module_reads_top_level {
            return Err(ConfigError::field(
                key,
                "unknown option: neither the legacy plugin nor ilp-bridge reads it (ilp-bridge's own per-peer \
                 limits go beside options, module options in moduleOptions)",
            ));
        }
    }
    if let Some(Value::Object(listener)) = obj.get("listener") {
        if let Some(key) = listener
            .keys()
            .find(|k| !LISTENER_KEYS.contains(&k.as_str()))
        {
            return Err(ConfigError::field(
                format!("listener.{key}"),
                "unknown listener option: the listener takes port, cert, key and ca",
            ));
        }
    }
    Ok(())
}
