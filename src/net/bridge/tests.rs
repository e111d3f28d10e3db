//! The bridge's switching rules one by one, then property tests over random traffic: no frame back to its
//! source port, a learned unicast only to its port, queues within capacity, counters adding up, fairness.

use super::*;
use proptest::prelude::*;

const PORTS: usize = 4;
const DEPTH: usize = 4;
const TABLE: usize = 8;
type Small = Bridge<PORTS, DEPTH, TABLE>;

const BROADCAST: Mac = [0xff; 6];
const MULTICAST: Mac = [0x01, 0x00, 0x5e, 0, 0, 1];

/// The MAC of the NIC on port `port` (locally administered unicast).
fn mac(port: usize) -> Mac {
    [0x52, 0x54, 0, 0, 0, port as u8]
}

/// A frame from `source` (whose port number is the first payload byte) to `destination`, tagged `tag`.
fn frame(destination: Mac, source_port: usize, tag: u8) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&destination);
    frame.extend_from_slice(&mac(source_port));
    frame.extend_from_slice(&[0x88, 0xb5, source_port as u8, tag]);
    frame.resize(60, tag);
    frame
}

fn bridge() -> (Small, Vec<PortId>) {
    let mut bridge = Small::new(1000);
    let ports = (0..PORTS).map(|_| bridge.attach().unwrap()).collect();
    (bridge, ports)
}

fn drain(bridge: &mut Small, port: PortId) -> Vec<Vec<u8>> {
    let mut buf = [0u8; FRAME_MAX];
    std::iter::from_fn(|| bridge.receive(port, &mut buf).map(|len| buf[..len].to_vec())).collect()
}

#[test]
fn broadcast_floods_to_every_other_port_then_unicast_goes_to_the_learned_port() {
    let (mut bridge, ports) = bridge();
    assert!(bridge.attach().is_none(), "only {PORTS} ports");
    assert!(bridge.send(ports[0], &frame(BROADCAST, 0, 1)));
    assert_eq!(bridge.pump(0, 100), 1);
    assert_eq!(drain(&mut bridge, ports[0]), Vec::<Vec<u8>>::new(), "never back to the source");
    for &port in &ports[1..] {
        assert_eq!(drain(&mut bridge, port), vec![frame(BROADCAST, 0, 1)]);
    }
    assert_eq!(bridge.lookup(&mac(0)), Some(ports[0]));
    // Port 2 answers port 0 by unicast: only port 0 gets it.
    bridge.send(ports[2], &frame(mac(0), 2, 2));
    bridge.pump(1, 100);
    assert_eq!(drain(&mut bridge, ports[0]), vec![frame(mac(0), 2, 2)]);
    for port in [ports[1], ports[2], ports[3]] {
        assert!(drain(&mut bridge, port).is_empty());
    }
    // Multicast and unknown unicast flood too.
    bridge.send(ports[1], &frame(MULTICAST, 1, 3));
    bridge.send(ports[1], &frame(mac(9), 1, 4));
    bridge.pump(2, 100);
    for port in [ports[0], ports[2], ports[3]] {
        assert_eq!(drain(&mut bridge, port).len(), 2);
    }
}

#[test]
fn a_frame_for_an_address_on_its_own_port_is_filtered() {
    let (mut bridge, ports) = bridge();
    bridge.send(ports[0], &frame(BROADCAST, 0, 1));
    bridge.pump(0, 10);
    // A frame for port 0's MAC comes in by port 0 itself (as from a second host behind one uplink).
    bridge.send(ports[0], &frame(mac(0), 0, 2));
    bridge.pump(0, 10);
    assert_eq!(bridge.stats(ports[0]).filtered, 1);
    assert!(drain(&mut bridge, ports[0]).is_empty());
}

