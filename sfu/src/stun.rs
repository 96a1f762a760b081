//! Just enough STUN parsing to route a new 5-tuple: is this a binding
//! request, and which local ufrag does its USERNAME name? No allocation.

/// STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const BINDING_REQUEST: u16 = 0x0001;

/// Whether `buf` looks like a STUN message (RFC 7983 demux: first byte 0..=3,
/// magic cookie present, length consistent).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20
        && buf[0] < 4
        && buf[4..8] == MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 20 == buf.len()
}

/// The local (SFU) ufrag of a STUN binding request's USERNAME
/// (`"sfuUfrag:clientUfrag"`), or `None` for anything else.
pub fn binding_request_local_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_stun(buf) || u16::from_be_bytes([buf[0], buf[1]]) != BINDING_REQUEST {
        return None;
    }
    let mut at = 20usize;
    while at + 4 <= buf.len() {
        let typ = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        let start = at + 4;
        let end = start.checked_add(len)?;
        if end > buf.len() {
            return None;
        }
        if typ == ATTR_USERNAME {
            let user = std::str::from_utf8(&buf[start..end]).ok()?;
            let (local, _remote) = user.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        // Attributes are padded to 4 bytes.
        at = end + ((4 - len % 4) % 4);
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7u8; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn username_local_part_is_found() {
        let m = binding_request("sfuufrag:browser");
        assert!(is_stun(&m));
        assert_eq!(binding_request_local_ufrag(&m), Some("sfuufrag"));
    }

    #[test]
    fn truncated_and_non_stun_input_is_refused() {
        let m = binding_request("abc:def");
        for n in 0..m.len() {
            assert_eq!(binding_request_local_ufrag(&m[..n]), None);
        }
        assert_eq!(binding_request_local_ufrag(&[0x80; 40]), None);
        assert_eq!(binding_request_local_ufrag(&binding_request("nocolon")), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_random_input(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = binding_request_local_ufrag(&data);
        }
    }
}
