//! Several nodes on one machine, started as an operator starts them: two
//! `duet signaling` replicas and three `duet sfu` nodes in two regions (eu:
//! two nodes, us: one), with real Redis and PostgreSQL, and synthetic
//! visitors that speak the signaling WebSocket and real WebRTC (ICE, DTLS,
//! SRTP) to the SFU nodes, sending media labelled with their names.
//!
//! It proves: visitors are placed on their region's nodes; after SIGKILL of a
//! node its pair is told to move (`relocate`) to the other node of the region,
//! is matched again and media flows there, while the calls on the other nodes
//! go on undisturbed and no process logs an error; SIGTERM drains a node: its
//! record says draining, new and idle visitors go elsewhere, its call goes on
//! until the two leave, then the process exits 0.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use proto::sfu_api::ParticipantList;
use proto::signal::ServerMsg;
use std::time::Instant;
use support::cluster::{Cluster, INTERNAL_TOKEN};
use support::visitor::{disturbed, media_flows, pair, pairing_id, Visitor};

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_place_by_region_move_a_killed_nodes_pair_and_drain_a_node_on_sigterm() {
    let mut cl = Cluster::new().await;
    let (eu1, eu1_id) = cl.sfu("eu-1", "eu").await;
    let (eu2, eu2_id) = cl.sfu("eu-2", "eu").await;
    let (us1, us1_id) = cl.sfu("us-1", "us").await;
    let sig1 = cl.signaling("signaling-1", "eu", "us").await;
    let sig2 = cl.signaling("signaling-2", "us", "eu").await;
    let (s1, s2) = (cl.procs[sig1].http(), cl.procs[sig2].http());
    wait_for!(
        "the three nodes in the registry",
        (cl.records().await.len() == 3).then_some(())
    );

    // ---- placement by region; pairs across the two replicas
    let mut a1 = Visitor::arrive(&s1, "a1", "eu").await;
    let mut a2 = Visitor::arrive(&s2, "a2", "eu").await;
    let mut u1 = Visitor::arrive(&s2, "u1", "us").await;
    let mut u2 = Visitor::arrive(&s1, "u2", "us").await;
    for v in [&a1, &a2] {
        assert!(
            [&eu1_id, &eu2_id].contains(&&v.node),
            "{} (eu) on {}",
            v.name,
            v.node
        );
        assert_eq!(v.session.sfu.region, "eu");
    }
    for v in [&u1, &u2] {
        assert_eq!(v.node, us1_id, "{} (us) on the us node", v.name);
    }
    let a_pairing = pair(&mut a1, &mut a2).await;
    assert_eq!(a1.node, a2.node, "a pair is linked on one node");
    let u_pairing = pair(&mut u1, &mut u2).await;
    let u_mark = (u1.heard.len(), u2.heard.len());
    assert!(!u_pairing.is_empty());

    // The node with the a-pair is the victim; a second eu pair goes to the other one.
    let (victim, victim_id, survivor_id) = if a1.node == eu1_id {
        (eu1, eu1_id.clone(), eu2_id.clone())
    } else {
        (eu2, eu2_id.clone(), eu1_id.clone())
    };
    wait_for!(
        "the victim's load in its record",
        cl.records()
            .await
            .get(&victim_id)
            .and_then(|r| (r.load >= 2).then_some(()))
    );
    let mut b1 = Visitor::arrive(&s1, "b1", "eu").await;
    let mut b2 = Visitor::arrive(&s2, "b2", "eu").await;
    pair(&mut b1, &mut b2).await;
    assert_eq!(
        b1.node, survivor_id,
        "least-loaded placement puts the b pair on the other eu node"
    );
    assert_eq!(b2.node, survivor_id);
    let b_mark = (b1.heard.len(), b2.heard.len());

    // ---- SIGKILL the victim: its pair moves to the other eu node and is matched again
    cl.procs[victim].child.start_kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    for (me, partner) in [(&mut a1, "a2"), (&mut a2, "a1")] {
        let m = me.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        assert_eq!(pairing_id(&m), a_pairing, "{partner}'s partner again");
        assert_eq!(me.node, survivor_id, "{} moved within the region", me.name);
        assert!(
            me.heard
                .iter()
                .any(|m| matches!(m, ServerMsg::Relocate { sfu, .. } if sfu.node_id.as_str() == survivor_id)),
            "{} was told to relocate",
            me.name
        );
    }
    // Media flows between them through the new node (fresh peer connections).
    media_flows(&mut a1, &mut a2).await;
    eprintln!(
        "multinode: SIGKILL {victim_id}: pair moved to {survivor_id}, matched and media flowing after {:?}",
        killed.elapsed()
    );
    // The calls on the other nodes went on.
    media_flows(&mut b1, &mut b2).await;
    media_flows(&mut u1, &mut u2).await;
    for v in [&mut b1, &mut b2, &mut u1, &mut u2] {
        v.catch_up().await;
    }
    for (v, mark) in [(&b1, b_mark.0), (&b2, b_mark.1), (&u1, u_mark.0), (&u2, u_mark.1)] {
        assert!(
            disturbed(v, mark).is_empty(),
            "{} was disturbed: {:?}",
            v.name,
            disturbed(v, mark)
        );
    }
    // On the survivor both pairs are linked.
    let survivor = if victim == eu1 { eu2 } else { eu1 };
    let list: ParticipantList = reqwest::Client::new()
        .get(format!(
            "{}/internal/v1/participants",
            cl.procs[survivor].internal()
        ))
        .bearer_auth(INTERNAL_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (x, y) in [(&a1, &a2), (&a2, &a1), (&b1, &b2), (&b2, &b1)] {
        let p = list
            .participants
            .iter()
            .find(|p| p.participant_id == x.session.participant_id)
            .unwrap_or_else(|| panic!("{} not on the survivor", x.name));
        assert!(p.connected, "{} connected", x.name);
        assert_eq!(
            p.linked_to.as_ref(),
            Some(&y.session.participant_id),
            "{} linked",
            x.name
        );
    }
    // The victim is out of placement: a new eu visitor goes to the survivor,
    // and its record leaves the registry.
    let e1 = Visitor::arrive(&s1, "e1", "eu").await;
    assert_eq!(e1.node, survivor_id);
    wait_for!(
        "the killed node's record to expire",
        (!cl.records().await.contains_key(&victim_id)).then_some(())
    );
    let moved: f64 = cl
        .metric(sig1, "duet_signaling_relocations_total", &["node_lost", "\"ok\""])
        .await
        + cl.metric(sig2, "duet_signaling_relocations_total", &["node_lost", "\"ok\""])
            .await;
    assert_eq!(moved, 2.0, "two visitors moved off the killed node");

    // ---- SIGTERM the us node: it drains without cutting its call
    let mut u3 = Visitor::arrive(&s2, "u3", "us").await;
    assert_eq!(u3.node, us1_id, "an idle visitor on the us node");
    let u_mark = (u1.heard.len(), u2.heard.len());
    cl.procs[us1].terminate();
    let terminated = Instant::now();
    wait_for!(
        "the us node's record to say draining",
        cl.records()
            .await
            .get(&us1_id)
            .and_then(|r| r.draining.then_some(()))
    );
    // The idle visitor moves at once, to the fallback region; so does a new one.
    let m = u3.recv_until(|m| matches!(m, ServerMsg::Relocate { .. })).await;
    assert!(matches!(m, ServerMsg::Relocate { ref sfu, .. } if sfu.region == "eu"));
    assert_eq!(u3.node, survivor_id);
    let u4 = Visitor::arrive(&s1, "u4", "us").await;
    assert_eq!(u4.node, survivor_id, "nobody new on a draining node");
    // The call on the draining node goes on, and the node waits for it.
    media_flows(&mut u1, &mut u2).await;
    u1.catch_up().await;
    u2.catch_up().await;
    assert!(
        disturbed(&u1, u_mark.0).is_empty(),
        "u1: {:?}",
        disturbed(&u1, u_mark.0)
    );
    assert!(
        disturbed(&u2, u_mark.1).is_empty(),
        "u2: {:?}",
        disturbed(&u2, u_mark.1)
    );
    assert!(
        cl.procs[us1].child.try_wait().unwrap().is_none(),
        "the draining node waits for its call"
    );
    // They leave; the node exits 0 (its drain timeout is far away).
    u1.leave().await;
    u2.leave().await;
    let left = Instant::now();
    let status = wait_for!(
        "the drained node to exit",
        cl.procs[us1].child.try_wait().unwrap()
    );
    eprintln!(
        "multinode: SIGTERM {us1_id}: exited ({status}) {:?} after SIGTERM, {:?} after its call ended",
        terminated.elapsed(),
        left.elapsed()
    );
    assert!(status.success(), "drained node exit status: {status}");
    let drained = cl
        .metric(sig1, "duet_signaling_relocations_total", &["draining", "\"ok\""])
        .await
        + cl.metric(sig2, "duet_signaling_relocations_total", &["draining", "\"ok\""])
            .await;
    assert!(drained >= 1.0, "the idle visitor counted as moved for draining");

    // ---- nothing logged an error (the killed node aside)
    for p in &cl.procs {
        if p.name == cl.procs[victim].name {
            continue;
        }
        let errors = p.errors();
        assert!(
            errors.is_empty(),
            "{} logged errors:\n{}",
            p.name,
            errors.join("\n")
        );
    }
    for v in [a1, a2, b1, b2, e1, u3, u4] {
        v.leave().await;
    }
}
