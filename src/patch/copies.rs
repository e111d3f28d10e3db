//! Patched copies of guest code pages: where the native engine keeps the patches, so that guest RAM is never
//! changed by them.
//!
//! The scanner patches through [`CodeMemory`]. Given guest RAM itself ([`CodeMemory`] for [`Ram`]) the patches
//! land in place, and everything that reads or writes guest RAM other than the guest's own native fetches (an
//! emulated load, an engine running the guest's code from its code cache, a device's DMA, the SBI, a debugger)
//! would have to unpatch or drop patches first. Given a [`CopyView`] instead, the first patch written to a page
//! copies the page into a frame of [`CodeCopies`] and every patch lands in the copy: guest RAM keeps the
//! original bytes, so all of those readers see exactly what the guest wrote, with nothing to do.
//!
//! The native engine then maps a page that holds sites **execute-only onto its copy** (a shadow leaf with X
//! pointing at the frame, see [`crate::mem::shadow::LeafGrant`]): the guest's instruction fetches run the
//! patched bytes, its loads fault and are emulated on RAM, its stores fault and drop the page (its patches, its
//! scan and its copy) before they land. A page scanned without sites needs no copy and runs from RAM.
//!
//! A copy is only as good as its agreement with RAM outside the sites: whoever writes a page with a copy other
//! than through a faulting native store (the VMM on the guest's behalf, an engine emulating the guest) must drop
//! the page before its code runs natively again. The native engine learns of such writes through the RAM's
//! code watch ([`Ram::watch_code_page`]).
//!
//! What this module must never do: let a frame hold the bytes of two pages, keep a frame whose page the patch
//! table no longer records, or write a byte outside a frame. Nothing allocates: `FRAMES` frames of 4 KiB are
//! part of the value (a board keeps it in a `static`, inside the memory its guest may execute).

use super::table::{CodeMemory, PatchTable, PAGE_SIZE};
use crate::mem::Ram;

const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// One page-aligned 4 KiB frame (a shadow leaf can point at it).
#[repr(C, align(4096))]
pub struct CodeFrame(pub [u8; PAGE_SIZE as usize]);

/// `FRAMES` frames for patched copies of guest pages, each owned by at most one guest page.
pub struct CodeCopies<const FRAMES: usize> {
    frames: [CodeFrame; FRAMES],
    /// The guest-physical page each frame copies (`None`: free).
    owners: [Option<u64>; FRAMES],
}

impl<const FRAMES: usize> Default for CodeCopies<FRAMES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const FRAMES: usize> CodeCopies<FRAMES> {
    /// No copies (`const`, so a board can keep the frames in a `static`).
    pub const fn new() -> Self {
        Self { frames: [const { CodeFrame([0; PAGE_SIZE as usize]) }; FRAMES], owners: [None; FRAMES] }
    }

    /// The host address range of the frames, `[start, end)`: the memory a guest must be allowed to fetch from
    /// (and nothing else) for its copies to run.
    pub fn host_range(&self) -> (u64, u64) {
        let start = self.frames.as_ptr() as u64;
        (start, start + FRAMES as u64 * PAGE_SIZE)
    }

    fn index_of(&self, pa: u64) -> Option<usize> {
        let page = pa & !PAGE_MASK;
        self.owners.iter().position(|owner| *owner == Some(page))
    }

    /// The host address of the copy of the page holding guest-physical `pa`, if it has one.
    pub fn host_page(&self, pa: u64) -> Option<u64> {
        let index = self.index_of(pa)?;
        self.frames.get(index).map(|frame| frame.0.as_ptr() as u64)
    }

    /// The copy of the page holding `pa`, if it has one.
    pub fn copy_of(&self, pa: u64) -> Option<&[u8; PAGE_SIZE as usize]> {
        self.frames.get(self.index_of(pa)?).map(|frame| &frame.0)
    }

    /// Frames in use.
    pub fn used(&self) -> usize {
        self.owners.iter().filter(|owner| owner.is_some()).count()
    }

    /// Whether a frame is free for one more page.
    pub fn has_free(&self) -> bool {
        self.owners.contains(&None)
    }

    /// The guest page of some copy (the lowest frame in use), to drop when the frames run out.
    pub fn any_copied_page(&self) -> Option<u64> {
        self.owners.iter().flatten().next().copied()
    }

