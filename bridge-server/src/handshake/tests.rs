//! The handshake policy and its tally, driven with explicit instants: no sockets, no clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::policy::{Admission, Bounds, HandshakeId, Policy, ShedReason, Source, Tally};

fn v4(last: u8) -> Source {
    Source::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn policy(total: usize, per_source: usize) -> Policy<u32> {
    Policy::new(Bounds {
        total,
        per_source,
        min_age: Duration::from_secs(1),
    })
}

/// Admits and expects no shedding; returns the id.
fn admitted(p: &mut Policy<u32>, source: Source, at: Instant, tag: u32) -> HandshakeId {
    match p.admit(source, at, tag) {
        Admission::Admitted { id, shed: None } => id,
        other => panic!("expected a plain admission of {tag} from {source}, got {other:?}"),
    }
}

/// Admits and expects `shed` (by tag) to give way.
fn admitted_shedding(p: &mut Policy<u32>, source: Source, at: Instant, tag: u32) -> (u32, Source) {
    match p.admit(source, at, tag) {
        Admission::Admitted {
            shed: Some(shed), ..
        } => (shed.payload, shed.source),
        other => panic!("expected {tag} from {source} to shed one, got {other:?}"),
    }
}

fn refused(p: &mut Policy<u32>, source: Source, at: Instant) -> ShedReason {
    match p.admit(source, at, u32::MAX) {
        Admission::Refused(reason) => reason,
        other => panic!("expected a refusal for {source}, got {other:?}"),
    }
}

#[test]
fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("address");
    assert_eq!(Source::of(ip("127.0.0.1")).to_string(), "127.0.0.1");
    assert_ne!(Source::of(ip("127.0.0.1")), Source::of(ip("127.0.0.2")));
    // A dual-stack listener sees IPv4 clients as mapped addresses.
    assert_eq!(
        Source::of(ip("::ffff:10.1.2.3")),
        Source::of(ip("10.1.2.3"))
    );
    // One /64 is one source, whatever the interface identifier.
    let a = Source::of(ip("2001:db8:1:2:aaaa::1"));
    assert_eq!(a, Source::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
    assert_ne!(a, Source::of(ip("2001:db8:1:3::1")));
    assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    assert_eq!(
        Source::of(IpAddr::V6(Ipv6Addr::LOCALHOST)).to_string(),
        "::/64"
    );
}

#[test]
fn a_source_at_its_bound_is_refused_while_another_is_admitted() {
    let t0 = Instant::now();
    let mut p = policy(256, 3);
    for tag in 0..3 {
        admitted(&mut p, v4(1), t0, tag);
    }
    assert_eq!(refused(&mut p, v4(1), t0), ShedReason::SourceLimit);
    admitted(&mut p, v4(2), t0, 10);
    assert_eq!((p.len(), p.held_by(v4(1)), p.held_by(v4(2))), (4, 3, 1));
}

#[test]
fn finishing_frees_the_slot_once() {
    let t0 = Instant::now();
    let mut p = policy(2, 2);
    let a = admitted(&mut p, v4(1), t0, 1);
    admitted(&mut p, v4(1), t0, 2);
    assert_eq!(refused(&mut p, v4(1), t0), ShedReason::SourceLimit);
    assert_eq!(p.finish(a), Some(1));
    assert_eq!(p.finish(a), None, "a second finish is a no-op");
    assert_eq!(p.len(), 1);
    admitted(&mut p, v4(1), t0, 3);
}

#[test]
fn when_full_the_oldest_of_the_largest_source_gives_way_to_a_smaller_one() {
    let t0 = Instant::now();
    let mut p = policy(4, 4);
    // Source 1 holds 3 (tags 0, 1, 2, oldest first), source 2 holds 1.
    admitted(&mut p, v4(1), t0, 0);
    admitted(&mut p, v4(2), t0, 100);
    admitted(&mut p, v4(1), t0, 1);
    admitted(&mut p, v4(1), t0, 2);
    // A newcomer from a third source sheds source 1's oldest, however young it is: source 1
    // holds more than its share.
    assert_eq!(admitted_shedding(&mut p, v4(3), t0, 300), (0, v4(1)));
    assert_eq!(p.len(), 4);
    // Source 1 (now 2) still holds two more than source 4 (none): its next oldest goes.
    assert_eq!(admitted_shedding(&mut p, v4(4), t0, 400), (1, v4(1)));
    // Sources now hold 1 each. A newcomer from source 1 itself is refused: its source would
    // hold more than any other.
    assert_eq!(refused(&mut p, v4(1), t0), ShedReason::Full);
}

#[test]
fn a_flood_from_the_largest_source_never_sheds_a_smaller_one() {
    let t0 = Instant::now();
    let mut p = policy(8, 8);
    for tag in 0..7 {
        admitted(&mut p, v4(1), t0, tag);
    }
    admitted(&mut p, v4(2), t0, 100);
    // Source 1 holds 7 of 8: however long it floods, it only ever meets a refusal.
    for i in 0..1000 {
        let at = t0 + Duration::from_millis(i * 10);
        assert_eq!(refused(&mut p, v4(1), at), ShedReason::Full);
    }
    assert_eq!(p.held_by(v4(2)), 1);
}

#[test]
fn equal_shares_give_way_only_to_slow_handshakes() {
    let t0 = Instant::now();
    let mut p = policy(3, 3);
    admitted(&mut p, v4(1), t0, 1);
    admitted(&mut p, v4(2), t0 + Duration::from_millis(10), 2);
    admitted(&mut p, v4(3), t0 + Duration::from_millis(20), 3);
    // One each: a fourth source may only displace a handshake that has been going for min_age.
    let soon = t0 + Duration::from_millis(500);
    assert_eq!(refused(&mut p, v4(4), soon), ShedReason::Full);
    // Once the oldest is slow, it goes first, and then the next oldest once it is slow too.
    let later = t0 + Duration::from_millis(1005);
    assert_eq!(admitted_shedding(&mut p, v4(4), later, 4), (1, v4(1)));
    assert_eq!(
        admitted_shedding(&mut p, v4(5), later + Duration::from_millis(5), 5),
        (2, v4(2))
    );
    assert_eq!(
        refused(&mut p, v4(6), later + Duration::from_millis(6)),
        ShedReason::Full
    );
}

#[test]
fn ties_between_largest_sources_shed_the_oldest_handshake() {
    let t0 = Instant::now();
    let mut p = policy(4, 4);
    admitted(&mut p, v4(2), t0, 20);
    admitted(&mut p, v4(1), t0, 10);
    admitted(&mut p, v4(1), t0, 11);
    admitted(&mut p, v4(2), t0, 21);
    assert_eq!(admitted_shedding(&mut p, v4(3), t0, 30), (20, v4(2)));
    // Source 1 now holds the most: its oldest goes next.
    assert_eq!(admitted_shedding(&mut p, v4(4), t0, 40), (10, v4(1)));
}

#[test]
fn bounds_below_one_count_as_one() {
    let t0 = Instant::now();
    let mut p = policy(0, 0);
    admitted(&mut p, v4(1), t0, 1);
    assert_eq!(refused(&mut p, v4(1), t0), ShedReason::SourceLimit);
}

/// A long simulation: one source floods (reconnecting at once whenever it is closed, never
/// finishing a handshake), with the per-source bound as large as the total; eight others arrive
/// now and then and finish their handshake 50 ms later. Every arrival of the others is
/// admitted, the bounds always hold, and nothing is ever left counted after all finish.
#[test]
fn other_sources_are_always_admitted_during_a_flood_from_one() {
    const TOTAL: usize = 64;
    let t0 = Instant::now();
    let mut p: Policy<u64> = Policy::new(Bounds {
        total: TOTAL,
        per_source: TOTAL,
        min_age: Duration::from_millis(2500),
    });
    let flooder = v4(1);
    let mut flood_ids = std::collections::VecDeque::new();
    let mut others: Vec<(Instant, HandshakeId)> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut admitted_others, mut shed_flood) = (0, 0);
    for step in 0..20_000u64 {
        let now = t0 + Duration::from_millis(step);
        // The flooder's handshakes time out after 10 s.
        while flood_ids
            .front()
            .is_some_and(|(since, _, _)| now.duration_since(*since) >= Duration::from_secs(10))
        {
            if let Some((_, id, _)) = flood_ids.pop_front() {
                p.finish(id);
            }
        }
        // The flooder tries again every millisecond.
        if let Admission::Admitted { id, shed } = p.admit(flooder, now, step) {
            assert!(shed.is_none(), "the flooder shed someone at step {step}");
            flood_ids.push_back((now, id, step));
        }
        others.retain(|(done, id)| {
            if *done <= now {
                assert!(
                    p.finish(*id).is_some(),
                    "another source's handshake was shed"
                );
                false
            } else {
                true
            }
        });
        if next() % 20 == 0 {
            let source = v4(2 + (next() % 8) as u8);
            match p.admit(source, now, u64::MAX) {
                Admission::Admitted { id, shed } => {
                    admitted_others += 1;
                    if let Some(s) = shed {
                        assert_eq!(s.source, flooder);
                        shed_flood += 1;
                        flood_ids.retain(|(_, _, tag)| *tag != s.payload);
                    }
                    others.push((now + Duration::from_millis(50), id));
                }
                Admission::Refused(why) => panic!("{source} refused ({why:?}) at step {step}"),
            }
        }
        assert!(p.len() <= TOTAL);
    }
    assert!(admitted_others > 500, "{admitted_others}");
    assert!(shed_flood > 0);
    for (_, id) in others {
        p.finish(id);
    }
    for (_, id, _) in flood_ids {
        p.finish(id);
    }
    assert_eq!(p.len(), 0);
}

