//! QEMU's `virt` boot protocol: where firmware, kernel, initrd, devicetree and OpenSBI's `fw_dynamic` info go
//! in guest RAM, and what each hart finds in its registers (`a0` hart id, `a1` devicetree, `a2` `fw_dynamic`
//! info), so that instructions written for QEMU carry over unchanged.

use crate::mem::{Ram, RAM_BASE};

use super::fdt::{write_dtb, FdtError, MachineDescription};
use super::loader::{load_elf, load_raw, LoadError};

/// `fw_jump`'s and QEMU's load address for the kernel after the firmware: RAM base + 2 MiB on RV64.
pub const KERNEL_OFFSET: u64 = 0x20_0000;
/// The devicetree goes at the end of RAM, aligned down to this.
const FDT_ALIGN: u64 = 0x20_0000;
/// OpenSBI's `FW_DYNAMIC_INFO_MAGIC_VALUE` ("OSBI").
pub const FW_DYNAMIC_MAGIC: u64 = 0x4942_534f;
/// `fw_dynamic` info version written (version 2 adds `boot_hart`).
pub const FW_DYNAMIC_VERSION: u64 = 2;
/// `next_mode` for S-mode.
pub const FW_DYNAMIC_NEXT_MODE_S: u64 = 1;
/// Size of the `fw_dynamic` info block (six XLEN words).
pub const FW_DYNAMIC_SIZE: u64 = 48;

/// Why a boot image set does not fit guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The devicetree (of this many bytes) does not fit at the end of RAM above everything loaded.
    DevicetreeDoesNotFit { size: u64 },
    /// The initrd (of this many bytes) does not fit in RAM at the address QEMU would choose.
    InitrdDoesNotFit { size: u64 },
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::DevicetreeDoesNotFit { size } => {
                write!(f, "the devicetree ({size} bytes) does not fit in guest RAM: give the machine more memory")
            }
            BootError::InitrdDoesNotFit { size } => {
                write!(f, "the initrd ({size} bytes) does not fit in guest RAM: give the machine more memory")
            }
        }
    }
}

/// Where QEMU puts the initrd: far enough above the kernel that the kernel can unpack itself below it
/// (half of RAM, at most 128 MiB, above the kernel's entry).
pub fn initrd_address(ram: &Ram, kernel_entry: u64, size: u64) -> Result<u64, BootError> {
    let start = kernel_entry.saturating_add((ram.size() / 2).min(128 << 20));
    let fits = ram.offset_of(start, size).is_some();
    if fits {
        Ok(start)
    } else {
        Err(BootError::InitrdDoesNotFit { size })
    }
}

/// Copies the devicetree blob to the end of RAM (2 MiB-aligned, as QEMU does), with the `fw_dynamic` info
/// block just below it when `next_addr` names the stage after the firmware. Returns the devicetree's address
/// and the info block's (or 0). `lowest` is the first byte the blob must stay above (the end of the images).
pub fn place_devicetree(
    ram: &mut Ram,
    blob: &[u8],
    next_addr: Option<u64>,
    lowest: u64,
) -> Result<(u64, u64), BootError> {
    let size = blob.len() as u64;
    let too_big = BootError::DevicetreeDoesNotFit { size };
    let end = ram.base() + ram.size();
    let below_end = end.checked_sub(size).ok_or(too_big)?;
    // QEMU's 2 MiB alignment when RAM allows it, else just below the end (a small machine).
    let (fdt, info) = [FDT_ALIGN, 8]
        .into_iter()
        .map(|align| below_end & !(align - 1))
        .filter_map(|fdt| Some((fdt, fdt.checked_sub(FW_DYNAMIC_SIZE)?)))
        .find(|&(fdt, info)| fdt >= ram.base() && info >= lowest)
        .ok_or(too_big)?;
    ram.write_bytes(fdt, blob).ok_or(too_big)?;
    let Some(next_addr) = next_addr else { return Ok((fdt, 0)) };
    let words = [FW_DYNAMIC_MAGIC, FW_DYNAMIC_VERSION, next_addr, FW_DYNAMIC_NEXT_MODE_S, 0, 0];
    for (index, word) in words.iter().enumerate() {
        ram.store(info + 8 * index as u64, 8, *word).ok_or(too_big)?;
    }
    Ok((fdt, info))
}

