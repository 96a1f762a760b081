//! The sans-IO node on simulated time: real `rtc` peer connections as
//! participants, no sockets, one clock the test advances.

mod sim;

use proto::sfu_api::WatchRequest;
use proto::token::SfuRole;
use proto::ParticipantId;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use sfu::node::NodeCommand;
use sim::{Profiles, Sim};

#[global_allocator]
static ALLOC: sim::CountingAlloc = sim::CountingAlloc;

fn pair() -> Sim {
    let mut sim = Sim::new();
    sim.join("a", SfuRole::User);
    sim.join("b", SfuRole::User);
    sim.connect_all();
    sim.link("a", "b");
    sim
}

fn seqs_are_continuous(seqs: &[u16]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
}

#[test]
fn linked_participants_receive_each_others_audio_and_video() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 600);
    let now = sim.now;
    for (me, other) in [("a", "b"), ("b", "a")] {
        let p = sim.p(me);
        assert!(
            p.received_from(other, true).len() > 10,
            "{me} got video of {other}"
        );
        assert!(
            p.received_from(other, false).len() > 10,
            "{me} got audio of {other}"
        );
        assert!(
            p.srtp_cipher(now).contains("GCM"),
            "{me} negotiated {}",
            p.srtp_cipher(now)
        );
    }
}

#[test]
fn a_client_that_offers_only_aes_cm_sha1_still_gets_media() {
    let mut sim = Sim::new();
    sim.join_with("a", SfuRole::User, Profiles::CmOnly, |s| s);
    sim.join("b", SfuRole::User);
    sim.connect_all();
    sim.link("a", "b");
    sim.talk(&["a", "b"], 600);
    let now = sim.now;
    assert_eq!(sim.p("a").srtp_cipher(now), "SRTP_AES128_CM_HMAC_SHA1_80");
    assert!(sim.p("a").received_from("b", true).len() > 10);
    assert!(sim.p("b").received_from("a", true).len() > 10);
}

#[test]
fn a_relink_keeps_the_outgoing_numbering_continuous_and_starts_on_a_keyframe() {
    let mut sim = Sim::new();
    for n in ["a", "b", "c"] {
        sim.join(n, SfuRole::User);
    }
    sim.connect_all();
    sim.link("a", "b");
    sim.talk(&["a", "b", "c"], 400);
    let plis_before = sim.p("c").plis;
    sim.link("a", "c");
    // c sends delta frames only at first: a must get nothing of c yet.
    for _ in 0..5 {
        sim.send_media("c", false);
        sim.progress(20);
    }
    assert!(
        sim.p("a").received_from("c", true).is_empty(),
        "gated until a keyframe"
    );
    assert!(sim.p("c").plis > plis_before, "the node asked c for a keyframe");
    sim.talk(&["a", "b", "c"], 400);
    let video: Vec<_> = sim.p("a").received.iter().filter(|r| r.video).cloned().collect();
    assert!(video.iter().any(|r| sim::contains(&r.payload, b"from-c:")));
    let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
    assert!(
        seqs_are_continuous(&seqs),
        "sequence numbers continue across the switch: {seqs:?}"
    );
    let first_c = video
        .iter()
        .position(|r| sim::contains(&r.payload, b"from-c:"))
        .unwrap();
    assert_eq!(
        video[first_c].payload[1] & 0x01,
        0,
        "the first packet of c is a keyframe"
    );
    let ts_jump = video[first_c].ts.wrapping_sub(video[first_c - 1].ts);
    assert!(
        ts_jump > 0 && ts_jump < 90_000,
        "timestamp advances by the pause, not a jump: {ts_jump}"
    );
    assert_eq!(
        video
            .iter()
            .map(|r| r.ssrc)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
}

#[test]
fn a_lost_packet_is_answered_with_a_retransmission_from_the_history() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 400);
    // Drop every 7th video packet from the node to b for a while (the
    // payload type is in the clear).
    let mut n = 0u32;
    sim.drop_to_participant = Some(Box::new(move |i, d| {
        if i == 1 && d.len() > 12 && d[0] >> 6 == 2 && d[1] & 0x7F == sfu::peer::VP8_PT {
            n += 1;
            return n.is_multiple_of(7);
        }
        false
    }));
    sim.talk(&["a", "b"], 600);
    sim.drop_to_participant = None;
    sim.talk(&["a", "b"], 400);
    let now = sim.now;
    assert!(
        sim.p("b").retransmitted_received(now) > 0,
        "b got retransmissions on its RTX stream"
    );
    // Every frame a sent (its label counts up) reached b, lost or not.
    let frames: std::collections::BTreeSet<u64> = sim
        .p("b")
        .received_from("a", true)
        .iter()
        .filter_map(|r| {
            let text = String::from_utf8_lossy(&r.payload[4..]).into_owned();
            text.strip_prefix("from-a:")?.parse().ok()
        })
        .collect();
    let (lo, hi) = (*frames.first().unwrap(), *frames.last().unwrap());
    let missing: Vec<u64> = (lo..=hi).filter(|f| !frames.contains(f)).collect();
    assert!(missing.is_empty(), "frames never repaired: {missing:?}");
}