#[test]
fn learned_addresses_age_and_move() {
    let (mut bridge, ports) = bridge();
    bridge.send(ports[1], &frame(BROADCAST, 1, 1));
    bridge.pump(0, 10);
    assert_eq!(bridge.lookup(&mac(1)), Some(ports[1]));
    bridge.pump(1001, 10);
    assert_eq!(bridge.lookup(&mac(1)), None, "aged out");
    // The same MAC shows up on another port (a VM moved): the table follows.
    let mut moved = frame(BROADCAST, 1, 2);
    moved[14] = 3;
    bridge.send(ports[3], &moved);
    bridge.pump(1002, 10);
    assert_eq!(bridge.lookup(&mac(1)), Some(ports[3]));
}

#[test]
fn a_full_table_forgets_its_oldest_entry() {
    let mut bridge = Bridge::<2, 16, 2>::new(1000);
    let (a, _b) = (bridge.attach().unwrap(), bridge.attach().unwrap());
    for (time, port) in [(1, 10), (2, 11), (3, 12)] {
        bridge.send(a, &frame(BROADCAST, port, 0));
        bridge.pump(time, 10);
    }
    assert_eq!(bridge.lookup(&mac(10)), None);
    assert_eq!(bridge.lookup(&mac(11)), Some(a));
    assert_eq!(bridge.lookup(&mac(12)), Some(a));
}

#[test]
fn full_queues_drop_and_count() {
    let (mut bridge, ports) = bridge();
    for tag in 0..DEPTH as u8 + 3 {
        bridge.send(ports[0], &frame(mac(1), 0, tag));
    }
    assert_eq!(bridge.stats(ports[0]).sent, DEPTH as u64);
    assert_eq!(bridge.stats(ports[0]).send_dropped, 3);
    assert!(!bridge.send(ports[0], &[0u8; 13]), "shorter than an Ethernet header");
    assert!(!bridge.send(ports[0], &[0u8; FRAME_MAX + 1]));
    bridge.pump(0, 100);
    // Unknown unicast floods to three ports, each queue holds DEPTH.
    for _ in 0..DEPTH {
        bridge.send(ports[0], &frame(mac(1), 0, 9));
    }
    bridge.pump(0, 100);
    assert_eq!(bridge.pending(ports[2]), DEPTH);
    assert_eq!(bridge.stats(ports[2]).queue_dropped, DEPTH as u64);
}

#[test]
fn a_detached_port_is_forgotten() {
    let (mut bridge, ports) = bridge();
    bridge.send(ports[1], &frame(BROADCAST, 1, 1));
    bridge.pump(0, 10);
    bridge.detach(ports[1]);
    assert_eq!(bridge.lookup(&mac(1)), None);
    assert!(!bridge.send(ports[1], &frame(BROADCAST, 1, 2)));
    bridge.send(ports[0], &frame(BROADCAST, 0, 3));
    bridge.pump(1, 10);
    assert_eq!(bridge.pending(ports[1]), 0, "no flooding to a detached port");
    assert_eq!(bridge.attach(), Some(ports[1]));
}

#[test]
fn round_robin_lets_a_quiet_port_through_a_flood() {
    let (mut bridge, ports) = bridge();
    for tag in 0..DEPTH as u8 {
        bridge.send(ports[0], &frame(mac(3), 0, tag));
    }
    bridge.send(ports[1], &frame(mac(3), 1, 100));
    // Two frames switched: one from each port with work, not two from the flooder.
    assert_eq!(bridge.pump(0, 2), 2);
    let got = drain(&mut bridge, ports[3]);
    assert!(got.iter().any(|f| f[14] == 1), "the quiet port's frame got through: {got:?}");
}

#[test]
fn bridge_ports_are_net_backends() {
    let bridge = RefCell::new(Small::new(100));
    let mut a = BridgePort::attach(&bridge).unwrap();
    let mut b = BridgePort::attach(&bridge).unwrap();
    a.send(&frame(BROADCAST, 0, 7));
    bridge.borrow_mut().pump(0, 10);
    assert_eq!(bridge.borrow().pending(b.port()), 1);
    let mut buf = [0u8; FRAME_MAX];
    assert_eq!(b.receive(&mut buf), Some(60));
    assert_eq!(buf[..60], frame(BROADCAST, 0, 7)[..]);
    assert_eq!(a.receive(&mut buf), None);
}

