//! `Debug` output of configuration without secret values.
//!
//! Option objects (a peer's legacy plugin options, a module's options) hold secrets under names this crate does not
//! all know: `incomingSecret`, `server` URLs with their token, `privateKey`, `secret`, and whatever a module adds
//! next. So they are never printed by value: [`OptionNames`] shows an object's option names, recursively, and
//! every value as its JSON kind. Typed secret fields are [`Secret`](super::legacy::Secret)s, or are left out of
//! the hand-written `Debug`s, which destructure their struct so that a new field cannot be added without
//! deciding how it is shown.

use std::fmt;

use serde_json::Value;

/// Shows a JSON value by its shape: object keys (recursively), array lengths and elements, and for every
/// string, number or boolean only its kind (`<string>`, `<number>`, `<bool>`), never the value.
pub struct OptionNames<'a>(pub &'a Value);

impl fmt::Debug for OptionNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Object(map) => f
                .debug_map()
                .entries(map.iter().map(|(k, v)| (k, OptionNames(v))))
                .finish(),
            Value::Array(items) => f
                .debug_list()
                .entries(items.iter().map(OptionNames))
                .finish(),
            Value::String(_) => f.write_str("<string>"),
            Value::Number(_) => f.write_str("<number>"),
            Value::Bool(_) => f.write_str("<bool>"),
            Value::Null => f.write_str("null"),
        }
    }
}

/// Shows a URL without its password (`user:***@host`): a connector URL may carry basic-auth credentials.
pub struct UrlWithoutPassword<'a>(pub &'a str);

impl fmt::Debug for UrlWithoutPassword<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Setting a password only fails on URLs that cannot have one, which this one has.
                    let _ = url.set_password(Some("***"));
                }
                fmt::Debug::fmt(url.as_str(), f)
            }
            // Not a URL: nothing tells where a secret would be in it.
            Err(_) => f.write_str("<unparsable URL>"),
        }
    }
}

/// Shows whether an optional secret is set, never its value.
pub struct SecretSet<'a>(pub Option<&'a str>);

impl fmt::Debug for SecretSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_show_keys_and_kinds_only() {
        let v = serde_json::json!({
            "secret": "s3cr3t", "n": 42, "flag": true, "none": null,
            "nested": {"privateKey": "0xabc", "list": ["tok", {"k": "v4lue"}]}
        });
        let shown = format!("{:?} {:#?}", OptionNames(&v), OptionNames(&v));
        for value in ["s3cr3t", "42", "true", "0xabc", "tok", "v4lue"] {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        for key in ["secret", "flag", "privateKey", "list", "\"k\""] {
            assert!(shown.contains(key), "{key} missing from {shown}");
        }
    }

    #[test]
    fn urls_lose_their_password() {
        let shown = format!(
            "{:?}",
            UrlWithoutPassword("http://ilp:pa55@127.0.0.1:7771/x")
        );
        assert!(
            !shown.contains("pa55") && shown.contains("ilp:***@127.0.0.1"),
            "{shown}"
        );
        let plain = format!("{:?}", UrlWithoutPassword("http://127.0.0.1:7771"));
        assert!(plain.contains("127.0.0.1:7771"), "{plain}");
        assert_eq!(
            format!("{:?}", UrlWithoutPassword("no url pa55")),
            "<unparsable URL>"
        );
    }
}
