//! Newtypes for identifiers, so a participant id is never passed where a
//! node id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// One visitor's presence on one SFU node (one peer connection).
    ParticipantId
);
string_id!(
    /// An SFU node (with its TURN relay).
    NodeId
);
string_id!(
    /// One pairing of two strangers, from match to unlink.
    PairingId
);
string_id!(
    /// A browser's stable device identifier (random, kept in local storage).
    DeviceId
);
string_id!(
    /// A deployment region, such as `eu` or `us-east`.
    Region
);

impl ParticipantId {
    /// A fresh random participant id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl PairingId {
    /// A fresh random pairing id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// Maximum length of a device id accepted from a client.
pub const MAX_DEVICE_ID_LEN: usize = 64;

impl DeviceId {
    /// Parses a client-supplied device id: 8..=64 characters of `[A-Za-z0-9_-]`.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = (8..=MAX_DEVICE_ID_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rejects_short_long_and_odd_characters() {
        assert!(DeviceId::parse("abcdefgh").is_some());
        assert!(DeviceId::parse("short").is_none());
        assert!(DeviceId::parse(&"a".repeat(65)).is_none());
        assert!(DeviceId::parse("abcdefgh<script>").is_none());
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = ParticipantId::new("p1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"p1\"");
    }
}
