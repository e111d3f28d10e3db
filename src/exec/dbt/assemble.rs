//! The translator's assembling step: the instruction list a block's lowering built with `iced-x86`'s
//! [`CodeAssembler`] to machine code, in one pass with iced's [`Encoder`], into buffers kept across blocks.
//!
//! iced's own `BlockEncoder` (behind [`CodeAssembler::assemble`]) relaxes branches to their shortest form over
//! several passes and allocates a boxed object per instruction and fresh vectors per block: about 36 µs of a
//! 47 µs translation of a block of Linux's code here (the ignored test `translation_latency`). Here every branch to a label is encoded near (`rel32`), so no instruction's
//! length depends on where a label lands: each instruction is encoded once at its final offset, a branch with a
//! dummy target, and the branch displacements (the last four bytes of a near `jmp`/`jcc`/`call`) are written once
//! every label's offset is known. Then branches whose displacement fits a byte are shortened, with the bytes
//! moved down in the same buffer: shortening only ever brings a branch and its target closer (an instruction's
//! bytes never depend on its address: translated code has no RIP-relative operand, checked here), so every
//! branch chosen short still fits.
//!
//! Lowering and assembling now take about 12 µs a block, a third of it in iced's `Encoder` itself (table-driven,
//! about 40 ns an instruction): that is the floor while iced encodes.
//!
//! It also notes where each 64-bit immediate (`mov r64, imm64`) lies in the code, so that the engine puts link
//! slot and counter addresses in place of their placeholders without searching the bytes.
//!
//! It must never allocate once its buffers have grown to the largest block (they are cleared, not dropped), never
//! emit a branch to a label that was not placed (the block fails instead), and never emit anything whose meaning
//! depends on its address other than the label branches it patches.

use alloc::vec::Vec;
use core::hash::{Hash, Hasher};

use iced_x86::code_asm::{CodeAssembler, CodeLabel};
use iced_x86::{Code, Encoder, IcedError, Instruction, OpKind};

/// No offset known (a label not placed).
const UNPLACED: u32 = u32::MAX;

/// Label ids above this are refused (the lowering creates a few per guest instruction).
const MAX_LABELS: u64 = 1 << 16;

/// A branch to a label: where the instruction starts and ends in the code, its label, and whether it is a `jmp`
/// (else a `jcc`; `call` to a label is never shortened).
#[derive(Clone, Copy)]
struct Branch {
    start: u32,
    end: u32,
    label: u64,
    kind: BranchKind,
    /// Bytes it loses when shortened (0: it stays near), and bytes the branches before it lose.
    shrink: u32,
    removed_before: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BranchKind {
    /// `jmp rel32` (`E9`): shortens to `EB rel8`.
    Jmp,
    /// `jcc rel32` (`0F 8x`): shortens to `7x rel8`.
    Jcc,
    /// Anything else (`call rel32`): stays near.
    Other,
}

/// Why a block could not be assembled (the block is then not translated).
#[derive(Debug)]
pub(crate) enum AssembleError {
    /// iced refused an instruction.
    Encoder,
    /// A branch to a label that was never placed, a label id out of range, or an operand whose encoding depends
    /// on the instruction's address.
    Label,
}

impl From<IcedError> for AssembleError {
    fn from(_: IcedError) -> Self {
        AssembleError::Encoder
    }
}

/// The assembling step's buffers, reused by every block.
pub(crate) struct Assembler {
    encoder: Encoder,
    /// The last block's code.
    code: Vec<u8>,
    /// The offset of each label (by id), or [`UNPLACED`].
    labels: Vec<u32>,
    branches: Vec<Branch>,
    /// `(offset, value)` of each 64-bit immediate in `code`.
    imm64: Vec<(u32, u64)>,
}

impl Assembler {
    pub fn new() -> Result<Self, IcedError> {
        Ok(Self {
            encoder: Encoder::try_new(64)?,
            code: Vec::new(),
            labels: Vec::new(),
            branches: Vec::new(),
            imm64: Vec::new(),
        })
    }

