//! The VMM's SBI, called by hostile S-mode harts: any extension and function IDs (mostly real ones), any
//! arguments (buffer addresses near and far from RAM, hart masks, suspend types), any caller, with timers
//! updated and harts woken between calls. Checks: guest memory is only touched inside RAM (the environment
//! asserts it), a call that returns advances the caller past its `ecall` with a defined error code in `a0`,
//! only a running hart's call is served, no hart is ever seen in a `*_PENDING` state, and the console
//! traffic of one call is bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::hart::{Exception, Hart, HartConfig, Privilege};
use trapeze::mem::sv39::Fault;
use trapeze::mem::RAM_BASE;
use trapeze::trap::{FlushScope, Resume};
use trapeze::vm::sbi::{eid, HartState, Sbi, SbiEnvironment, EXTENSIONS};
use trapeze_fuzz::Input;

const RAM_SIZE: u64 = 0x2000;
const HARTS: usize = 3;

struct Env {
    ram: Vec<u8>,
    now: u64,
    console_out: u64,
    console_in: u8,
    virtual_loads: Vec<Option<u64>>,
    calls: u64,
    faulted: bool,
}

impl Env {
    fn range(&self, addr: u64, len: u64) -> Option<std::ops::Range<usize>> {
        let start = addr.checked_sub(RAM_BASE)?;
        let end = start.checked_add(len)?;
        (end <= RAM_SIZE).then_some(start as usize..end as usize)
    }
}

impl SbiEnvironment for Env {
    fn time(&mut self) -> u64 {
        self.now
    }
    fn console_write(&mut self, bytes: &[u8]) -> usize {
        self.calls += 1;
        self.console_out += bytes.len() as u64;
        bytes.len().min(97)
    }
    fn console_read(&mut self) -> Option<u8> {
        self.calls += 1;
        self.console_in = self.console_in.wrapping_add(1);
        (!self.console_in.is_multiple_of(3)).then_some(self.console_in)
    }
    fn read_physical(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        self.calls += 1;
        match self.range(addr, buf.len() as u64) {
            Some(range) => {
                buf.copy_from_slice(&self.ram[range]);
                true
            }
            None => false,
        }
    }
    fn write_physical(&mut self, addr: u64, bytes: &[u8]) -> bool {
        self.calls += 1;
        match self.range(addr, bytes.len() as u64) {
            Some(range) => {
                self.ram[range].copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
    fn physical_accessible(&self, addr: u64, len: u64) -> bool {
        self.range(addr, len).is_some()
    }
    fn executable(&self, addr: u64) -> bool {
        self.range(addr, 4).is_some()
    }
    fn load_virtual(&mut self, _index: usize, _hart: &Hart, va: u64) -> Result<u64, Fault> {
        self.calls += 1;
        match self.virtual_loads.pop().flatten() {
            Some(value) => Ok(value),
            None => {
                self.faulted = true;
                Err(Fault { exception: Exception::LoadPageFault, tval: va })
            }
        }
    }
    fn flush_translations(&mut self, index: usize, _scope: FlushScope) {
        self.calls += 1;
        assert!(index < HARTS, "flush of hart {index}");
    }
    fn fence_i(&mut self, index: usize) {
        self.calls += 1;
        assert!(index < HARTS, "fence.i of hart {index}");
    }
}

/// An extension the SBI does not implement (the vendor range), beside the ones it does.
const UNKNOWN_EID: u64 = 0x0A00_0000;

fn argument(input: &mut Input) -> u64 {
    match input.u8() % 8 {
        0 => input.below(8),
        1 => RAM_BASE + input.below(RAM_SIZE + 16),
        2 => RAM_BASE + RAM_SIZE - input.below(64),
        3 => input.below(5000),
        4 => u64::MAX - input.below(8),
        5 => (-1i64) as u64,
        _ => input.u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let boot = input.below(HARTS as u64) as usize;
    let mut sbi = Sbi::new(HARTS, boot);
    let mut harts: Vec<Hart> = (0..HARTS as u64).map(|id| Hart::new(HartConfig::rv64gc(id))).collect();
    for hart in &mut harts {
        hart.privilege = Privilege::Supervisor;
        hart.pc = RAM_BASE + 0x100;
    }
    let mut env = Env {
        ram: vec![0x41; RAM_SIZE as usize],
        now: 0,
        console_out: 0,
        console_in: 0,
        virtual_loads: Vec::new(),
        calls: 0,
        faulted: false,
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 100 {
        steps += 1;
        match input.u8() % 8 {
            0 => {
                env.now = env.now.saturating_add(input.below(1 << 20));
                sbi.update_timers(env.now, &mut harts);
                let _ = sbi.ticks_until_deadline(env.now);
            }
            1 => {
                let index = input.below(HARTS as u64 + 1) as usize;
                if let Some(hart) = harts.get_mut(index) {
                    let _ = sbi.wake(index, hart);
                }
            }
            _ => {
                let caller = input.below(HARTS as u64 + 1) as usize;
                let eid = if input.one_in(8) {
                    input.u64()
                } else {
                    EXTENSIONS.get(input.below(EXTENSIONS.len() as u64 + 1) as usize).copied().unwrap_or(UNKNOWN_EID)
                };
                let fid = if input.one_in(8) { input.u64() } else { input.below(8) };
                env.virtual_loads = (0..input.below(3)).map(|_| input.bool().then(|| input.u64())).collect();
                let Some(hart) = harts.get_mut(caller) else {
                    assert_eq!(sbi.call(caller, &mut harts, &mut env), Resume::Continue);
                    continue;
                };
                hart.set_x(17, eid);
                hart.set_x(16, fid);
                for reg in 10..16 {
                    let value = argument(&mut input);
                    hart.set_x(reg, value);
                }
                let pc = hart.pc;
                let running = sbi.state(caller) == Some(HartState::Started);
                let (out, calls) = (env.console_out, env.calls);
                env.faulted = false;
                let resume = sbi.call(caller, &mut harts, &mut env);
                assert!(env.console_out - out <= 4096 + 1, "one call wrote {} console bytes", env.console_out - out);
                assert!(env.calls - calls <= 4096 + 64, "one call made {} environment calls", env.calls - calls);
                let hart = &harts[caller];
                if resume == Resume::Continue && running && hart.pc == pc + 4 && eid >= eid::BASE {
                    let a0 = hart.x(10) as i64;
                    assert!((-8..=0).contains(&a0), "eid {eid:#x} fid {fid}: error code {a0}");
                }
                if resume == Resume::Continue && running {
                    // Served: past the ecall, or (a legacy hart-mask pointer that faulted) in the trap handler.
                    assert!(hart.pc == pc + 4 || env.faulted, "eid {eid:#x} fid {fid}: pc {:#x}", hart.pc);
                }
            }
        }
        for index in 0..HARTS {
            let state = sbi.state(index).expect("a slot per hart");
            assert!(
                matches!(state, HartState::Started | HartState::Stopped | HartState::Suspended),
                "hart {index} in {state:?}"
            );
            assert_eq!(sbi.may_run(index), state != HartState::Stopped);
        }
        assert_eq!(sbi.state(HARTS), None);
    }
});