/// One step of random traffic.
#[derive(Debug, Clone)]
enum Op {
    /// Port `from` sends to destination kind `to` (0..PORTS: that port's MAC; PORTS: broadcast; PORTS + 1:
    /// multicast; else an unknown MAC).
    Send {
        from: usize,
        to: usize,
    },
    Pump {
        budget: usize,
    },
    Receive {
        port: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PORTS, 0..PORTS + 3).prop_map(|(from, to)| Op::Send { from, to }),
        1 => (0usize..8).prop_map(|budget| Op::Pump { budget }),
        2 => (0..PORTS).prop_map(|port| Op::Receive { port }),
    ]
}

proptest! {
    #[test]
    fn random_traffic_keeps_the_switching_rules(ops in proptest::collection::vec(op(), 1..200)) {
        let (mut bridge, ports) = bridge();
        // Everyone announces itself first, so every port's MAC is learned.
        for (index, &port) in ports.iter().enumerate() {
            bridge.send(port, &frame(BROADCAST, index, 0));
            bridge.pump(0, 1);
        }
        for &port in &ports {
            drain(&mut bridge, port);
        }
        let mut buf = [0u8; FRAME_MAX];
        for op in ops {
            match op {
                Op::Send { from, to } => {
                    let destination = match to {
                        to if to < PORTS => mac(to),
                        to if to == PORTS => BROADCAST,
                        to if to == PORTS + 1 => MULTICAST,
                        _ => mac(77),
                    };
                    bridge.send(ports[from], &frame(destination, from, to as u8));
                }
                Op::Pump { budget } => {
                    let switched = bridge.pump(0, budget);
                    prop_assert!(switched <= budget);
                }
                Op::Receive { port } => {
                    if let Some(len) = bridge.receive(ports[port], &mut buf) {
                        let got = &buf[..len];
                        let source = usize::from(got[14]);
                        prop_assert_ne!(source, port, "a frame went back to its source port");
                        let destination: Mac = got[..6].try_into().unwrap();
                        if let Some(owner) = (0..PORTS).find(|&p| mac(p) == destination) {
                            prop_assert_eq!(owner, port, "a learned unicast reached another port");
                        }
                    }
                }
            }
            for &port in &ports {
                prop_assert!(bridge.pending(port) <= DEPTH && bridge.unswitched(port) <= DEPTH);
            }
        }
        for &port in &ports {
            let stats = bridge.stats(port);
            prop_assert_eq!(stats.sent, stats.switched + bridge.unswitched(port) as u64);
            prop_assert_eq!(stats.queued, stats.received + bridge.pending(port) as u64);
        }
    }

    #[test]
    fn ports_with_backlogs_are_served_in_turn(backlog in proptest::collection::vec(0..=DEPTH, PORTS), budget in 0usize..20) {
        let (mut bridge, ports) = bridge();
        for (index, &count) in backlog.iter().enumerate() {
            for tag in 0..count {
                bridge.send(ports[index], &frame(mac(77), index, tag as u8));
            }
        }
        let switched = bridge.pump(0, budget);
        let served: Vec<usize> =
            ports.iter().map(|&port| bridge.stats(port).switched as usize).collect();
        prop_assert_eq!(switched, served.iter().sum::<usize>());
        prop_assert_eq!(switched, budget.min(backlog.iter().sum()));
        // Fair: a port left with work was served at least as often as any other port, less one.
        let most = served.iter().copied().max().unwrap_or(0);
        for (index, &count) in served.iter().enumerate() {
            if count < backlog[index] {
                prop_assert!(count + 1 >= most, "port {} served {} times, another {}", index, count, most);
            }
        }
    }
}