/// What a VM boots when it has no firmware of its own besides, maybe, the VMM's, placed in its RAM as QEMU `virt`
/// and `trapeze run` place it by [`place_images`].
#[derive(Debug, Clone, Copy)]
pub enum Images<'i> {
    /// A program started in M-mode (QEMU's `-bios none -kernel IMAGE`): an ELF at its segments' addresses,
    /// started at its entry point.
    Elf(&'i [u8]),
    /// A raw program at the start of RAM, started there in M-mode.
    Raw(&'i [u8]),
    /// A kernel (or U-Boot) at `RAM_BASE +` [`KERNEL_OFFSET`], started in S-mode on the VMM's own SBI
    /// (`--bios builtin --kernel`), with an initramfs where QEMU puts one ([`initrd_address`], named in the
    /// devicetree's `/chosen`).
    BuiltinSbi { kernel: &'i [u8], initrd: Option<&'i [u8]> },
}

/// Where a VM whose images [`place_images`] placed starts: what [`super::VmBuilder::boot`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// Where hart 0 starts.
    pub entry: u64,
    /// The devicetree's guest address (`a1`).
    pub devicetree: u64,
    /// Whether the VMM is the firmware: hart 0 enters S-mode at `entry`.
    pub builtin_sbi: bool,
}

/// Why images could not be placed.
#[derive(Debug)]
pub enum ImageError {
    /// An image could not be loaded.
    Load(LoadError),
    /// The devicetree could not be written (a description it cannot express, or `scratch` too small).
    Devicetree(FdtError),
    /// The devicetree or the initrd does not fit.
    Boot(BootError),
}

