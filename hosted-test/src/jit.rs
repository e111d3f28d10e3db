//! The translator's executable memory on this host (`mmap`/`mprotect`): mapped read+execute, made writable (and
//! not executable) only while a translation is copied in, so it is never writable and executable at once. Also
//! the hosted translator's size.

use trapeze::exec::dbt::{CodeMemory, CodeMemoryError, Dbt, DbtError};

/// Bytes of host code the hosted translator keeps (its code cache's arena).
pub const CODE_BYTES: usize = 16 << 20;

/// The hosted translator: 16 MiB of host code in at most 8192 blocks, 16384 map slots (most of Linux's working
/// set; about 1.7 MiB of block records and map besides the code, built on the stack first: larger would need
/// a bigger stack).
pub type HostedDbt = Dbt<MappedCode, CODE_BYTES, 8192, 16384>;

/// A hosted translator with its own code memory.
pub fn hosted_dbt() -> Result<Box<HostedDbt>, String> {
    let code = MappedCode::new(CODE_BYTES)?;
    HostedDbt::new(code).map(Box::new).map_err(|e: DbtError| format!("the translator: {e:?}"))
}

/// Anonymous memory for host code.
pub struct MappedCode {
    base: *mut u8,
    len: usize,
}

const PAGE: usize = 4096;

impl MappedCode {
    /// `len` bytes (rounded up to whole pages), read+execute.
    pub fn new(len: usize) -> Result<Self, String> {
        let len = len.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping at an address the kernel chooses; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes for translated code: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { base: base.cast(), len })
    }

    fn protect(&self, first: usize, bytes: usize, protection: i32) -> Result<(), CodeMemoryError> {
        // SAFETY: `[first, first + bytes)` is whole pages inside the mapping made in `new` (checked by `write`).
        match unsafe { libc::mprotect(self.base.add(first).cast(), bytes, protection) } {
            0 => Ok(()),
            _ => Err(CodeMemoryError::Protection),
        }
    }
}

impl Drop for MappedCode {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the translator that ran code from it is gone with this value.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

// SAFETY: the mapping lives as long as the value at the same address. It is read+execute except inside `write`,
// which makes exactly the pages it writes read+write (not executable), copies, and makes them read+execute
// again before returning; x86-64 keeps instruction fetch coherent with stores of the same thread.
unsafe impl CodeMemory for MappedCode {
    fn base(&self) -> usize {
        self.base as usize
    }

    fn len(&self) -> usize {
        self.len
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= self.len).ok_or(CodeMemoryError::OutOfRange)?;
        let first = offset / PAGE * PAGE;
        let last = end.div_ceil(PAGE) * PAGE;
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: the destination lies inside the mapping and is writable now; the source is another object.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) };
        self.protect(first, last - first, libc::PROT_READ | libc::PROT_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written code is executable and never writable: a write to it from outside `write` faults, which is
    /// checked by asking the kernel for the mapping's protection.
    #[test]
    fn code_memory_is_never_writable_and_executable_at_once() {
        let mut code = MappedCode::new(2 * PAGE).unwrap();
        // mov eax, 42; ret
        code.write(PAGE - 3, &[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{:x}-", code.base());
        let line = maps.lines().find(|line| line.starts_with(&start)).expect("the mapping is listed");
        assert!(line.contains(" r-xp "), "{line}");
        // SAFETY: the six bytes just written at PAGE - 3 are a complete function returning 42.
        let function: extern "sysv64" fn() -> u32 = unsafe { std::mem::transmute(code.base() + PAGE - 3) };
        assert_eq!(function(), 42);
        assert_eq!(code.write(2 * PAGE - 1, &[0, 0]), Err(CodeMemoryError::OutOfRange));
    }
}