#[test]
fn keyframe_requests_to_a_publisher_are_throttled() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 400);
    sim.p("a").plis = 0;
    let ssrc = sim.p("b").received_from("a", true)[0].ssrc;
    for _ in 0..10 {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: ssrc,
        };
        sim.send_rtcp("b", vec![Box::new(pli)]);
        sim.progress(10);
    }
    let plis = sim.p("a").plis;
    assert!(
        (1..=1).contains(&plis),
        "ten PLIs in 100 ms reach the publisher once, got {plis}"
    );
}

#[test]
fn a_limiting_bandwidth_estimate_reaches_the_publisher() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 2_000);
    let ssrc = sim.p("b").received_from("a", true)[0].ssrc;
    let remb = ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 1,
        bitrate: 3_000.0,
        ssrcs: vec![ssrc],
    };
    sim.send_rtcp("b", vec![Box::new(remb)]);
    sim.progress(50);
    let a_ssrc = sim.p("a").video_ssrc;
    let rembs = sim.p("a").rembs.clone();
    assert!(
        rembs
            .iter()
            .any(|(bps, ssrcs)| *bps == 3_000 && ssrcs.contains(&a_ssrc)),
        "publisher got the cap with its own SSRCs: {rembs:?}"
    );
}

#[test]
fn an_ice_restart_gets_new_credentials_and_media_goes_on() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 400);
    let before = sim.p("a").received_from("b", true).len();
    sim.ice_restart("a");
    sim.talk(&["a", "b"], 600);
    let answers = sim.p("a").answers.clone();
    assert_eq!(answers.len(), 2);
    let ufrag = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    assert_ne!(ufrag(&answers[0]), ufrag(&answers[1]), "new ufrag");
    assert!(sim.p("a").received_from("b", true).len() > before + 10);
    assert!(sim.removed("a").is_none());
}

#[test]
fn a_dtls_failure_removes_the_participant() {
    let mut sim = Sim::new();
    sim.join_with("a", SfuRole::User, Profiles::Chromium, corrupt_fingerprint);
    for _ in 0..1_200 {
        sim.progress(10);
        if sim.removed("a").is_some() {
            break;
        }
    }
    assert_eq!(sim.removed("a"), Some("dtls_failed"));
    assert_eq!(sim.node.participant_count(), 0);
}

/// `a` and `b` linked, connected, and watched by the hidden watcher `w`.
fn pair_watched_by_w() -> Sim {
    let mut sim = pair();
    sim.join("w", SfuRole::Watcher);
    sim.connect_all();
    sim.command(NodeCommand::Watch(WatchRequest {
        watcher: ParticipantId::new("w"),
        a: ParticipantId::new("a"),
        b: ParticipantId::new("b"),
        stop: false,
    }));
    sim
}

#[test]
fn a_hidden_watcher_sees_both_sides_and_sends_nothing_anyone_receives() {
    let mut sim = pair_watched_by_w();
    sim.talk(&["a", "b"], 800);
    assert!(sim.p("w").received_from("a", true).len() > 5);
    assert!(sim.p("w").received_from("b", true).len() > 5);
    assert!(sim.p("a").received_from("w", true).is_empty());
}

