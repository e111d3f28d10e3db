//! virtio-net behind the MMIO transport, driven by a hostile driver on both queues while the backend offers
//! frames of random sizes. Checks: nothing outside guest RAM changes, every frame handed to the backend is a
//! legal Ethernet frame size, the used rings stay bounded, and the device's counters add up with what the
//! backend saw.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use trapeze::dev::virtio::net::{NetStats, FRAME_MAX, FRAME_MIN, F_MAC, F_MRG_RXBUF, F_STATUS};
use trapeze::dev::virtio::{NetBackend, VirtioMmio, VirtioNet};
use trapeze_fuzz::virtio::{Driver, Memory};
use trapeze_fuzz::Input;

#[derive(Default)]
struct Wire {
    sent: u64,
    incoming: VecDeque<usize>,
    received: u64,
    link_down: bool,
}

impl NetBackend for Wire {
    fn send(&mut self, frame: &[u8]) {
        assert!((FRAME_MIN..=FRAME_MAX).contains(&frame.len()), "a {}-byte frame reached the wire", frame.len());
        self.sent += 1;
    }
    fn receive(&mut self, buf: &mut [u8; FRAME_MAX]) -> Option<usize> {
        let len = self.incoming.pop_front()?;
        buf[..len].fill(0xab);
        self.received += 1;
        Some(len)
    }
    fn link_up(&self) -> bool {
        !self.link_down
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let features = match input.u8() % 4 {
        0 => input.u64(),
        _ => F_MAC | F_STATUS | if input.bool() { F_MRG_RXBUF } else { 0 },
    };
    let wire = Wire { link_down: input.one_in(8), ..Wire::default() };
    let mut dev = VirtioMmio::new(VirtioNet::new(wire, [2, 0, 0, 0, 0, 1]));
    let mut memory = Memory::default();
    let mut ram = memory.ram();
    let mut driver = Driver::init(&mut dev, &mut ram, 2, features);
    let mut steps = 0;
    loop {
        if input.one_in(4) {
            let len = FRAME_MIN + input.below((FRAME_MAX - FRAME_MIN + 1) as u64) as usize;
            if dev.device().backend().incoming.len() < 8 {
                dev.device_mut().backend_mut().incoming.push_back(len);
            }
            dev.poll_outside(&mut ram);
        }
        if steps >= 200 || !driver.step(&mut dev, &mut ram, &mut input) {
            break;
        }
        steps += 1;
        driver.check(&dev, &ram);
        let NetStats { tx_frames, rx_frames, rx_dropped, .. } = dev.device().stats();
        let wire = dev.device().backend();
        assert_eq!(tx_frames, wire.sent, "frames sent");
        // A frame taken from the wire is delivered, dropped, or still waiting in the device (at most one).
        let waiting = u64::from(dev.device().rx_waiting());
        assert_eq!(rx_frames + rx_dropped + waiting, wire.received, "frames received: {:?}", dev.device().stats());
    }
    memory.assert_guards_intact();
});
