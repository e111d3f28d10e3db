//! The console multiplexer against a fake terminal: tagging, line assembly, focus switching with the escape
//! keys, bounded input, ports through a `RefCell`, and a model-based property test of random traffic.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

/// The physical console: what the multiplexer wrote, and what the user has typed but it has not read.
#[derive(Default)]
struct Terminal {
    out: std::vec::Vec<u8>,
    typed: VecDeque<u8>,
}

impl SerialBackend for Terminal {
    fn write_byte(&mut self, byte: u8) {
        self.out.push(byte);
    }
    fn read_byte(&mut self) -> Option<u8> {
        self.typed.pop_front()
    }
}

type Mux = ConsoleMux<Terminal, 3, 4, 16>;

fn screen(mux: &Mux) -> &str {
    core::str::from_utf8(&mux.console().out).expect("ASCII in these tests")
}

fn typed(mux: &mut Mux, keys: &[u8]) {
    mux.console_mut().typed.extend(keys);
    mux.poll_input();
}

fn drain(mux: &mut Mux, port: usize) -> std::vec::Vec<u8> {
    core::iter::from_fn(|| mux.read(port)).collect()
}

#[test]
fn output_is_tagged_per_vm_a_whole_line_at_a_time() {
    let mut mux = Mux::new(Terminal::default());
    mux.write_bytes(0, b"hello ");
    mux.write_bytes(1, b"other\r\n");
    mux.write_bytes(0, b"world\n");
    mux.write_bytes(2, b"x\ny\n");
    assert_eq!(screen(&mux), "[vm1] other\r\n[vm0] hello world\n[vm2] x\n[vm2] y\n");
    assert!(mux.set_tag(2, "[linux] "));
    assert!(!mux.set_tag(2, "a tag far longer than the limit allows"), "too long: refused");
    assert!(!mux.set_tag(3, "[vm3] "), "no such port");
    mux.write_bytes(2, b"boot\n");
    assert!(screen(&mux).ends_with("[linux] boot\n"));
}

#[test]
fn a_partial_line_goes_out_on_flush_and_continues_untagged_unless_another_vm_wrote() {
    let mut mux = Mux::new(Terminal::default());
    mux.write_bytes(0, b"=> ");
    assert_eq!(screen(&mux), "", "held until its newline");
    mux.flush(0);
    mux.flush(0);
    assert_eq!(screen(&mux), "[vm0] => ", "flushing nothing writes nothing");
    mux.write_bytes(0, b"ver");
    mux.flush(0);
    mux.write_bytes(0, b"sion\n");
    assert_eq!(screen(&mux), "[vm0] => version\n", "the same line, one tag");
    mux.write_bytes(1, b"$ ");
    mux.flush_all();
    mux.write_bytes(0, b"done\n");
    mux.write_bytes(1, b"ls\n");
    assert_eq!(screen(&mux), "[vm0] => version\n[vm1] $ \n[vm0] done\n[vm1] ls\n", "interrupted: closed, tagged again");
    mux.write_bytes(2, b"half");
    mux.flush(2);
    mux.notice("board: a message of the host");
    assert!(screen(&mux).ends_with("[vm2] half\nboard: a message of the host\n"), "a notice closes the open line");
}

#[test]
fn a_line_longer_than_the_buffer_goes_out_in_pieces_of_one_line() {
    let mut mux = Mux::new(Terminal::default());
    mux.write_bytes(1, b"0123456789abcdefXYZ\n");
    assert_eq!(screen(&mux), "[vm1] 0123456789abcdefXYZ\n");
    mux.write_bytes(1, b"0123456789abcdef+");
    mux.write_bytes(0, b"zero\n");
    mux.write_bytes(1, b"tail\n");
    assert_eq!(screen(&mux), "[vm1] 0123456789abcdefXYZ\n[vm1] 0123456789abcdef\n[vm0] zero\n[vm1] +tail\n");
}