#[test]
fn a_held_video_stops_reaching_the_partner_but_not_audio_or_watchers_and_comes_back_on_a_keyframe() {
    let mut sim = pair_watched_by_w();
    sim.talk(&["a", "b"], 400);
    let hold = |held| NodeCommand::HoldVideo {
        pid: ParticipantId::new("a"),
        held,
    };
    sim.command(hold(true));
    // Packets already on their way arrive; then nothing more of a's video.
    sim.progress(100);
    let counts = |sim: &mut Sim| {
        (
            sim.p("b").received_from("a", true).len(),
            sim.p("b").received_from("a", false).len(),
            sim.p("a").received_from("b", true).len(),
            sim.p("w").received_from("a", true).len(),
        )
    };
    let before = counts(&mut sim);
    sim.talk(&["a", "b"], 400);
    let after = counts(&mut sim);
    assert_eq!(after.0, before.0, "the held video no longer reaches the partner");
    assert!(after.1 > before.1 + 5, "the partner still hears a");
    assert!(after.2 > before.2 + 5, "a still sees the partner");
    assert!(after.3 > before.3 + 5, "a hidden watcher still sees a");

    let plis = sim.p("a").plis;
    sim.command(hold(false));
    sim.progress(50);
    assert!(sim.p("a").plis > plis, "a release asks a for a keyframe");
    sim.talk(&["a", "b"], 400);
    let video: Vec<_> = sim.p("b").received.iter().filter(|r| r.video).cloned().collect();
    assert!(video.len() > after.0 + 5, "the video is back");
    let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
    assert!(
        seqs_are_continuous(&seqs),
        "numbering continues across the hold: {seqs:?}"
    );
    assert_eq!(video[after.0].payload[1] & 0x01, 0, "it comes back on a keyframe");
}

#[test]
fn forwarding_ten_thousand_packets_allocates_nothing_per_packet() {
    let mut sim = pair();
    sim.talk(&["a", "b"], 1_000);
    let allocated_before = sim.node.buffers_allocated();
    let (allocations, forwarded) = sim.count_node_allocations_while(|sim| {
        for _ in 0..5_000 {
            sim.send_media("a", false);
            sim.send_media("b", false);
            sim.progress(1);
        }
    });
    assert!(forwarded >= 10_000, "forwarded {forwarded}");
    assert!(
        allocations < 20,
        "the node allocated {allocations} times while forwarding {forwarded} RTP packets"
    );
    assert!(sim.node.buffers_allocated() <= allocated_before + 8);
}

#[test]
fn a_participant_in_a_call_costs_the_node_little_heap() {
    let before = Sim::node_heap_bytes();
    let mut sim = Sim::new();
    // The node's own heap, less its datagram buffers (a pool shared by all
    // participants, sized by bursts rather than by participants).
    let per_participant = |sim: &Sim| {
        let pool = sim.node.buffers_allocated() as i64 * sfu::node::buffer::BUFFER_LEN as i64;
        (Sim::node_heap_bytes() - before - pool) / 4
    };
    for name in ["a", "b", "c", "d"] {
        sim.join(name, SfuRole::User);
    }
    sim.connect_all();
    sim.forget_events();
    let handshaken = per_participant(&sim);
    sim.link("a", "b");
    sim.link("c", "d");
    sim.talk(&["a", "b", "c", "d"], 300);
    sim.forget_events();
    let talking = per_participant(&sim);
    // The first authenticated packets release the DTLS associations; the
    // video histories' first 8 KiB come in their place.
    assert!(
        talking < handshaken + 4 * 1024,
        "connected: {handshaken} bytes per participant, after 300 ms of media: {talking}"
    );
    sim.talk(&["a", "b", "c", "d"], 3_000);
    sim.forget_events();
    let steady = per_participant(&sim);
    eprintln!(
        "node heap per participant: connected {handshaken}, talking {talking}, after 3 s {steady} bytes"
    );
    // The harness's media grows each video history to 32 KiB; everything
    // else a participant costs the node stays near 12 KiB.
    assert!(steady < 48 * 1024, "{steady} bytes per participant");
}

/// The same offer with the last hex digit of its DTLS fingerprint changed.
fn corrupt_fingerprint(sdp: String) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=fingerprint:") {
                let trimmed = line.trim_end();
                let (head, last) = trimmed.split_at(trimmed.len() - 1);
                let flipped = if last == "0" { "1" } else { "0" };
                format!("{head}{flipped}{}", &line[trimmed.len()..])
            } else {
                line.to_owned()
            }
        })
        .collect()
}
