//! `btp+ws://` / `btp+wss://` server URLs, parsed the way the legacy client parses them.
//!
//! The legacy client (`src/lib/client.js`) reads the credentials from the URL's user info, percent-decodes them
//! (`decodeURIComponent`), removes them from the URL, checks that the scheme is `btp+ws:` or `btp+wss:` and
//! dials the rest of the URL with the `btp+` prefix cut off. A legacy server only accepts an empty username, so
//! working URLs look like `btp+ws://:secret@host:port/path`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a BTP server URL was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// The string is not a URL at all.
    #[error("invalid url: {0}")]
    Parse(String),
    /// The scheme is neither `btp+ws` nor `btp+wss`.
    #[error("server protocol must be \"btp+wss:\" or \"btp+ws:\", got \"{0}:\"")]
    Scheme(String),
    /// The URL names no host.
    #[error("url has no host")]
    NoHost,
    /// The host is not one a websocket client accepts (WHATWG host parsing of a `ws:` URL).
    #[error("invalid host: {0}")]
    Host(String),
    /// The username or secret holds a malformed percent escape or decodes to invalid UTF-8.
    #[error("malformed percent-encoding in the {0}")]
    PercentEncoding(&'static str),
}

/// A parsed BTP server URL: the websocket URL to dial plus the credentials for the auth handshake.
///
/// `Debug` and `Display` never show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct BtpUrl {
    /// `ws://…` or `wss://…`: the input without `btp+` and without user info.
    ws_url: String,
    /// Host name or address literal, for the TCP connection and the TLS server name.
    host: String,
    /// Explicit port, or the scheme default (80 / 443).
    port: u16,
    /// True for `btp+wss`.
    tls: bool,
    /// Percent-decoded user name (sent as `auth_username`; legacy servers want it empty).
    username: String,
    /// Percent-decoded secret (sent as `auth_token`).
    token: String,
}

impl BtpUrl {
    /// Parses `btp+ws[s]://[user[:secret]@]host[:port][/path][?query]`.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let mut url = url::Url::parse(input).map_err(|e| UrlError::Parse(e.to_string()))?;
        let tls = match url.scheme() {
            "btp+ws" => false,
            "btp+wss" => true,
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        let username =
            percent_decode(url.username()).ok_or(UrlError::PercentEncoding("username"))?;
        let token = percent_decode(url.password().unwrap_or(""))
            .ok_or(UrlError::PercentEncoding("secret"))?;
        // Removing user info cannot fail on a URL that has a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // `btp+ws` is not a special scheme, so its host is still opaque. The URL dialled is the `ws:`/`wss:` one,
        // parsed again as the legacy plugin's websocket library parses it: the host percent-decoded,
        // lower-cased, IDNA-mapped, IPv4 read in its legacy forms, and refused where a websocket client would.
        let ws = url::Url::parse(url.as_str().strip_prefix("btp+").unwrap_or(url.as_str()))
            .map_err(|e| UrlError::Host(e.to_string()))?;
        let host = match ws.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(UrlError::NoHost),
        };
        let port = ws.port().unwrap_or(if tls { 443 } else { 80 });
        let ws_url = String::from(ws);
        Ok(BtpUrl {
            ws_url,
            host,
            port,
            tls,
            username,
            token,
        })
    }

    /// The websocket URL that is dialled (`ws://host:port/path`, no credentials).
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// Host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port (explicit, or 80 for `btp+ws` / 443 for `btp+wss`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for `btp+wss` (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The decoded user name, sent as `auth_username`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The decoded secret, sent as `auth_token`. Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl FromStr for BtpUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BtpUrl::parse(s)
    }
}

impl fmt::Debug for BtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtpUrl")
            .field("ws_url", &self.ws_url)
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for BtpUrl {
    /// The dialled URL with `btp+` restored and the credentials left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "btp+{}", self.ws_url)
    }
}