#[test]
fn input_goes_to_the_focused_vm_and_ctrl_a_c_cycles_the_focus() {
    let mut mux = Mux::new(Terminal::default());
    assert_eq!(mux.focus(), 0);
    typed(&mut mux, b"ls\n");
    assert_eq!(drain(&mut mux, 1), b"");
    assert_eq!(drain(&mut mux, 0), b"ls\n");
    typed(&mut mux, &[ESCAPE, b'c', b'p']);
    assert_eq!(mux.focus(), 1);
    assert_eq!(screen(&mux), "console: input to [vm1]\n");
    assert_eq!((drain(&mut mux, 0), drain(&mut mux, 1)), (vec![], b"p".to_vec()));
    // The escape split across two polls still acts; then a wrap from the last port to the first.
    typed(&mut mux, &[ESCAPE]);
    typed(&mut mux, b"c");
    typed(&mut mux, &[ESCAPE, b'c']);
    assert_eq!(mux.focus(), 0);
    // Ctrl-A Ctrl-A is one literal Ctrl-A; Ctrl-A and an unknown key are both swallowed.
    typed(&mut mux, &[ESCAPE, ESCAPE, b'a', ESCAPE, b'x', b'b']);
    assert_eq!(drain(&mut mux, 0), [ESCAPE, b'a', b'b']);
    // Direct focus by number: an attached port only.
    typed(&mut mux, &[ESCAPE, b'2', b'z', ESCAPE, b'7', b'y']);
    assert_eq!(mux.focus(), 2);
    assert_eq!(drain(&mut mux, 2), b"zy");
    assert!(screen(&mux).ends_with("console: input to [vm2]\n"));
    typed(&mut mux, &[ESCAPE, b'h']);
    assert!(screen(&mux).contains("C-a c  next VM"), "help: {}", screen(&mux));
}

#[test]
fn detached_ports_are_skipped_and_input_with_nowhere_to_go_is_counted() {
    let mut mux = Mux::new(Terminal::default());
    mux.push_input(1, b'q');
    mux.write_bytes(1, b"bye");
    mux.detach(1);
    assert!(screen(&mux).starts_with("[vm1] bye"), "its partial line is flushed: {}", screen(&mux));
    assert!(!mux.has_input(1), "its pending input is dropped");
    typed(&mut mux, &[ESCAPE, b'c']);
    assert_eq!(mux.focus(), 2, "port 1 is skipped");
    assert!(!mux.set_focus(1));
    mux.detach(2);
    assert_eq!(mux.focus(), 0, "the focus leaves a detached port");
    assert!(mux.set_focus(0));
    assert!(!screen(&mux).contains("input to [vm0]"), "the host's focus changes are silent: {}", screen(&mux));
    mux.detach(0);
    typed(&mut mux, b"lost");
    assert_eq!(mux.unrouted_input(), 4);
    assert!(!mux.has_input(0));
    mux.attach(1);
    typed(&mut mux, &[ESCAPE, b'c', b'k']);
    assert_eq!((mux.focus(), drain(&mut mux, 1)), (1, b"k".to_vec()));
}

#[test]
fn input_buffers_are_bounded_drop_and_count_and_a_poll_takes_a_bounded_number_of_bytes() {
    let mut mux = Mux::new(Terminal::default());
    typed(&mut mux, b"abcdefg");
    assert_eq!(mux.dropped_input(0), 3, "four fit");
    assert_eq!(drain(&mut mux, 0), b"abcd");
    assert!(mux.push_input(2, b'1'));
    for _ in 0..5 {
        mux.push_input(2, b'x');
    }
    assert_eq!(mux.dropped_input(2), 2);
    assert!(!mux.push_input(9, b'x'), "no such port");
    assert_eq!(mux.read(9), None);
    mux.write(9, b'x');
    mux.flush(9);
    mux.detach(9);
    assert_eq!(mux.dropped_input(9), 0);

    // A terminal that never runs dry: one poll reads POLL_MAX bytes and returns.
    mux.console_mut().typed.extend(core::iter::repeat_n(b'z', 10 * POLL_MAX));
    mux.poll_input();
    assert_eq!(mux.console().typed.len(), 9 * POLL_MAX);
}