    /// The code of the last block assembled.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// Where each 64-bit immediate of the last block lies in its code (the offset of its first byte), and its value.
    pub fn imm64(&self) -> &[(u32, u64)] {
        &self.imm64
    }

    /// The offset of `label` in the last block's code (`None`: not placed).
    pub fn label_offset(&self, label: &CodeLabel) -> Option<u32> {
        self.labels.get(label_id(label) as usize).copied().filter(|&offset| offset != UNPLACED)
    }

    /// Assembles `asm`'s instructions at offset 0 of a fresh code buffer (see the module documentation).
    pub fn assemble(&mut self, asm: &CodeAssembler) -> Result<(), AssembleError> {
        let instructions = asm.instructions();
        let mut code = core::mem::take(&mut self.code);
        code.clear();
        self.encoder.set_buffer(code);
        self.labels.clear();
        self.branches.clear();
        self.imm64.clear();
        let result = self.encode_all(instructions);
        self.code = self.encoder.take_buffer();
        result?;
        self.patch()?;
        self.shorten()
    }

    /// Encodes every instruction at its final offset, branches near with a dummy displacement.
    fn encode_all(&mut self, instructions: &[Instruction]) -> Result<(), AssembleError> {
        let mut offset = 0u32;
        for instruction in instructions {
            // The code assembler gives a labelled instruction the label's id as its address.
            let label = instruction.ip();
            if label != 0 {
                self.place(label, offset)?;
            }
            let rip = offset as u64;
            let length = if instruction.op0_kind() == OpKind::NearBranch64 && instruction.op_count() == 1 {
                let mut near = *instruction;
                near.set_code(instruction.code().as_near_branch());
                near.set_near_branch64(rip);
                let length = self.encoder.encode(&near, rip)? as u32;
                let (start, end, label) = (offset, offset + length, instruction.near_branch64());
                self.branches.push(Branch { start, end, label, kind: BranchKind::Other, shrink: 0, removed_before: 0 });
                length
            } else {
                if instruction.is_ip_rel_memory_operand()
                    || (0..instruction.op_count()).any(|k| is_branch_operand(instruction, k))
                {
                    return Err(AssembleError::Label);
                }
                let length = self.encoder.encode(instruction, rip)? as u32;
                if instruction.code() == Code::Mov_r64_imm64 {
                    self.imm64.push((offset + length - 8, instruction.immediate64()));
                }
                length
            };
            offset += length;
        }
        Ok(())
    }

    /// Notes that label `id` is at `offset`.
    fn place(&mut self, id: u64, offset: u32) -> Result<(), AssembleError> {
        if id > MAX_LABELS {
            return Err(AssembleError::Label);
        }
        let index = id as usize;
        if self.labels.len() <= index {
            self.labels.resize(index + 1, UNPLACED);
        }
        *self.labels.get_mut(index).ok_or(AssembleError::Label)? = offset;
        Ok(())
    }

    /// Writes every branch's displacement (its label's offset from the branch's end).
    fn patch(&mut self) -> Result<(), AssembleError> {
        for branch in &self.branches {
            let target = self.labels.get(branch.label as usize).copied().filter(|&t| t != UNPLACED);
            let target = target.ok_or(AssembleError::Label)?;
            let displacement = (target as i64 - branch.end as i64) as i32;
            let at = branch.end as usize - 4;
            self.code.get_mut(at..at + 4).ok_or(AssembleError::Label)?.copy_from_slice(&displacement.to_le_bytes());
        }
        Ok(())
    }