    /// Forgets the copy of the page holding `pa` (its frame becomes free).
    pub fn release(&mut self, pa: u64) {
        if let Some(owner) = self.index_of(pa).and_then(|index| self.owners.get_mut(index)) {
            *owner = None;
        }
    }

    /// Patches through this view land in copies of `ram`'s pages.
    pub fn view<'v, 'a>(&'v mut self, ram: &'v Ram<'a>) -> CopyView<'v, 'a, FRAMES> {
        CopyView { copies: self, ram }
    }
}

/// Guest RAM with the copies over it: what the scanner patches through on the native board (see the module docs).
pub struct CopyView<'v, 'a, const FRAMES: usize> {
    copies: &'v mut CodeCopies<FRAMES>,
    ram: &'v Ram<'a>,
}

impl<const FRAMES: usize> CodeMemory for CopyView<'_, '_, FRAMES> {
    /// The copy's parcel where the page has one, else RAM's.
    fn read_parcel(&self, pa: u64) -> Option<u16> {
        match self.copies.copy_of(pa) {
            Some(copy) => {
                let offset = (pa & PAGE_MASK) as usize;
                let bytes = copy.get(offset..offset + 2)?;
                Some(u16::from_le_bytes([bytes[0], bytes[1]]))
            }
            None => self.ram.read_parcel(pa),
        }
    }

    /// Writes into the page's copy, made from RAM on the page's first write; false (nothing written) when `pa`
    /// is not RAM, is odd, or no frame is free.
    fn write_parcel(&mut self, pa: u64, parcel: u16) -> bool {
        if pa & 1 != 0 {
            return false;
        }
        let page = pa & !PAGE_MASK;
        let index = match self.copies.index_of(pa) {
            Some(index) => index,
            None => {
                if !self.ram.contains(page, PAGE_SIZE) {
                    return false;
                }
                let Some(index) = self.copies.owners.iter().position(Option::is_none) else { return false };
                let (Some(frame), Some(owner)) = (self.copies.frames.get_mut(index), self.copies.owners.get_mut(index))
                else {
                    return false;
                };
                if self.ram.read_bytes(page, &mut frame.0).is_none() {
                    return false;
                }
                *owner = Some(page);
                index
            }
        };
        let offset = (pa & PAGE_MASK) as usize;
        match self.copies.frames.get_mut(index).and_then(|frame| frame.0.get_mut(offset..offset + 2)) {
            Some(slot) => {
                slot.copy_from_slice(&parcel.to_le_bytes());
                true
            }
            None => false,
        }
    }
}

/// Drops the page holding `pa` from `table` and its copy from `copies` (see [`PatchTable::drop_page`]); guest
/// RAM is untouched. Returns whether the page was scanned.
pub fn drop_page<const S: usize, const P: usize, const F: usize>(
    table: &mut PatchTable<S, P>,
    copies: &mut CodeCopies<F>,
    ram: &Ram,
    pa: u64,
) -> bool {
    let dropped = table.drop_page(pa, &mut copies.view(ram));
    copies.release(pa);
    dropped
}

