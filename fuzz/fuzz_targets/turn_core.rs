//! Feeds arbitrary datagrams to the sans-IO core (in-process relay rules),
//! from a client over UDP and TCP and from a peer, relays and frames what
//! the core says to relay and carries out its commands as a shell would,
//! and checks the tables after.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turn_relay::core::{
    ClientAddr, Command, CoreConfig, CoreShared, FiveTuple, PeerAddr, RelayAddr, RelaySpace, Transport,
    TurnCore,
};
use turn_relay::metrics::Metrics;
use turn_relay::relay::{PeerRules, PortPool, Share, VIRTUAL_PORTS};
use turn_relay::Quotas;

fuzz_target!(|data: &[u8]| {
    let sfu = "192.0.2.1:5000".parse().expect("valid address literal");
    let space = RelaySpace {
        ip: "192.0.2.1".parse().expect("valid address literal"),
        ports: PortPool::new(&VIRTUAL_PORTS, Share::WHOLE, 0),
        peers: PeerRules::Sfu(vec![sfu]),
    };
    let cfg = CoreConfig {
        realm: "fuzz".into(),
        secrets: vec![b"secret".to_vec()],
        nonce_ttl_s: 600,
        max_lifetime_s: 3600,
        quotas: Quotas::default(),
        software: None,
    };
    let metrics = Metrics::unregistered().expect("metric definitions are valid");
    let shared = CoreShared::new(metrics, [0; 32]);
    let mut core = TurnCore::new(cfg, space, shared, [0; 32], 1_700_000_000_000);
    let udp = FiveTuple {
        transport: Transport::Udp,
        client: ClientAddr("198.51.100.1:1".parse().expect("valid address literal")),
        server: "192.0.2.1:3478".parse().expect("valid address literal"),
    };
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..udp
    };
    let relay = RelayAddr("192.0.2.1:16384".parse().expect("valid address literal"));
    for (i, chunk) in data.split(|b| *b == 0xfe).enumerate() {
        let now = 1_700_000_000_000 + i as u64 * 1000;
        if let Some(to_peer) = core.handle_client(if i % 2 == 0 { udp } else { tcp }, chunk, now) {
            // The shell relays the payload where the core says it lies.
            assert!(
                chunk.get(to_peer.payload.clone()).is_some(),
                "payload range {:?} outside a {}-byte input",
                to_peer.payload,
                chunk.len()
            );
        }
        if let Some(to_client) = core.handle_peer(relay, PeerAddr(sfu), chunk, now) {
            // The shell frames it as ChannelData or a Data indication.
            let mut framed = Vec::new();
            to_client.encode_into(chunk, &mut framed);
        }
        core.handle_timeout(now);
        while let Some(cmd) = core.poll_command() {
            if let Command::OpenRelay { relay } = cmd {
                core.handle_relay_opened(relay, i % 3 != 2, now);
            }
        }
    }
    if let Err(e) = core.check_invariants() {
        panic!("invariant broken: {e}");
    }
});