#[test]
fn ports_through_a_refcell_are_the_vms_serial_backends_and_never_panic_on_reentry() {
    let mux = RefCell::new(Mux::new(Terminal::default()));
    let mut first = Mux::port(&mux, 0);
    let mut second = MuxPort::new(&mux, 1);
    assert_eq!((first.index(), second.index()), (0, 1));
    assert_eq!(second.write_bytes(b"two\n"), 4);
    first.write_byte(b'1');
    first.write_byte(b'\n');
    mux.borrow_mut().console_mut().typed.extend(b"in");
    assert_eq!(second.read_byte(), None, "not focused");
    assert_eq!(first.read_byte(), Some(b'i'));
    {
        let _held = first.mux().borrow_mut();
        first.write_byte(b'x');
        assert_eq!(first.read_byte(), None);
        assert_eq!(second.write_bytes(b"lost"), 0);
    }
    assert_eq!(first.read_byte(), Some(b'n'));
    assert_eq!(screen(&mux.borrow()), "[vm1] two\n[vm0] 1\n");
}

#[test]
fn default_tags_count_in_decimal() {
    let mut mux = ConsoleMux::<Terminal, 12, 4, 8>::new(Terminal::default());
    mux.write_bytes(10, b"ten\n");
    mux.write_bytes(11, b"eleven\n");
    assert_eq!(core::str::from_utf8(&mux.console().out), Ok("[vm10] ten\n[vm11] eleven\n"));
    let mut empty = ConsoleMux::<Terminal, 0>::new(Terminal::default());
    empty.console_mut().typed.extend([ESCAPE, b'c', b'a']);
    empty.poll_input();
    assert_eq!(empty.unrouted_input(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize, std::vec::Vec<u8>),
    Type(std::vec::Vec<u8>),
    Read(usize),
    Push(usize, u8),
    Flush(usize),
    Detach(usize),
    Attach(usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let port = 0usize..4; // one past the last port too
    let text = prop::collection::vec(prop::sample::select(b"ab\n".to_vec()), 0..24);
    let keys =
        prop::collection::vec(prop::sample::select(vec![ESCAPE, b'c', b'k', b'0', b'2', b'3', b'h', b'\n']), 0..8);
    prop_oneof![
        4 => (port.clone(), text).prop_map(|(port, text)| Op::Write(port, text)),
        4 => keys.prop_map(Op::Type),
        3 => port.clone().prop_map(Op::Read),
        1 => (port.clone(), any::<u8>()).prop_map(|(port, byte)| Op::Push(port, byte)),
        1 => port.clone().prop_map(Op::Flush),
        1 => port.clone().prop_map(Op::Detach),
        1 => port.prop_map(Op::Attach),
    ]
}

/// The reference: focus, attached ports, escape state and bounded queues, kept in the plainest way.
struct Model {
    focus: usize,
    attached: [bool; 3],
    escape: bool,
    queues: [VecDeque<u8>; 3],
    dropped: [u64; 3],
    written: [std::vec::Vec<u8>; 3],
}

impl Model {
    fn push(&mut self, port: usize, byte: u8) {
        if port >= 3 {
            return;
        }
        if self.queues[port].len() < 4 {
            self.queues[port].push_back(byte);
        } else {
            self.dropped[port] += 1;
        }
    }

    fn next_attached(&self) -> Option<usize> {
        (1..=3).map(|step| (self.focus + step) % 3).find(|&port| self.attached[port])
    }

    fn key(&mut self, byte: u8) {
        if self.escape {
            self.escape = false;
            match byte {
                ESCAPE => self.deliver(ESCAPE),
                b'c' => self.focus = self.next_attached().unwrap_or(self.focus),
                b'0'..=b'2' if self.attached[usize::from(byte - b'0')] => self.focus = usize::from(byte - b'0'),
                _ => {}
            }
        } else if byte == ESCAPE {
            self.escape = true;
        } else {
            self.deliver(byte);
        }
    }

    fn deliver(&mut self, byte: u8) {
        if self.attached[self.focus] {
            self.push(self.focus, byte);
        }
    }
}

proptest! {
    /// Random output, typing, reads, flushes and (de)attachments on three ports with 4-byte input and 16-byte
    /// line buffers: every input byte reaches exactly the port the model routes it to (or is counted as
    /// dropped); after a final flush each port's text is on the screen, in order, on lines carrying its tag
    /// (split only where the line buffer filled, a flush went out or another port interrupted); every screen line
    /// starts with a port's tag or is the multiplexer's own `console:` line.
    #[test]
    fn routing_and_tagging_match_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut mux = Mux::new(Terminal::default());
        let mut model = Model {
            focus: 0,
            attached: [true; 3],
            escape: false,
            queues: Default::default(),
            dropped: [0; 3],
            written: Default::default(),
        };
        for op in ops {
            match op {
                Op::Write(port, text) => {
                    mux.write_bytes(port, &text);
                    if port < 3 {
                        model.written[port].extend_from_slice(&text);
                    }
                }
                Op::Type(keys) => {
                    typed(&mut mux, &keys);
                    keys.iter().for_each(|&key| model.key(key));
                }
                Op::Read(port) => {
                    let expected = model.queues.get_mut(port).and_then(|queue| queue.pop_front());
                    prop_assert_eq!(mux.read(port), expected);
                }
                Op::Push(port, byte) => {
                    prop_assert_eq!(mux.push_input(port, byte), port < 3 && model.queues[port].len() < 4);
                    model.push(port, byte);
                }
                Op::Flush(port) => mux.flush(port),
                Op::Detach(port) => {
                    mux.detach(port);
                    if port < 3 {
                        model.attached[port] = false;
                        model.queues[port].clear();
                        if model.focus == port {
                            model.focus = model.next_attached().unwrap_or(model.focus);
                        }
                    }
                }
                Op::Attach(port) => {
                    mux.attach(port);
                    if port < 3 {
                        model.attached[port] = true;
                    }
                }
            }
            prop_assert_eq!(mux.focus(), model.focus);
            for port in 0..3 {
                prop_assert_eq!(mux.dropped_input(port), model.dropped[port]);
                prop_assert_eq!(mux.has_input(port), !model.queues[port].is_empty());
            }
        }
        mux.flush_all();
        let screen = screen(&mux).to_owned();
        let mut shown: [std::vec::Vec<u8>; 3] = Default::default();
        for line in screen.split_inclusive('\n') {
            let port = (0..3).find(|port| line.starts_with(&format!("[vm{port}] ")));
            match port {
                Some(port) => shown[port].extend_from_slice(&line.as_bytes()[6..]),
                None => prop_assert!(line.starts_with("console: "), "untagged line {:?} in {:?}", line, screen),
            }
        }
        // Breaks the multiplexer inserted are the only difference.
        let strip = |bytes: &[u8]| bytes.iter().copied().filter(|&b| b != b'\n').collect::<std::vec::Vec<_>>();
        for (port, (shown, written)) in shown.iter().zip(&model.written).enumerate() {
            prop_assert_eq!(strip(shown), strip(written), "port {} in {:?}", port, screen);
        }
    }
}

proptest! {
    /// Whole lines that fit the line buffer, from random ports in a random order, with typing in between (focus
    /// notices): each port's lines appear on the screen exactly, each on one screen line with its tag, in order.
    #[test]
    fn whole_lines_are_never_split(writes in prop::collection::vec((0usize..3, 0usize..15, any::<bool>()), 1..40)) {
        let mut mux = Mux::new(Terminal::default());
        let mut written: [std::vec::Vec<u8>; 3] = Default::default();
        for (port, len, switch) in writes {
            let line: std::vec::Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).chain([b'\n']).collect();
            mux.write_bytes(port, &line);
            written[port].extend_from_slice(&line);
            if switch {
                typed(&mut mux, &[ESCAPE, b'c']);
            }
        }
        let mut shown: [std::vec::Vec<u8>; 3] = Default::default();
        for line in screen(&mux).split_inclusive('\n') {
            match (0..3).find(|port| line.starts_with(&format!("[vm{port}] "))) {
                Some(port) => shown[port].extend_from_slice(&line.as_bytes()[6..]),
                None => prop_assert!(line.starts_with("console: input to [vm")),
            }
        }
        prop_assert_eq!(shown, written);
    }
}

/// A block pasted at once (a command line of a few hundred bytes) reaches the focused port whole with the
/// default buffer, even when the guest has read nothing yet.
#[test]
fn a_pasted_block_arrives_whole_with_the_default_buffer() {
    let mut mux: ConsoleMux<Terminal, 2> = ConsoleMux::new(Terminal::default());
    let pasted: std::vec::Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    mux.console_mut().typed.extend(pasted.iter().copied());
    while !mux.console().typed.is_empty() {
        mux.poll_input();
    }
    assert_eq!(core::iter::from_fn(|| mux.read(0)).collect::<std::vec::Vec<u8>>(), pasted);
    assert_eq!(mux.dropped_input(0), 0);
}