/// `decodeURIComponent`: `%XX` escapes to bytes, then UTF-8. `None` for a malformed escape or invalid UTF-8
/// (JavaScript throws a URIError in both cases).
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host is read as a websocket client reads a `ws:`/`wss:` URL (WHATWG host parsing: percent-decoded,
    /// lower-cased, IDNA to punycode, IPv4 in any of its legacy forms), as the legacy plugin's `ws` library
    /// does; a host such a client refuses is refused here, at start, not at the first dial.
    #[test]
    fn the_host_is_read_as_a_websocket_client_reads_it() {
        for (input, host) in [
            ("btp+ws://EXAMPLE.com:1", "example.com"),
            ("btp+ws://%41.com:1", "a.com"),
            ("btp+ws://0x7f.1:1", "127.0.0.1"),
            ("btp+ws://\u{fc}.com:1", "xn--tda.com"),
            ("btp+ws://[::1]:1", "::1"),
        ] {
            let url = BtpUrl::parse(input).map(|u| (u.host().to_owned(), u.ws_url().to_owned()));
            let ws_url = format!(
                "ws://{}:1/",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                }
            );
            assert_eq!(url, Ok((host.to_owned(), ws_url)), "{input}");
        }
        for input in [
            "btp+ws://a%20b:1",
            "btp+ws://a%zz:1",
            "btp+ws://1.2.3.256:1",
            "btp+ws://xn--a.com:1",
        ] {
            assert!(
                matches!(BtpUrl::parse(input), Err(UrlError::Host(_))),
                "{input}: {:?}",
                BtpUrl::parse(input)
            );
        }
    }

    #[test]
    fn legacy_url_with_empty_user() -> Result<(), UrlError> {
        let url = BtpUrl::parse("btp+ws://:s%40cret@localhost:9000")?;
        // Normalised as a websocket client normalises it (an empty path is `/`).
        assert_eq!(url.ws_url(), "ws://localhost:9000/");
        assert_eq!(url.username(), "");
        assert_eq!(url.token(), "s@cret");
        assert_eq!(url.host(), "localhost");
        assert_eq!(url.port(), 9000);
        assert!(!url.is_tls());
        Ok(())
    }

    #[test]
    fn wss_with_user_path_and_default_port() -> Result<(), UrlError> {
        let url =
            BtpUrl::parse("btp+wss://al%20ice:p%C3%A4ss@example.com/accounts/alice/ilp/btp?x=1")?;
        assert_eq!(url.ws_url(), "wss://example.com/accounts/alice/ilp/btp?x=1");
        assert_eq!(url.username(), "al ice");
        assert_eq!(url.token(), "päss");
        assert_eq!(url.port(), 443);
        assert!(url.is_tls());
        Ok(())
    }

    #[test]
    fn ipv6_host() -> Result<(), UrlError> {
        let url = BtpUrl::parse("btp+ws://:t@[::1]:7768/")?;
        assert_eq!(url.host(), "::1");
        assert_eq!(url.ws_url(), "ws://[::1]:7768/");
        Ok(())
    }

    #[test]
    fn refuses_other_schemes_and_bad_escapes() {
        assert_eq!(
            BtpUrl::parse("ws://:t@localhost:1"),
            Err(UrlError::Scheme("ws".to_owned()))
        );
        assert_eq!(
            BtpUrl::parse("btp+http://:t@localhost:1"),
            Err(UrlError::Scheme("btp+http".to_owned()))
        );
        assert_eq!(
            BtpUrl::parse("btp+ws://:%zz@localhost:1"),
            Err(UrlError::PercentEncoding("secret"))
        );
        assert_eq!(
            BtpUrl::parse("btp+ws://:%ff@localhost:1"),
            Err(UrlError::PercentEncoding("secret"))
        );
        assert!(matches!(
            BtpUrl::parse("not a url"),
            Err(UrlError::Parse(_))
        ));
    }

    #[test]
    fn debug_and_display_hide_the_token() -> Result<(), UrlError> {
        let url = BtpUrl::parse("btp+ws://:topsecret@localhost:9000/x")?;
        assert!(!format!("{url:?}").contains("topsecret"));
        assert_eq!(url.to_string(), "btp+ws://localhost:9000/x");
        Ok(())
    }
}
