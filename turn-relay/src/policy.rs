//! Peer policy for the socket relay backend: which peer addresses a TURN
//! client may reach through the relay.
//!
//! Default deny of everything internal: loopback, private (RFC 1918, ULA),
//! link-local, CGNAT 100.64.0.0/10, multicast, unspecified / "this network",
//! reserved 240.0.0.0/4 (which holds the broadcast address), IPv6 site-local,
//! and the IPv6 forms that embed an IPv4 address — IPv4-mapped
//! `::ffff:0:0/96`, IPv4-compatible `::/96`, IPv4-translated
//! `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16` — whenever the
//! embedded IPv4 address is denied. The local-use NAT64 prefix
//! `64:ff9b:1::/48` is denied as a whole. An explicit allow-list entry wins
//! over the default deny.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::TurnError;

/// Parses allow-list entries (`CIDR` or a bare address). Fails closed: any
/// malformed entry, or a CIDR with host bits set, is an error, never ignored.
pub fn parse_peer_allow_list(entries: &[String]) -> Result<Vec<IpNet>, TurnError> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let s = entry.trim();
        let err = |reason: &str| TurnError::AllowList {
            entry: entry.clone(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty entry"));
        }
        let net = if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| err("not a CIDR (expected e.g. 10.1.0.0/16)"))?;
            if net.trunc() != net {
                return Err(err("host bits set; write the network address"));
            }
            net
        } else {
            let ip: IpAddr = s.parse().map_err(|_| err("not an IP address or CIDR"))?;
            IpNet::from(ip)
        };
        out.push(net);
    }
    Ok(out)
}

/// An allow-list plus the default deny.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
}

impl PeerPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        PeerPolicy { allow }
    }

    /// Whether a relay may send to (and accept from) `peer`.
    pub fn allows(&self, peer: IpAddr) -> bool {
        peer_allowed(peer, &self.allow)
    }

    /// Whether `peer` is explicitly on the allow-list.
    pub fn allow_listed(&self, peer: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&peer))
    }
}

/// The policy as a pure function: allowed when allow-listed (an IPv4-mapped
/// address also matches its IPv4 entry), otherwise when not default-denied.
pub fn peer_allowed(peer: IpAddr, allow: &[IpNet]) -> bool {
    let mapped_v4 = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    if allow
        .iter()
        .any(|n| n.contains(&peer) || mapped_v4.is_some_and(|v4| n.contains(&v4)))
    {
        return true;
    }
    !denied_by_default(peer)
}

/// The default deny list (see the module docs).
pub fn denied_by_default(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => denied_v6(v6),
    }
}

fn denied_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || o[0] == 0 // 0.0.0.0/8 "this network"
        || ip.is_loopback() // 127.0.0.0/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || ip.is_multicast() // 224/4
        || o[0] >= 240 // 240/4 reserved, incl. 255.255.255.255 broadcast
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
}