    /// Shortens the branches whose displacement fits a byte (it only shrinks: see the module documentation),
    /// moving the code down in place, and moves every offset noted with it.
    fn shorten(&mut self) -> Result<(), AssembleError> {
        // Choose: `shrink` is what each branch loses (0: it stays near).
        let mut any = false;
        for branch in &mut self.branches {
            let target = self.labels.get(branch.label as usize).copied().unwrap_or(UNPLACED);
            let fits = i8::try_from(target as i64 - branch.end as i64).is_ok();
            let code = self.code.get(branch.start as usize..branch.end as usize).unwrap_or(&[]);
            branch.kind = match code {
                [0xe9, _, _, _, _] => BranchKind::Jmp,
                [0x0f, second, _, _, _, _] if second & 0xf0 == 0x80 => BranchKind::Jcc,
                _ => BranchKind::Other,
            };
            branch.shrink = match branch.kind {
                BranchKind::Jmp if fits => 3,
                BranchKind::Jcc if fits => 4,
                _ => 0,
            };
            any |= branch.shrink > 0;
        }
        if !any {
            return Ok(());
        }
        // Move the bytes between branches down, write each short branch, then every displacement anew.
        let mut removed = 0u32;
        let mut from = 0u32;
        for branch in &mut self.branches {
            branch.removed_before = removed;
            if branch.shrink == 0 {
                continue;
            }
            self.code.copy_within(from as usize..branch.start as usize, (from - removed) as usize);
            let at = (branch.start - removed) as usize;
            let opcode = match branch.kind {
                BranchKind::Jmp => 0xeb,
                // `0F 8x` near is `7x` short.
                _ => 0x70 | (self.code.get(branch.start as usize + 1).copied().unwrap_or(0) & 0x0f),
            };
            self.code.get_mut(at..at + 2).ok_or(AssembleError::Label)?.copy_from_slice(&[opcode, 0]);
            removed += branch.shrink;
            from = branch.end;
        }
        let end = self.code.len() as u32;
        self.code.copy_within(from as usize..end as usize, (from - removed) as usize);
        self.code.truncate((end - removed) as usize);
        // Old offsets to new ones: less what the short branches before them lost.
        // (Branches are in code order; each knows what those before it lost.)
        let moved = |branches: &[Branch], old: u32| -> u32 {
            match branches.partition_point(|branch| branch.start < old).checked_sub(1) {
                Some(last) => branches.get(last).map_or(old, |branch| old - branch.removed_before - branch.shrink),
                None => old,
            }
        };
        for offset in self.labels.iter_mut().filter(|offset| **offset != UNPLACED) {
            *offset = moved(&self.branches, *offset);
        }
        for (offset, _) in &mut self.imm64 {
            *offset = moved(&self.branches, *offset);
        }
        for k in 0..self.branches.len() {
            let Some(&branch) = self.branches.get(k) else { break };
            let start = branch.start - branch.removed_before;
            let length = branch.end - branch.start - branch.shrink;
            let target = self.labels.get(branch.label as usize).copied().ok_or(AssembleError::Label)?;
            let displacement = target as i64 - (start + length) as i64;
            let end = (start + length) as usize;
            if branch.shrink > 0 {
                let byte = i8::try_from(displacement).map_err(|_| AssembleError::Label)?;
                *self.code.get_mut(end - 1).ok_or(AssembleError::Label)? = byte as u8;
            } else {
                let displacement = i32::try_from(displacement).map_err(|_| AssembleError::Label)?;
                self.code
                    .get_mut(end - 4..end)
                    .ok_or(AssembleError::Label)?
                    .copy_from_slice(&displacement.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Whether operand `k` of `instruction` is a branch target (its encoding depends on the instruction's address).
fn is_branch_operand(instruction: &Instruction, k: u32) -> bool {
    matches!(
        instruction.op_kind(k),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 | OpKind::FarBranch16 | OpKind::FarBranch32
    )
}

/// The id of `label`: iced keeps it private, but hashes exactly it (one `u64`); the code assembler gives the
/// labelled instruction this id as its address.
fn label_id(label: &CodeLabel) -> u64 {
    struct Id(u64);
    impl Hasher for Id {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, _: &[u8]) {}
        fn write_u64(&mut self, id: u64) {
            self.0 = id;
        }
    }
    let mut id = Id(0);
    label.hash(&mut id);
    id.0
}