/// Drops every scanned page and every copy.
pub fn clear<const S: usize, const P: usize, const F: usize>(
    table: &mut PatchTable<S, P>,
    copies: &mut CodeCopies<F>,
    ram: &Ram,
) {
    table.clear(&mut copies.view(ram));
    copies.owners = [None; F];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RAM_BASE;
    use crate::patch::scan::{scan, Coverage};
    use crate::patch::sensitivity::{critical_set, VmmConfig};
    use crate::patch::table::TRAP_PARCEL;

    const CODE: u64 = RAM_BASE + 0x3000;
    /// `rdtime a0`, then `addi a0, a0, 1`, then `ret`.
    const RDTIME_A0: u32 = 0xc010_2573;
    const PROGRAM: [u32; 3] = [RDTIME_A0, 0x0015_0513, 0x0000_8067];

    fn ram_with_program(bytes: &mut [u8]) -> Ram<'_> {
        let mut ram = Ram::new(RAM_BASE, bytes);
        for (index, word) in PROGRAM.iter().enumerate() {
            ram.store(CODE + 4 * index as u64, 4, u64::from(*word)).unwrap();
        }
        ram
    }

    #[test]
    fn patches_land_in_a_copy_and_ram_keeps_the_original() {
        let mut bytes = vec![0u8; 0x8000];
        let mut ram = ram_with_program(&mut bytes);
        let before = ram.as_slice().unwrap().to_vec();
        let mut table: PatchTable<8, 4> = PatchTable::new();
        let mut copies: CodeCopies<2> = CodeCopies::new();
        let critical = critical_set(&VmmConfig { delegate_counters: true, ..VmmConfig::BOARD });
        let report = scan(&mut table, &mut copies.view(&ram), &critical, CODE, None, Coverage::Guard).unwrap();
        assert_eq!(report.patched, 1);
        assert_eq!(ram.as_slice().unwrap(), &before[..], "guest RAM is never patched");
        let copy = copies.copy_of(CODE).expect("the page got a copy");
        assert_eq!(u16::from_le_bytes([copy[0], copy[1]]), TRAP_PARCEL, "the site is patched in the copy");
        assert_eq!(&copy[2..12], ram.slice(CODE + 2, 10).unwrap(), "the rest is the original");
        assert_eq!(copies.host_page(CODE + 0x123), Some(copy.as_ptr() as u64));
        assert_eq!(copies.host_page(CODE).unwrap() % PAGE_SIZE, 0, "frames are page aligned");
        let (start, end) = copies.host_range();
        assert!(copies.host_page(CODE).unwrap() >= start && copies.host_page(CODE).unwrap() + PAGE_SIZE <= end);

        // Dropping the page frees the frame and leaves RAM as it was.
        assert!(drop_page(&mut table, &mut copies, &ram, CODE));
        assert_eq!(copies.used(), 0);
        assert!(!table.is_scanned(CODE));
        assert_eq!(ram.as_slice().unwrap(), &before[..]);
        // A guest write to the page, then a rescan: the copy is made afresh from the new bytes.
        ram.store(CODE + 4, 4, u64::from(RDTIME_A0)).unwrap();
        let report = scan(&mut table, &mut copies.view(&ram), &critical, CODE, None, Coverage::Guard).unwrap();
        assert_eq!(report.patched, 2);
        let copy = copies.copy_of(CODE).unwrap();
        assert_eq!(&copy[0..2], &[0, 0]);
        assert_eq!(&copy[4..6], &[0, 0]);
        assert_eq!(&copy[8..12], &PROGRAM[2].to_le_bytes());
    }

    #[test]
    fn a_page_without_sites_gets_no_copy_and_full_frames_refuse_a_patch() {
        let mut bytes = vec![0u8; 0x8000];
        let mut ram = ram_with_program(&mut bytes);
        // `addi` and `ret` only, on the next page.
        ram.store(CODE + 0x1000, 4, u64::from(PROGRAM[1])).unwrap();
        ram.store(CODE + 0x1004, 4, u64::from(PROGRAM[2])).unwrap();
        let mut table: PatchTable<8, 4> = PatchTable::new();
        let mut copies: CodeCopies<1> = CodeCopies::new();
        let critical = critical_set(&VmmConfig { delegate_counters: true, ..VmmConfig::BOARD });
        scan(&mut table, &mut copies.view(&ram), &critical, CODE + 0x1000, None, Coverage::Guard).unwrap();
        assert_eq!(copies.used(), 0, "nothing patched, nothing copied");
        scan(&mut table, &mut copies.view(&ram), &critical, CODE, None, Coverage::Guard).unwrap();
        assert!(!copies.has_free());
        assert_eq!(copies.any_copied_page(), Some(CODE));
        // A third page with a site finds no frame: the scan changes nothing.
        ram.store(CODE + 0x2000, 4, u64::from(RDTIME_A0)).unwrap();
        assert!(scan(&mut table, &mut copies.view(&ram), &critical, CODE + 0x2000, None, Coverage::Guard).is_err());
        assert!(!table.is_scanned(CODE + 0x2000));
        assert_eq!(ram.load(CODE + 0x2000, 4), Some(u64::from(RDTIME_A0)));
        clear(&mut table, &mut copies, &ram);
        assert_eq!((copies.used(), table.scanned_pages()), (0, 0));
    }
}
