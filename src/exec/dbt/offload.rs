//! Translation as a pure function of a job, so that it can run off the hart's thread: a [`Job`] is a snapshot of
//! a block's guest bytes with what its translation depends on (RAM offset, data path, counting, size limit); a
//! [`Translator`] turns it into a finished [`Translation`] (the block's metadata and its position-independent host
//! code, with the list of placeholders the engine patches when it installs it). A [`TranslationService`], which
//! the embedder implements (say a worker thread shared by every hart's engine), takes jobs and hands finished
//! translations back; [`Dbt`](super::Dbt) installs them on the hart's thread at dispatcher turns.
//!
//! Correctness does not rest on the service: a translation is installed only after the engine watched its bytes
//! and found RAM's bytes equal to the ones it was made from (so a block the guest rewrote while its job was in
//! flight is dropped), and a `Translation` can only be made by a `Translator` from its own job, so a service that
//! hands back a translation for another job, another offset or old bytes costs at worst a dropped result.
//!
//! It must never read guest RAM (the job carries the bytes), keep state between jobs that changes a result, or
//! make a translation that depends on anything but its job.

use alloc::vec::Vec;
use iced_x86::code_asm::CodeAssembler;

use super::emit::{self, DataAccess, Translated};
use super::{assemble, DbtError, Window, MAX_BLOCK};
use crate::mem::{Ram, PAGE_SIZE};

/// Guest bytes a job carries at most: [`MAX_BLOCK`] instructions of four bytes.
pub const JOB_BYTES: usize = MAX_BLOCK * 4;

/// What a block's translation depends on: its first instruction's RAM offset, whether data accesses are paged
/// (else the M-mode window they go through), whether it counts its entries, the most host code bytes it may take,
/// and a copy of its guest bytes (from the offset to the page's end, [`JOB_BYTES`] at most).
#[derive(Clone, PartialEq, Eq)]
pub struct Job {
    offset: u64,
    paged: bool,
    /// The M-mode window the block compiles in (the default when `paged`).
    window: Window,
    counting: bool,
    code_limit: u32,
    len: u16,
    bytes: [u8; JOB_BYTES],
}

impl core::fmt::Debug for Job {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Job")
            .field("offset", &self.offset)
            .field("paged", &self.paged)
            .field("window", &self.window)
            .field("counting", &self.counting)
            .field("len", &self.len)
            .finish()
    }
}

impl Job {
    /// The job of the block at RAM offset `offset` as RAM holds it now; `None` when the offset is outside RAM.
    pub(crate) fn snapshot(
        ram: &Ram,
        offset: u64,
        paged: bool,
        window: Window,
        counting: bool,
        code_limit: usize,
    ) -> Option<Job> {
        let page_left = PAGE_SIZE - offset % PAGE_SIZE;
        let len = page_left.min(JOB_BYTES as u64).min(ram.size().checked_sub(offset)?);
        let mut bytes = [0; JOB_BYTES];
        ram.read_bytes(ram.base().checked_add(offset)?, bytes.get_mut(..len as usize)?)?;
        Some(Job {
            offset,
            paged,
            window: if paged { Window::default() } else { window },
            counting,
            code_limit: u32::try_from(code_limit).unwrap_or(u32::MAX),
            len: len as u16,
            bytes,
        })
    }

    /// A job made of its parts (tests and embedders that replay jobs): `bytes` beyond [`JOB_BYTES`] are ignored.
    pub fn new(offset: u64, paged: bool, counting: bool, code_limit: usize, bytes: &[u8]) -> Job {
        let len = bytes.len().min(JOB_BYTES).min((PAGE_SIZE - offset % PAGE_SIZE) as usize);
        let mut copy = [0; JOB_BYTES];
        if let (Some(to), Some(from)) = (copy.get_mut(..len), bytes.get(..len)) {
            to.copy_from_slice(from);
        }
        Job {
            offset,
            paged,
            window: Window::default(),
            counting,
            code_limit: u32::try_from(code_limit).unwrap_or(u32::MAX),
            len: len as u16,
            bytes: copy,
        }
    }

    /// The RAM offset of the block's first instruction.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the block's data accesses are paged (S/U-mode).
    pub fn paged(&self) -> bool {
        self.paged
    }

    /// The M-mode window the block's data accesses go through, unless they are paged.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The job with its data accesses through `window` (when they are not paged).
    pub fn with_window(mut self, window: Window) -> Job {
        if !self.paged {
            self.window = window;
        }
        self
    }

