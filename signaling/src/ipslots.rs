//! Concurrent visitor WebSockets per client IP. Each open socket costs a
//! task, buffers and a queue (~150 KB); without a cap one address could open
//! thousands. The cap is per replica (behind a load balancer a client's
//! sockets spread over replicas, so the total is at most replicas × cap).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Open sockets by IP, at most `max` each.
#[derive(Debug)]
pub struct IpSlots {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open socket's slot; given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    slots: Arc<IpSlots>,
    ip: IpAddr,
}

impl IpSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more socket from `ip`, or `None` when it has `max` open.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Sockets open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }

    /// Addresses with at least one open socket (the map's size: it never
    /// keeps an address with none).
    pub fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_max_slots_and_they_come_back() {
        let slots = IpSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = slots.try_take(a).unwrap();
        let _s2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none());
        assert!(slots.try_take(b).is_some(), "another address is not affected");
        drop(s1);
        assert!(slots.try_take(a).is_some());
    }

    #[test]
    fn addresses_without_sockets_are_forgotten() {
        let slots = IpSlots::new(3);
        for i in 0..100u8 {
            let _s = slots.try_take(IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(slots.addresses(), 0);
    }
}