#[test]
fn the_tally_names_the_largest_sources_and_sums_the_rest() {
    let mut t = Tally::default();
    assert!(t.take().is_none());
    for _ in 0..300 {
        t.record(v4(1), ShedReason::SourceLimit);
    }
    t.record(v4(1), ShedReason::Oldest);
    for i in 0..10 {
        t.record(v4(10 + i), ShedReason::Full);
    }
    let s = t.take().expect("a summary");
    assert_eq!(s.total.total(), 311);
    assert_eq!(s.top.len(), 5);
    assert_eq!(s.top[0].0, v4(1));
    let line = s.to_string();
    assert!(
        line.starts_with(
            "311 (300 over the per-source bound, 1 oldest shed for a newcomer, 10 refused, all \
             slots busy); 127.0.0.1: 300 over the per-source bound, 1 oldest shed for a newcomer; \
             127.0.0.10: 1 refused, all slots busy;"
        ),
        "{line}"
    );
    assert!(
        line.ends_with("; other sources: 6 refused, all slots busy"),
        "{line}"
    );
    assert!(t.take().is_none(), "taking starts a new window");
}

#[test]
fn the_tally_stays_bounded_under_many_sources() {
    let mut t = Tally::default();
    for i in 0..100_000u32 {
        let ip = Ipv4Addr::from(0x0a00_0000 + i);
        t.record(Source::of(IpAddr::V4(ip)), ShedReason::Full);
    }
    let s = t.take().expect("a summary");
    assert_eq!(s.total.full, 100_000);
    assert_eq!(s.top.len(), 5);
}