fn denied_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let embedded_low32 = || {
        Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        )
    };
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return true;
    }
    if (seg[0] & 0xfe00) == 0xfc00 {
        return true; // fc00::/7 unique local
    }
    if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 {
        return true; // fe80::/10 link-local, fec0::/10 site-local
    }
    // ::ffff:0:0/96 IPv4-mapped.
    if seg[..5] == [0, 0, 0, 0, 0] && seg[5] == 0xffff {
        return denied_v4(embedded_low32());
    }
    // ::/96 IPv4-compatible (deprecated) and ::ffff:0:0:0/96 IPv4-translated.
    if seg[..6] == [0, 0, 0, 0, 0, 0] || (seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0) {
        return denied_v4(embedded_low32());
    }
    // 64:ff9b::/96 well-known NAT64 prefix.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return denied_v4(embedded_low32());
    }
    // 64:ff9b:1::/48 local-use NAT64 (RFC 8215): translators into private space.
    if seg[..3] == [0x64, 0xff9b, 1] {
        return true;
    }
    // 2002::/16 6to4: the IPv4 address sits in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return denied_v4(v4);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_denied_without_allow_list() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!peer_allowed(ip(s), &[]), "{s} must be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(peer_allowed(ip(s), &[]), "{s} must be allowed");
        }
    }

    #[test]
    fn allow_list_entry_overrides_default_deny_and_matches_mapped_form() {
        let allow = parse_peer_allow_list(&["127.0.0.1/32".into(), "10.1.0.0/16".into()]).unwrap();
        assert!(peer_allowed(ip("127.0.0.1"), &allow));
        assert!(peer_allowed(ip("::ffff:127.0.0.1"), &allow));
        assert!(peer_allowed(ip("10.1.2.3"), &allow));
        assert!(!peer_allowed(ip("127.0.0.2"), &allow));
        assert!(!peer_allowed(ip("10.2.0.1"), &allow));
        assert!(
            !peer_allowed(ip("64:ff9b::7f00:1"), &allow),
            "NAT64 form needs its own entry"
        );
    }

    #[test]
    fn malformed_allow_list_entries_fail_closed() {
        for bad in [
            "",
            "  ",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "localhost",
            "10.0.0.0/",
            "1.2.3",
            "::g",
        ] {
            assert!(
                parse_peer_allow_list(&[bad.to_string()]).is_err(),
                "{bad:?} must be rejected"
            );
        }
        // One bad entry poisons the whole list.
        assert!(parse_peer_allow_list(&["127.0.0.1/32".into(), "nope".into()]).is_err());
        let ok = parse_peer_allow_list(&["192.0.2.7".into(), " fd00::/8 ".into()]).unwrap();
        assert_eq!(
            ok,
            vec![
                "192.0.2.7/32".parse().unwrap(),
                "fd00::/8".parse::<IpNet>().unwrap()
            ]
        );
    }

    fn v4_denied_reference(v4: Ipv4Addr) -> bool {
        let nets = [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.168.0.0/16",
            "224.0.0.0/4",
            "240.0.0.0/4",
        ];
        nets.iter()
            .any(|n| n.parse::<ipnet::Ipv4Net>().unwrap().contains(&v4))
    }

    proptest! {
        #[test]
        fn v4_policy_matches_cidr_reference(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            prop_assert_eq!(denied_by_default(IpAddr::V4(v4)), v4_denied_reference(v4));
        }

        #[test]
        fn embedded_v4_forms_follow_the_v4_verdict(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let o = v4.octets();
            let hi = u16::from_be_bytes([o[0], o[1]]);
            let lo = u16::from_be_bytes([o[2], o[3]]);
            let v4_denied = denied_by_default(IpAddr::V4(v4));
            let mapped = v4.to_ipv6_mapped();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo);
            let six_to_four = Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1);
            prop_assert_eq!(denied_by_default(IpAddr::V6(mapped)), v4_denied);
            prop_assert_eq!(denied_by_default(IpAddr::V6(nat64)), v4_denied);
            prop_assert_eq!(denied_by_default(IpAddr::V6(six_to_four)), v4_denied);
        }

        #[test]
        fn allow_listed_addresses_are_always_allowed(raw in any::<u128>(), prefix in 0u8..=128) {
            let v6 = Ipv6Addr::from(raw);
            let net = IpNet::V6(ipnet::Ipv6Net::new(v6, prefix).unwrap().trunc());
            prop_assert!(peer_allowed(IpAddr::V6(v6), &[net]));
        }

        #[test]
        fn ula_link_local_and_local_nat64_are_always_denied(raw in any::<u128>()) {
            let ula = Ipv6Addr::from((raw & !(0x7fu128 << 121 | 1u128 << 127)) | (0xfcu128 << 120));
            let ll = Ipv6Addr::from((raw >> 10) | (0xfe80u128 << 112));
            let local_nat64 = Ipv6Addr::from((raw >> 48) | (0x0064_ff9b_0001u128 << 80));
            prop_assert!(!peer_allowed(IpAddr::V6(ula), &[]));
            prop_assert!(!peer_allowed(IpAddr::V6(ll), &[]));
            prop_assert!(!peer_allowed(IpAddr::V6(local_nat64), &[]));
        }
    }
}
