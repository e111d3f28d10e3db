//! The devicetree a VM's guest gets, built with a command line (`bootargs`) and stdout path the VM's owner
//! supplies, any hart count, RAM size, initrd range and virtio slots, into a buffer of any size. It must be
//! written without panicking or refused with an error; when written it must parse back with the independent
//! `fdt` crate and say what was asked: the same command line, memory, harts and initrd.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trapeze::vm::fdt::{write_dtb, IrqDevice, MachineDescription, Region};
use trapeze_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let harts = match input.u8() % 4 {
        0 => input.u32() % 5000,
        _ => 1 + input.below(8) as u32,
    };
    let ram_size = if input.bool() { input.u64() } else { (1 + input.below(64)) << 20 };
    let mut desc = MachineDescription::qemu_virt(harts, ram_size);
    desc.boot_hart = if input.one_in(8) { input.u32() } else { input.below(u64::from(harts.max(1))) as u32 };
    let virtio: Vec<IrqDevice> = (0..input.below(9))
        .map(|i| IrqDevice { base: 0x1000_1000 + 0x1000 * i, size: 0x1000, irq: 1 + i as u32 })
        .collect();
    desc.virtio_mmio = &virtio;
    if input.bool() {
        let start = input.u64();
        desc.initrd = Some((start, if input.bool() { start.wrapping_add(input.below(1 << 20)) } else { input.u64() }));
    }
    let reserved: Vec<Region> = (0..input.below(3)).map(|_| Region { base: input.u64(), size: input.u64() }).collect();
    desc.reserved = &reserved;
    let stdout = String::from_utf8_lossy(input.bytes(40)).into_owned();
    if input.one_in(4) {
        desc.stdout_path = Some(&stdout);
    }
    let size = if input.one_in(4) { input.below(4096) as usize } else { 16384 };
    let bootargs = String::from_utf8_lossy(input.rest()).into_owned();
    desc.bootargs = Some(&bootargs);

    let mut out = vec![0u8; size];
    let Ok(len) = write_dtb(&desc, &mut out) else { return };
    assert!(len <= size);
    let tree = fdt::Fdt::new(&out[..len]).expect("the fdt crate parses what write_dtb wrote");
    assert_eq!(tree.total_size(), len, "the header's size is the blob's");
    // A command line with a NUL cannot be a devicetree string: it must have been refused above.
    assert_eq!(tree.chosen().bootargs(), Some(bootargs.as_str()), "bootargs round-trip");
    assert_eq!(tree.cpus().count(), harts as usize, "one cpu node per hart");
    let memory: Vec<_> = tree.memory().regions().map(|r| (r.starting_address as u64, r.size)).collect();
    assert_eq!(memory, vec![(0x8000_0000, Some(ram_size as usize))]);
    if let Some((start, end)) = desc.initrd {
        let chosen = tree.find_node("/chosen").expect("/chosen");
        let read = |name| chosen.property(name).and_then(|p| p.as_usize()).map(|v| v as u64);
        assert_eq!((read("linux,initrd-start"), read("linux,initrd-end")), (Some(start), Some(end)));
    }
    let kept: Vec<_> = reserved.iter().filter(|r| r.size != 0).map(|r| (r.base, r.size)).collect();
    let parsed: Vec<_> = tree.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
    assert_eq!(parsed, kept, "every non-empty reservation, in order");
});
