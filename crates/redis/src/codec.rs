//! The wire codec: JSON through serde, so everything stays readable in `redis-cli`.
//!
//! Every failure is a typed [`Error`] naming what could not be encoded or decoded and where.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

/// Encodes `value` (a key, an item of progress, an outcome) as JSON text.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| {
        Error::new(ErrorKind::Encode)
            .detail(format_args!("{what}: {error}"))
            .source(error)
    })
}

/// Decodes JSON text found at `at` (a Redis key or channel).
pub(crate) fn decode<T: DeserializeOwned>(what: &str, at: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|error| {
        Error::new(ErrorKind::Decode)
            .detail(format_args!("{what} at `{at}`: {error}"))
            .source(error)
    })
}
