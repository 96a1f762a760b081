//! The matching core's rules, without I/O.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use proptest::prelude::*;
use proto::signal::Mode;
use proto::{DeviceId, NodeId, ParticipantId};
use signaling::matching::{MatchEvent, MatchRules, Matcher, Pairing, Ticket};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WIDEN: u64 = 5_000;
const COOLDOWN: u64 = 600_000;

fn matcher() -> Matcher {
    Matcher::new(MatchRules {
        widen_after: Duration::from_millis(WIDEN),
        cooldown: Duration::from_millis(COOLDOWN),
    })
}

fn t(user: &str, node: &str, interests: &[&str]) -> Ticket {
    Ticket {
        user: user.into(),
        device: DeviceId::new(format!("dev-{user}")),
        participant: ParticipantId::new(format!("p-{user}")),
        node: NodeId::new(node),
        mode: Mode::Video,
        lang: None,
        interests: interests.iter().map(|s| s.to_string()).collect(),
    }
}

fn events(m: &mut Matcher) -> Vec<MatchEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn matches(m: &mut Matcher) -> Vec<Pairing> {
    events(m)
        .into_iter()
        .filter_map(|e| match e {
            MatchEvent::Matched(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn users(p: &Pairing) -> HashSet<String> {
    [p.a.user.clone(), p.b.user.clone()].into_iter().collect()
}

fn set(a: &str, b: &str) -> HashSet<String> {
    [a.to_string(), b.to_string()].into_iter().collect()
}

#[test]
fn interest_match_is_preferred_over_an_older_random_partner() {
    let mut m = matcher();
    m.handle_join(t("old", "n1", &[]), 0);
    m.handle_join(t("music", "n1", &["music"]), 10);
    // `music` has interests, `old` has none: no match before widening.
    assert!(matches(&mut m).is_empty());
    m.handle_join(t("fan", "n1", &["music", "films"]), 20);
    let ps = matches(&mut m);
    assert_eq!(ps.len(), 1);
    assert_eq!(users(&ps[0]), set("music", "fan"));
    assert_eq!(ps[0].common_interests, vec!["music".to_string()]);
    assert!(m.is_waiting("old"));
}

#[test]
fn more_shared_interests_win() {
    let mut m = matcher();
    let one = t("one", "n1", &["a", "x"]);
    let two = t("two", "n1", &["a", "b"]);
    m.handle_block(&one.device, &two.device);
    m.handle_join(one, 0);
    m.handle_join(two, 1);
    m.handle_join(t("me", "n1", &["a", "b", "c"]), 2);
    let ps = matches(&mut m);
    assert_eq!(users(&ps[0]), set("two", "me"));
}

#[test]
fn widening_after_the_wait_matches_anyone_and_tells_the_user() {
    let mut m = matcher();
    m.handle_join(t("cats", "n1", &["cats"]), 0);
    m.handle_join(t("dogs", "n1", &["dogs"]), 100);
    m.handle_tick(WIDEN - 1);
    assert!(events(&mut m).is_empty(), "nobody widened before the wait");
    m.handle_tick(WIDEN);
    let evs = events(&mut m);
    assert_eq!(evs, vec![MatchEvent::Widened { user: "cats".into() }]);
    // `dogs` is not open yet: `cats` waits.
    assert!(m.is_waiting("cats"));
    m.handle_tick(WIDEN + 100);
    let evs = events(&mut m);
    assert!(matches!(&evs[0], MatchEvent::Widened { user } if user == "dogs"));
    let MatchEvent::Matched(p) = &evs[1] else {
        panic!("expected a match, got {evs:?}")
    };
    assert_eq!(users(p), set("cats", "dogs"));
    assert!(p.common_interests.is_empty());
}

#[test]
fn users_without_interests_are_open_from_the_start() {
    let mut m = matcher();
    m.handle_join(t("a", "n1", &[]), 0);
    m.handle_join(t("b", "n1", &[]), 1);
    assert_eq!(matches(&mut m).len(), 1);
}

#[test]
fn the_same_devices_do_not_meet_again_within_the_cooldown() {
    let mut m = matcher();
    m.handle_join(t("a", "n1", &[]), 0);
    m.handle_join(t("b", "n1", &[]), 1);
    assert_eq!(matches(&mut m).len(), 1);
    // Both press Next.
    m.handle_join(t("a", "n1", &[]), 1_000);
    m.handle_join(t("b", "n1", &[]), 1_001);
    assert!(matches(&mut m).is_empty(), "cooldown keeps them apart");
    m.handle_tick(COOLDOWN);
    assert!(matches(&mut m).is_empty());
    // After the cooldown the tick retries them.
    m.handle_tick(1 + COOLDOWN);
    let ps = matches(&mut m);
    assert_eq!(ps.len(), 1);
    assert_eq!(users(&ps[0]), set("a", "b"));
}

#[test]
fn cooldown_lets_a_third_user_in() {
    let mut m = matcher();
    m.handle_join(t("a", "n1", &[]), 0);
    m.handle_join(t("b", "n1", &[]), 1);
    matches(&mut m);
    m.handle_join(t("a", "n1", &[]), 10);
    m.handle_join(t("b", "n1", &[]), 11);
    m.handle_join(t("c", "n1", &[]), 12);
    let ps = matches(&mut m);
    assert_eq!(users(&ps[0]), set("a", "c"), "c meets the oldest allowed waiter");
}

#[test]
fn reporter_and_reported_are_never_paired_again() {
    let mut m = matcher();
    let a = t("a", "n1", &[]);
    let b = t("b", "n1", &[]);
    m.handle_block(&a.device, &b.device);
    m.handle_join(a, 0);
    m.handle_join(b, 1);
    assert!(matches(&mut m).is_empty());
    m.handle_tick(10 * COOLDOWN);
    assert!(matches(&mut m).is_empty(), "a block never expires");
    // Other sessions of the same devices are kept apart too.
    let mut b2 = t("b2", "n1", &[]);
    b2.device = DeviceId::new("dev-b");
    m.handle_join(b2, 10 * COOLDOWN);
    assert!(matches(&mut m).is_empty());
}

#[test]
fn same_node_partner_is_preferred_among_equal_interest_matches() {
    let mut m = matcher();
    m.handle_join(t("far", "n2", &["x", "q"]), 0);
    m.handle_join(t("near", "n1", &["y", "r"]), 1);
    assert!(matches(&mut m).is_empty());
    m.handle_join(t("me", "n1", &["x", "y"]), 2);
    let ps = matches(&mut m);
    assert_eq!(
        users(&ps[0]),
        set("me", "near"),
        "equal overlap: same node wins over older"
    );
}

#[test]
fn same_node_is_preferred_among_open_users() {
    // Two open waiters kept apart by a block, then a joiner on n1.
    let mut m = matcher();
    let far = t("far", "n2", &[]);
    let near = t("near", "n1", &[]);
    m.handle_block(&far.device, &near.device);
    m.handle_join(far, 0);
    m.handle_join(near, 1);
    assert!(matches(&mut m).is_empty());
    m.handle_join(t("me", "n1", &[]), 2);
    let ps = matches(&mut m);
    assert_eq!(
        users(&ps[0]),
        set("me", "near"),
        "same node beats the older waiter"
    );
    m.handle_join(t("me2", "n3", &[]), 3);
    let ps = matches(&mut m);
    assert_eq!(users(&ps[0]), set("me2", "far"));
}

#[test]
fn oldest_waiter_first_among_equals() {
    let mut m = matcher();
    let first = t("first", "n1", &[]);
    let second = t("second", "n1", &[]);
    m.handle_block(&first.device, &second.device);
    m.handle_join(first, 0);
    m.handle_join(second, 1);
    m.handle_join(t("me", "n1", &[]), 2);
    let ps = matches(&mut m);
    assert_eq!(users(&ps[0]), set("me", "first"));
    assert_eq!(ps[0].a.user, "first", "side a is the one who waited longer");
    assert_eq!(ps[0].a.waited_ms, 2);

    // Interest ties go to the oldest too.
    let mut m = matcher();
    let x1 = t("x1", "n1", &["x"]);
    let x2 = t("x2", "n1", &["x"]);
    m.handle_block(&x1.device, &x2.device);
    m.handle_join(x1, 0);
    m.handle_join(x2, 1);
    m.handle_join(t("me", "n1", &["x"]), 2);
    assert_eq!(users(&matches(&mut m)[0]), set("me", "x1"));
}

#[test]
fn modes_and_languages_are_separate_queues() {
    let mut m = matcher();
    let mut text = t("text", "n1", &[]);
    text.mode = Mode::Text;
    m.handle_join(text, 0);
    m.handle_join(t("video", "n1", &[]), 1);
    assert!(matches(&mut m).is_empty());
    assert_eq!(m.waiting_count(Mode::Text), 1);
    assert_eq!(m.waiting_count(Mode::Video), 1);
    let mut en = t("en", "n1", &[]);
    en.lang = Some("en".into());
    m.handle_join(en, 2);
    assert!(
        matches(&mut m).is_empty(),
        "a language queue is apart from the common one"
    );
    let mut en2 = t("en2", "n1", &[]);
    en2.lang = Some("en".into());
    m.handle_join(en2, 3);
    assert_eq!(users(&matches(&mut m)[0]), set("en", "en2"));
}

#[test]
fn leaving_takes_a_user_out_and_rejoining_replaces_the_ticket() {
    let mut m = matcher();
    m.handle_join(t("a", "n1", &["x"]), 0);
    m.handle_join(t("a", "n1", &["y"]), 1);
    assert_eq!(m.waiting_count(Mode::Video), 1);
    assert!(m.handle_leave("a"));
    assert!(!m.handle_leave("a"));
    m.handle_join(t("b", "n1", &["x"]), 2);
    assert!(matches(&mut m).is_empty());
}

#[test]
fn two_sessions_of_one_device_never_meet() {
    let mut m = matcher();
    let a = t("a", "n1", &[]);
    let mut a2 = t("a2", "n1", &[]);
    a2.device = a.device.clone();
    m.handle_join(a, 0);
    m.handle_join(a2, 1);
    assert!(matches(&mut m).is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Join {
        user: u8,
        device: u8,
        node: u8,
        text: bool,
        interests: Vec<u8>,
    },
    Leave {
        user: u8,
    },
    Block {
        a: u8,
        b: u8,
    },
    Tick {
        advance: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..12, 0u8..6, 0u8..3, any::<bool>(), proptest::collection::vec(0u8..4, 0..3))
            .prop_map(|(user, device, node, text, interests)| Op::Join { user, device, node, text, interests }),
        1 => (0u8..12).prop_map(|user| Op::Leave { user }),
        1 => (0u8..6, 0u8..6).prop_map(|(a, b)| Op::Block { a, b }),
        2 => (0u16..8000).prop_map(|advance| Op::Tick { advance }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pairs_never_break_the_rules(ops in proptest::collection::vec(op(), 1..80)) {
        let mut m = matcher();
        let mut now: u64 = 0;
        let mut device_of: HashMap<String, DeviceId> = HashMap::new();
        let mut mode_of: HashMap<String, Mode> = HashMap::new();
        let mut blocks: HashSet<(DeviceId, DeviceId)> = HashSet::new();
        let mut last_met: HashMap<(DeviceId, DeviceId), u64> = HashMap::new();
        let mut waiting: HashSet<String> = HashSet::new();
        for op in ops {
            match op {
                Op::Join { user, device, node, text, interests } => {
                    let user = format!("u{user}");
                    let ticket = Ticket {
                        user: user.clone(),
                        device: DeviceId::new(format!("d{device}")),
                        participant: ParticipantId::new(format!("p{user}")),
                        node: NodeId::new(format!("n{node}")),
                        mode: if text { Mode::Text } else { Mode::Video },
                        lang: None,
                        interests: signaling::matching::normalize_interests(
                            &interests.iter().map(|i| format!("i{i}")).collect::<Vec<_>>(),
                        ),
                    };
                    device_of.insert(user.clone(), ticket.device.clone());
                    mode_of.insert(user.clone(), ticket.mode);
                    waiting.insert(user);
                    m.handle_join(ticket, now);
                }
                Op::Leave { user } => {
                    let user = format!("u{user}");
                    prop_assert_eq!(m.handle_leave(&user), waiting.remove(&user));
                }
                Op::Block { a, b } => {
                    let (a, b) = (DeviceId::new(format!("d{a}")), DeviceId::new(format!("d{b}")));
                    m.handle_block(&a, &b);
                    blocks.insert(signaling::matching::device_pair(&a, &b));
                }
                Op::Tick { advance } => {
                    now += advance as u64;
                    m.handle_tick(now);
                }
            }
            while let Some(ev) = m.poll_event() {
                if let MatchEvent::Matched(p) = ev {
                    prop_assert_ne!(&p.a.user, &p.b.user, "paired with itself");
                    prop_assert_ne!(&p.a.device, &p.b.device, "paired with own device");
                    prop_assert_eq!(mode_of[&p.a.user], mode_of[&p.b.user], "paired across modes");
                    prop_assert_eq!(p.mode, mode_of[&p.a.user]);
                    prop_assert_eq!(&device_of[&p.a.user], &p.a.device);
                    prop_assert!(waiting.remove(&p.a.user), "a was not waiting");
                    prop_assert!(waiting.remove(&p.b.user), "b was not waiting");
                    let pair = signaling::matching::device_pair(&p.a.device, &p.b.device);
                    prop_assert!(!blocks.contains(&pair), "blocked pair matched");
                    if let Some(at) = last_met.get(&pair) {
                        prop_assert!(now >= at + COOLDOWN, "cooldown violated: met at {} and {}", at, now);
                    }
                    last_met.insert(pair, now);
                }
            }
        }
    }
}