    /// Whether the block counts its entries.
    pub fn counting(&self) -> bool {
        self.counting
    }

    /// The guest bytes copied.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or(&[])
    }
}

/// A finished job: the block's metadata and host code (`None`: nothing could be translated), made by a
/// [`Translator`] only.
#[derive(Clone, Debug)]
pub struct Translation {
    job: Job,
    pub(crate) block: Option<Translated>,
    /// The host code, position-independent but for the 64-bit immediates listed in `imm64` (`(offset, value)`),
    /// placeholders among which the engine puts addresses when it installs the block.
    pub(crate) code: Vec<u8>,
    pub(crate) imm64: Vec<(u32, u64)>,
}

impl Default for Translation {
    fn default() -> Self {
        Translation {
            job: Job {
                offset: 0,
                paged: false,
                window: Window::default(),
                counting: false,
                code_limit: 0,
                len: 0,
                bytes: [0; JOB_BYTES],
            },
            block: None,
            code: Vec::new(),
            imm64: Vec::new(),
        }
    }
}

impl Translation {
    /// The job it was made from.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Whether anything was translated.
    pub fn is_translated(&self) -> bool {
        self.block.is_some()
    }

    /// Host code bytes.
    pub fn code_len(&self) -> usize {
        self.code.len()
    }

    /// The guest bytes the translation depends on: those its decoder read.
    pub(crate) fn read_bytes(&self) -> Option<&[u8]> {
        self.job.bytes().get(..self.block?.read_len as usize)
    }

    /// Whether this is exactly what translating `job` gives: a translated block of the same offset, data path,
    /// counting and size limit, from the same bytes wherever its decoder read (so a memo of translations may
    /// answer `job` with it). Never true for a failed translation.
    pub fn answers(&self, job: &Job) -> bool {
        let same = self.job.offset == job.offset
            && self.job.paged == job.paged
            && self.job.window == job.window
            && self.job.counting == job.counting
            && self.job.code_limit == job.code_limit;
        match self.read_bytes() {
            Some(read) => same && job.bytes().get(..read.len()) == Some(read),
            None => false,
        }
    }
}

/// Translates jobs: the code assembler and the assembling step's buffers, reused by every job.
pub struct Translator {
    asm: CodeAssembler,
    assembler: assemble::Assembler,
}

impl Translator {
    /// A translator with empty buffers.
    pub fn new() -> Result<Self, DbtError> {
        let asm = CodeAssembler::new(64).map_err(|_| DbtError::Assembler)?;
        let assembler = assemble::Assembler::new().map_err(|_| DbtError::Assembler)?;
        Ok(Self { asm, assembler })
    }

    /// Translates `job` into a new translation.
    pub fn translate(&mut self, job: &Job) -> Translation {
        let mut out = Translation::default();
        self.translate_into(job, &mut out);
        out
    }

    /// Translates `job` into `out` (its buffers reused): the longest block from the job's offset, shortened until
    /// its code fits the job's size limit.
    pub fn translate_into(&mut self, job: &Job, out: &mut Translation) {
        out.job.clone_from(job);
        out.block = None;
        out.code.clear();
        out.imm64.clear();
        let mut limit = MAX_BLOCK;
        let access = if job.paged { DataAccess::Paged } else { DataAccess::Window(job.window) };
        while let Some(block) =
            emit::translate(&mut self.asm, &mut self.assembler, job.bytes(), job.offset, access, limit, job.counting)
        {
            if self.assembler.code().len() <= job.code_limit as usize {
                out.block = Some(block);
                out.code.extend_from_slice(self.assembler.code());
                out.imm64.extend_from_slice(self.assembler.imm64());
                return;
            }
            if block.insts <= 1 {
                return;
            }
            limit = (block.insts as usize / 2).max(1);
        }
    }
}

/// Translation off the hart's thread, as the embedder provides it: jobs go in, finished translations come back
/// (each job submitted gives back exactly one translation, maybe a failed one, unless the service is gone).
/// Nothing here is trusted for correctness (see the module documentation): a service only decides when
/// translations land.
pub trait TranslationService {
    /// Takes `job` (copying it); false when the service is full: the block stays on the cold tier for now.
    fn submit(&mut self, job: &Job) -> bool;
    /// How many finished translations wait (cheap: the engine asks at dispatcher turns and cold block entries
    /// while jobs are in flight).
    fn ready(&self) -> usize;
    /// Hands every finished translation waiting to `install`, each once.
    fn take(&mut self, install: &mut dyn FnMut(&Translation));
}