/// Loads `images` into `ram` and the devicetree of `description` (completed with the initrd's place) at the end
/// of RAM above them, writing the blob in `scratch` first. Answers where the VM starts.
pub fn place_images(
    ram: &mut Ram,
    images: Images<'_>,
    description: &mut MachineDescription<'_>,
    scratch: &mut [u8],
) -> Result<Boot, ImageError> {
    let (entry, end, builtin_sbi) = match images {
        Images::Elf(elf) => {
            let loaded = load_elf(elf, ram).map_err(ImageError::Load)?;
            (loaded.entry, loaded.end, false)
        }
        Images::Raw(raw) => {
            load_raw(raw, RAM_BASE, ram).map_err(ImageError::Load)?;
            (RAM_BASE, RAM_BASE + raw.len() as u64, false)
        }
        Images::BuiltinSbi { kernel, initrd } => {
            let entry = RAM_BASE + KERNEL_OFFSET;
            load_raw(kernel, entry, ram).map_err(ImageError::Load)?;
            let mut end = entry + kernel.len() as u64;
            if let Some(initrd) = initrd {
                let size = initrd.len() as u64;
                let at = initrd_address(ram, entry, size).map_err(ImageError::Boot)?;
                load_raw(initrd, at, ram).map_err(ImageError::Load)?;
                description.initrd = Some((at, at + size));
                end = end.max(at + size);
            }
            (entry, end, true)
        }
    };
    let length = write_dtb(description, scratch).map_err(ImageError::Devicetree)?;
    let (devicetree, _) = place_devicetree(ram, &scratch[..length], None, end).map_err(ImageError::Boot)?;
    Ok(Boot { entry, devicetree, builtin_sbi })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RAM_BASE;

    #[test]
    fn devicetree_lands_at_the_aligned_end_of_ram_with_the_info_block_below() {
        let mut backing = vec![0u8; 8 << 20];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let blob = [0xd0, 0x0d, 0xfe, 0xed, 1, 2, 3];
        let (fdt, info) = place_devicetree(&mut ram, &blob, Some(RAM_BASE + KERNEL_OFFSET), RAM_BASE).unwrap();
        assert_eq!(fdt, RAM_BASE + (6 << 20));
        assert_eq!(ram.slice(fdt, 7).unwrap(), &blob);
        assert_eq!(info, fdt - FW_DYNAMIC_SIZE);
        assert_eq!(ram.load(info, 8), Some(FW_DYNAMIC_MAGIC));
        assert_eq!(ram.load(info + 16, 8), Some(RAM_BASE + KERNEL_OFFSET));
        assert_eq!(ram.load(info + 24, 8), Some(FW_DYNAMIC_NEXT_MODE_S));
    }

    #[test]
    fn images_too_big_for_ram_are_refused() {
        let mut backing = vec![0u8; 1 << 20];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let blob = vec![0u8; 2 << 20];
        assert_eq!(
            place_devicetree(&mut ram, &blob, None, RAM_BASE),
            Err(BootError::DevicetreeDoesNotFit { size: 2 << 20 })
        );
        assert!(place_devicetree(&mut ram, &[0; 16], None, RAM_BASE + (1 << 20)).is_err(), "would overlap images");
        let (fdt, _) = place_devicetree(&mut ram, &[0; 16], None, RAM_BASE + 4096).unwrap();
        assert_eq!(fdt, RAM_BASE + (1 << 20) - 16, "a small machine gets its devicetree at the very end");
        assert_eq!(initrd_address(&ram, RAM_BASE, 1 << 20), Err(BootError::InitrdDoesNotFit { size: 1 << 20 }));
        let mut backing = vec![0u8; 64 << 20];
        let ram = Ram::new(RAM_BASE, &mut backing);
        assert_eq!(initrd_address(&ram, RAM_BASE + KERNEL_OFFSET, 4096), Ok(RAM_BASE + KERNEL_OFFSET + (32 << 20)));
    }

    #[test]
    fn images_are_placed_as_qemu_places_them_with_their_devicetree() {
        let mut backing = vec![0u8; 8 << 20];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let mut description = MachineDescription::qemu_virt(1, 8 << 20);
        let mut scratch = vec![0u8; 16 << 10];
        let boot = place_images(&mut ram, Images::Raw(&[1, 2, 3, 4]), &mut description, &mut scratch).unwrap();
        assert_eq!(boot, Boot { entry: RAM_BASE, devicetree: RAM_BASE + (6 << 20), builtin_sbi: false });
        assert_eq!(ram.slice(RAM_BASE, 4).unwrap(), &[1, 2, 3, 4]);
        assert_eq!(ram.slice(boot.devicetree, 4).unwrap(), &[0xd0, 0x0d, 0xfe, 0xed], "the blob's magic");
        assert!(matches!(
            place_images(&mut ram, Images::Raw(&[0; 4]), &mut description, &mut [0u8; 8]),
            Err(ImageError::Devicetree(FdtError::BufferTooSmall))
        ));
        let too_big = vec![0u8; 9 << 20];
        assert!(matches!(
            place_images(&mut ram, Images::Raw(&too_big), &mut description, &mut scratch),
            Err(ImageError::Load(_))
        ));

        let mut backing = vec![0u8; 64 << 20];
        let mut ram = Ram::new(RAM_BASE, &mut backing);
        let mut description = MachineDescription::qemu_virt(1, 64 << 20);
        let images = Images::BuiltinSbi { kernel: &[5; 16], initrd: Some(&[6; 32]) };
        let boot = place_images(&mut ram, images, &mut description, &mut scratch).unwrap();
        let kernel = RAM_BASE + KERNEL_OFFSET;
        assert_eq!((boot.entry, boot.builtin_sbi), (kernel, true));
        let initrd = kernel + (32 << 20);
        assert_eq!(description.initrd, Some((initrd, initrd + 32)), "named in /chosen");
        assert_eq!(ram.slice(kernel, 16).unwrap(), &[5; 16]);
        assert_eq!(ram.slice(initrd, 32).unwrap(), &[6; 32]);
        assert!(boot.devicetree > initrd + 32);
    }
}
