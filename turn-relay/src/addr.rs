//! Address roles. The core handles three kinds of socket address that are
//! easy to swap by mistake (a relay address where a peer was meant, a peer
//! where a client was meant); each gets its own type so that a swap is a
//! compile error.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

macro_rules! address_role {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub SocketAddr);

        impl $name {
            pub fn ip(&self) -> IpAddr {
                self.0.ip()
            }

            pub fn port(&self) -> u16 {
                self.0.port()
            }
        }

        impl From<SocketAddr> for $name {
            fn from(a: SocketAddr) -> Self {
                $name(a)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

address_role!(
    /// An allocation's relay address, as announced in XOR-RELAYED-ADDRESS
    /// (peers send to it; the relay sends to peers from it).
    RelayAddr
);
address_role!(
    /// A peer's address: the other side of a relayed flow (with the
    /// in-process relay, one of the SFU's media addresses).
    PeerAddr
);
address_role!(
    /// A TURN client's transport address as the server sees it.
    ClientAddr
);
