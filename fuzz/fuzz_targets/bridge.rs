//! The virtual bridge: ports attach, detach, send frames of any length with addresses from a small set (so
//! learning, ageing, unicast, flooding and full queues all happen) and take frames, while the clock moves.
//! Checks: every frame a port takes is one another port sent, unchanged, at most once per port; queues stay
//! within their depth; and each attached port's counters add up with its queues.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use trapeze::dev::virtio::net::{FRAME_MAX, FRAME_MIN};
use trapeze::net::bridge::{Bridge, PortId};
use trapeze_fuzz::Input;

const PORTS: usize = 4;
const DEPTH: usize = 4;
const TABLE: usize = 3;

fn mac(choice: u8) -> [u8; 6] {
    match choice % 8 {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0, 0, 1],
        n => [0x02, 0, 0, 0, 0, n],
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut bridge = Box::new(Bridge::<PORTS, DEPTH, TABLE>::new(input.below(50)));
    let mut ports: Vec<Option<PortId>> = vec![None; PORTS];
    // Every frame sent: serial -> (source port index, bytes).
    let mut sent: HashMap<u64, (usize, Vec<u8>)> = HashMap::new();
    let mut taken: HashSet<(usize, u64)> = HashSet::new();
    let mut serial = 0u64;
    let mut now = 0u64;
    let mut buf = [0u8; FRAME_MAX];
    while !input.is_empty() {
        let index = input.below(PORTS as u64) as usize;
        match input.u8() % 8 {
            0 => {
                if ports[index].is_none() {
                    ports[index] = bridge.attach();
                    if let Some(port) = ports[index] {
                        assert_eq!(bridge.stats(port), Default::default(), "a fresh port counts from 0");
                        assert_eq!((bridge.pending(port), bridge.unswitched(port)), (0, 0));
                    }
                } else if input.one_in(4) {
                    if let Some(port) = ports[index].take() {
                        bridge.detach(port);
                        assert_eq!((bridge.pending(port), bridge.unswitched(port)), (0, 0));
                    }
                }
            }
            1..=3 => {
                let Some(port) = ports[index] else { continue };
                let len = match input.u8() % 8 {
                    0 => input.below(FRAME_MIN as u64 + 8) as usize,
                    1 => FRAME_MAX - 2 + input.below(5) as usize,
                    _ => 24 + input.below(40) as usize,
                };
                let mut frame = vec![0u8; len];
                let head: Vec<u8> = [mac(input.u8()), mac(input.u8())].concat();
                let tag: Vec<u8> = serial.to_le_bytes().into_iter().chain([port.index() as u8]).collect();
                for (i, &b) in head.iter().chain(&tag).enumerate().take(len) {
                    frame[i] = b;
                }
                let before = bridge.stats(port);
                let accepted = bridge.send(port, &frame);
                let after = bridge.stats(port);
                assert_eq!(accepted, (FRAME_MIN..=FRAME_MAX).contains(&len) && before.sent < after.sent);
                assert_eq!(after.sent + after.send_dropped, before.sent + before.send_dropped + 1);
                if accepted {
                    // Only frames long enough to carry their tag are told apart.
                    if len >= 21 {
                        sent.insert(serial, (port.index(), frame));
                    }
                    serial += 1;
                }
            }
            4 | 5 => {
                let Some(port) = ports[index] else { continue };
                if let Some(len) = bridge.receive(port, &mut buf) {
                    assert!((FRAME_MIN..=FRAME_MAX).contains(&len), "a {len}-byte frame");
                    if len >= 21 {
                        let frame_serial = u64::from_le_bytes(buf[12..20].try_into().unwrap());
                        if let Some((source, bytes)) = sent.get(&frame_serial) {
                            if bytes.len() == len && buf[20] as usize == *source {
                                assert_eq!(&buf[..len], &bytes[..], "frames arrive unchanged");
                                assert_ne!(*source, port.index(), "a frame never comes back to its sender");
                                assert!(taken.insert((port.index(), frame_serial)), "a frame arrives once per port");
                            }
                        }
                    }
                }
            }
            6 => {
                now += input.below(40);
                let budget = input.below(12) as usize;
                let waiting: usize = ports.iter().flatten().map(|&p| bridge.unswitched(p)).sum();
                let switched = bridge.pump(now, budget);
                assert!(switched <= budget.min(waiting), "switched {switched} of {waiting} with budget {budget}");
            }
            _ => {
                let _ = bridge.lookup(&mac(input.u8()));
            }
        }
        for &port in ports.iter().flatten() {
            let stats = bridge.stats(port);
            let (pending, unswitched) = (bridge.pending(port), bridge.unswitched(port));
            assert!(pending <= DEPTH && unswitched <= DEPTH);
            assert_eq!(stats.sent, stats.switched + unswitched as u64, "port {}: {stats:?}", port.index());
            assert_eq!(stats.queued, stats.received + pending as u64, "port {}: {stats:?}", port.index());
            assert!(stats.filtered <= stats.switched);
        }
    }
});
