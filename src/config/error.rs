//! [`ConfigError`]: why a configuration is refused, naming the field or file; [`ParseError`]: a value that does
//! not parse as what its field holds. The parsers of single values keep their own error types beside them
//! ([`PeerNameError`](super::legacy::PeerNameError), [`RateError`](super::routing::RateError), …); a
//! [`ConfigError::Value`] carries one as its source.

/// A configuration error: which field (or file), and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has a bad value or is missing: the value breaks a rule the reason states.
    #[error("invalid {field}: {reason}")]
    Field {
        /// Dotted path of the field (e.g. `listener.port`, `CONNECTOR_LEDGERS.g.eur.options.maxBalance`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A field's value was refused by the parser of its kind, whose error is the source.
    #[error("invalid {field}: {source}")]
    Value {
        /// Dotted path of the field.
        field: String,
        /// Why the parser refused it (a [`ParseError`], or a value parser's own error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// `field` breaks the rule `reason` states.
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `field`'s value was refused by a parser with `source`.
    pub(crate) fn value(
        field: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ConfigError::Value {
            field: field.into(),
            source: Box::new(source),
        }
    }

    /// The dotted path of the field refused (`None` for a file that could not be read).
    pub fn field_path(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } | ConfigError::Value { field, .. } => Some(field),
            ConfigError::Io { .. } => None,
        }
    }

    /// Prefixes the field path (used when the options sit inside a larger document).
    pub fn within(self, outer: &str) -> Self {
        match self {
            ConfigError::Field { field, reason } => ConfigError::Field {
                field: format!("{outer}.{field}"),
                reason,
            },
            ConfigError::Value { field, source } => ConfigError::Value {
                field: format!("{outer}.{field}"),
                source,
            },
            other => other,
        }
    }
}

/// A value that does not parse as what its field holds; the parser's own error is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Not strict JSON (ILP Kit's `CONNECTOR_LEDGERS`, which ILP Kit itself reads with `JSON.parse`).
    #[error("not strict JSON: {0}")]
    StrictJson(#[source] serde_json::Error),
    /// Not a JSON value (a TOML table that has no JSON form).
    #[error(transparent)]
    ToJson(serde_json::Error),
    /// Not a URL.
    #[error("not a URL: {0}")]
    NotUrl(#[source] url::ParseError),
    /// A URL that does not parse, said in the URL parser's words.
    #[error(transparent)]
    Url(url::ParseError),
    /// A BTP URL that is refused.
    #[error(transparent)]
    BtpUrl(btp::transport::UrlError),
    /// Not an ILP address.
    #[error("not an ILP address: {0}")]
    IlpAddress(#[source] btp::DecodeError),
    /// A file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TOML that does not parse, with the line of the error when known.
    #[error("{}{}", .source.message(), .line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Toml {
        /// The line the error is on (1-based).
        line: Option<usize>,
        /// The TOML parser's error.
        #[source]
        source: toml::de::Error,
    },
}
