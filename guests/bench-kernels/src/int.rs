//! Integer kernels of `bench-int`: quicksort and heapsort of random arrays, CRC-32, an integer matrix product,
//! a small stack-machine bytecode interpreter, and insertion/deletion in a sorted linked list.
use crate::{fold, Report, Rng};

/// Rounds of the measured workload.
pub const FULL: u32 = 14;
/// Rounds of the quick variant the tests run.
pub const SMALL: u32 = 1;

/// Elements of the arrays the sorts work on.
pub const SORT_LEN: usize = 8192;
/// Bytes the CRC runs over per round.
pub const CRC_LEN: usize = 32768;
/// Side of the square matrices.
pub const MATRIX_N: usize = 32;
/// Nodes of the linked list (node 0 is the head sentinel).
pub const LIST_CAP: usize = 1024;

/// Memory the integer kernels work in.
pub struct Scratch {
    sort: [u32; SORT_LEN],
    bytes: [u8; CRC_LEN],
    crc_table: [u32; 256],
    a: [[i32; MATRIX_N]; MATRIX_N],
    b: [[i32; MATRIX_N]; MATRIX_N],
    c: [[i32; MATRIX_N]; MATRIX_N],
    next: [u32; LIST_CAP],
    value: [u32; LIST_CAP],
}

impl Scratch {
    /// All zeros (so a `static` of it lives in `.bss`).
    pub const fn new() -> Self {
        Self {
            sort: [0; SORT_LEN],
            bytes: [0; CRC_LEN],
            crc_table: [0; 256],
            a: [[0; MATRIX_N]; MATRIX_N],
            b: [[0; MATRIX_N]; MATRIX_N],
            c: [[0; MATRIX_N]; MATRIX_N],
            next: [0; LIST_CAP],
            value: [0; LIST_CAP],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `scale` rounds of every integer kernel.
pub fn run(scale: u32, s: &mut Scratch) -> Report<6> {
    let mut rng = Rng::new(0x1b87_3593_cc9e_2d51);
    let mut parts = [0u64; 6];
    crc32_table(&mut s.crc_table);
    for round in 0..scale {
        fill_u32(&mut rng, &mut s.sort);
        quicksort(&mut s.sort);
        parts[0] = fold(parts[0], sorted_digest(&s.sort));

        fill_u32(&mut rng, &mut s.sort);
        heapsort(&mut s.sort);
        parts[1] = fold(parts[1], sorted_digest(&s.sort));

        for chunk in s.bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
        }
        parts[2] = fold(parts[2], u64::from(crc32(&s.crc_table, &s.bytes)));

        for _ in 0..4 {
            parts[3] = fold(parts[3], matrix_round(&mut rng, &mut s.a, &mut s.b, &mut s.c));
        }

        let n = 24 + u64::from(round % 11);
        let mut locals = [0u64; 8];
        locals[1] = n;
        locals[6] = n + 5;
        let mut program = [0u8; 128];
        let length = gcd_program(&mut program);
        let steps = execute(&program[..length], &mut locals);
        parts[4] = fold(fold(parts[4], locals[0]), steps);

        parts[5] = fold(parts[5], list_round(&mut rng, &mut s.next, &mut s.value));
    }
    Report { names: ["quicksort", "heapsort", "crc32", "matmul", "bytecode", "list"], parts }
}

fn fill_u32(rng: &mut Rng, out: &mut [u32]) {
    for value in out {
        *value = rng.next_u32();
    }
}

/// Digest of a sorted array: every element weighted by its index, plus the number of out-of-order pairs.
fn sorted_digest(a: &[u32]) -> u64 {
    let mut sum = 0u64;
    let mut disorder = 0u64;
    for (index, pair) in a.windows(2).enumerate() {
        sum = sum.wrapping_add(u64::from(pair[0]).wrapping_mul(index as u64 + 1));
        disorder += u64::from(pair[0] > pair[1]);
    }
    fold(sum, disorder)
}

/// Sorts `a` in place: median-of-three quicksort (Hoare partition), insertion sort below 16 elements.
pub fn quicksort(a: &mut [u32]) {
    let mut a = a;
    while a.len() > 16 {
        let last = a.len() - 1;
        let mid = a.len() / 2;
        if a[mid] < a[0] {
            a.swap(mid, 0);
        }
        if a[last] < a[0] {
            a.swap(last, 0);
        }
        if a[last] < a[mid] {
            a.swap(last, mid);
        }
        let pivot = a[mid];
        let (mut i, mut j) = (0, last);
        let split = loop {
            while a[i] < pivot {
                i += 1;
            }
            while a[j] > pivot {
                j -= 1;
            }
            if i >= j {
                break j;
            }
            a.swap(i, j);
            i += 1;
            j -= 1;
        };
        // Recurse into the smaller part, loop on the larger: the stack stays logarithmic.
        let (left, right) = a.split_at_mut(split + 1);
        if left.len() < right.len() {
            quicksort(left);
            a = right;
        } else {
            quicksort(right);
            a = left;
        }
    }
    for i in 1..a.len() {
        let value = a[i];
        let mut j = i;
        while j > 0 && a[j - 1] > value {
            a[j] = a[j - 1];
            j -= 1;
        }
        a[j] = value;
    }
}

/// Sorts `a` in place with a binary max-heap.
pub fn heapsort(a: &mut [u32]) {
    fn sift_down(a: &mut [u32], mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && a[child + 1] > a[child] {
                child += 1;
            }
            if a[root] >= a[child] {
                return;
            }
            a.swap(root, child);
            root = child;
        }
    }
    let n = a.len();
    for root in (0..n / 2).rev() {
        sift_down(a, root, n);
    }
    for end in (1..n).rev() {
        a.swap(0, end);
        sift_down(a, 0, end);
    }
}

/// The table of the reflected CRC-32 (IEEE 802.3, polynomial 0xedb88320).
pub fn crc32_table(table: &mut [u32; 256]) {
    for (index, entry) in table.iter_mut().enumerate() {
        let mut crc = index as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
        *entry = crc;
    }
}

/// CRC-32 (IEEE) of `bytes`, one table lookup per byte.
pub fn crc32(table: &[u32; 256], bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &byte| table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8))
}

type Matrix = [[i32; MATRIX_N]; MATRIX_N];

/// Fills A and B with small signed numbers, computes C = A * B (wrapping) and returns a digest of C.
fn matrix_round(rng: &mut Rng, a: &mut Matrix, b: &mut Matrix, c: &mut Matrix) -> u64 {
    for row in a.iter_mut().chain(b.iter_mut()) {
        for value in row {
            *value = rng.below(201) as i32 - 100;
        }
    }
    for (c_row, a_row) in c.iter_mut().zip(a.iter()) {
        for (j, c_value) in c_row.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (k, &a_value) in a_row.iter().enumerate() {
                sum = sum.wrapping_add(a_value.wrapping_mul(b[k][j]));
            }
            *c_value = sum;
        }
    }
    c.iter().flatten().fold(0, |digest, &value| fold(digest, value as u32 as u64))
}

/// The opcodes of the bytecode machine: a stack of `u64`s, eight local slots, 16-bit absolute jump targets.
#[allow(missing_docs)]
pub mod op {
    pub const HALT: u8 = 0;
    /// Followed by a 16-bit little-endian immediate, zero-extended.
    pub const PUSH: u8 = 1;
    /// Followed by a slot number.
    pub const LOAD: u8 = 2;
    /// Followed by a slot number.
    pub const STORE: u8 = 3;
    pub const ADD: u8 = 4;
    pub const SUB: u8 = 5;
    pub const MUL: u8 = 6;
    pub const XOR: u8 = 7;
    /// Remainder; 0 when dividing by 0.
    pub const MOD: u8 = 8;
    pub const LT: u8 = 9;
    /// Followed by a 16-bit target.
    pub const JMP: u8 = 10;
    /// Pops; jumps when zero. Followed by a 16-bit target.
    pub const JZ: u8 = 11;
    pub const DUP: u8 = 12;
}

/// Writes a program to `out` and returns its length. With `a` in slot 1 and `m` in slot 6, it computes in slot 0
/// the fold `acc = acc * 31 + gcd(a', b')` over `a'` from `a` down to 1 and `b'` from `m` down to 1 (Euclid's
/// algorithm with remainders), wrapping at 64 bits; see [`gcd_program_native`].
pub fn gcd_program(out: &mut [u8; 128]) -> usize {
    struct Asm<'a> {
        code: &'a mut [u8; 128],
        len: usize,
    }
    impl Asm<'_> {
        fn byte(&mut self, byte: u8) {
            self.code[self.len] = byte;
            self.len += 1;
        }
        fn op(&mut self, op: u8) {
            self.byte(op);
        }
        fn op8(&mut self, op: u8, operand: u8) {
            self.byte(op);
            self.byte(operand);
        }
        fn op16(&mut self, op: u8, operand: u16) -> usize {
            self.byte(op);
            let at = self.len;
            self.byte(operand as u8);
            self.byte((operand >> 8) as u8);
            at
        }
        fn here(&self) -> u16 {
            self.len as u16
        }
        fn patch_here(&mut self, at: usize) {
            let here = self.here();
            self.code[at] = here as u8;
            self.code[at + 1] = (here >> 8) as u8;
        }
    }
    const ACC: u8 = 0;
    const A: u8 = 1;
    const B: u8 = 2;
    const X: u8 = 3;
    const Y: u8 = 4;
    const T: u8 = 5;
    const M: u8 = 6;
    use op::*;
    let mut asm = Asm { code: out, len: 0 };
    let outer = asm.here();
    asm.op8(LOAD, A);
    let to_end = asm.op16(JZ, 0);
    asm.op8(LOAD, M);
    asm.op8(STORE, B);
    let middle = asm.here();
    asm.op8(LOAD, B);
    let to_middle_end = asm.op16(JZ, 0);
    asm.op8(LOAD, A);
    asm.op8(STORE, X);
    asm.op8(LOAD, B);
    asm.op8(STORE, Y);
    let gcd = asm.here();
    asm.op8(LOAD, Y);
    let to_gcd_end = asm.op16(JZ, 0);
    asm.op8(LOAD, X);
    asm.op8(LOAD, Y);
    asm.op(MOD);
    asm.op8(STORE, T);
    asm.op8(LOAD, Y);
    asm.op8(STORE, X);
    asm.op8(LOAD, T);
    asm.op8(STORE, Y);
    asm.op16(JMP, gcd);
    asm.patch_here(to_gcd_end);
    asm.op8(LOAD, ACC);
    asm.op16(PUSH, 31);
    asm.op(MUL);
    asm.op8(LOAD, X);
    asm.op(ADD);
    asm.op8(STORE, ACC);
    asm.op8(LOAD, B);
    asm.op16(PUSH, 1);
    asm.op(SUB);
    asm.op8(STORE, B);
    asm.op16(JMP, middle);
    asm.patch_here(to_middle_end);
    asm.op8(LOAD, A);
    asm.op16(PUSH, 1);
    asm.op(SUB);
    asm.op8(STORE, A);
    asm.op16(JMP, outer);
    asm.patch_here(to_end);
    asm.op(HALT);
    asm.len
}

/// What [`gcd_program`] computes, in plain Rust.
pub fn gcd_program_native(a: u64, m: u64) -> u64 {
    let mut acc = 0u64;
    for a in (1..=a).rev() {
        for b in (1..=m).rev() {
            let (mut x, mut y) = (a, b);
            while y != 0 {
                (x, y) = (y, x % y);
            }
            acc = acc.wrapping_mul(31).wrapping_add(x);
        }
    }
    acc
}

/// Runs bytecode until `HALT` (or the end of the code, or a stack error); returns the number of instructions
/// executed.
pub fn execute(code: &[u8], locals: &mut [u64; 8]) -> u64 {
    let mut stack = [0u64; 16];
    let mut sp = 0usize;
    let mut pc = 0usize;
    let mut steps = 0u64;
    let imm16 = |pc: usize| usize::from(code[pc + 1]) | usize::from(code[pc + 2]) << 8;
    while pc < code.len() {
        steps += 1;
        match code[pc] {
            op::PUSH => {
                stack[sp] = imm16(pc) as u64;
                sp += 1;
                pc += 3;
            }
            op::LOAD => {
                stack[sp] = locals[usize::from(code[pc + 1] & 7)];
                sp += 1;
                pc += 2;
            }
            op::STORE => {
                sp -= 1;
                locals[usize::from(code[pc + 1] & 7)] = stack[sp];
                pc += 2;
            }
            op::JMP => pc = imm16(pc),
            op::JZ => {
                sp -= 1;
                pc = if stack[sp] == 0 { imm16(pc) } else { pc + 3 };
            }
            op::DUP => {
                stack[sp] = stack[sp - 1];
                sp += 1;
                pc += 1;
            }
            binary @ (op::ADD | op::SUB | op::MUL | op::XOR | op::MOD | op::LT) => {
                sp -= 1;
                let (x, y) = (stack[sp - 1], stack[sp]);
                stack[sp - 1] = match binary {
                    op::ADD => x.wrapping_add(y),
                    op::SUB => x.wrapping_sub(y),
                    op::MUL => x.wrapping_mul(y),
                    op::XOR => x ^ y,
                    op::MOD => x.checked_rem(y).unwrap_or(0),
                    _ => u64::from(x < y),
                };
                pc += 1;
            }
            _ => break,
        }
    }
    steps
}

/// Builds a sorted singly linked list of random values (node 0 is the head), removes the nodes whose value is a
/// multiple of 3 and inserts new ones in their place, and returns a digest of a final traversal.
fn list_round(rng: &mut Rng, next: &mut [u32; LIST_CAP], value: &mut [u32; LIST_CAP]) -> u64 {
    fn insert(next: &mut [u32; LIST_CAP], value: &mut [u32; LIST_CAP], node: u32, v: u32) {
        value[node as usize] = v;
        let mut prev = 0usize;
        loop {
            let candidate = next[prev];
            if candidate == 0 || value[candidate as usize] >= v {
                break;
            }
            prev = candidate as usize;
        }
        next[node as usize] = next[prev];
        next[prev] = node;
    }
    next[0] = 0;
    for node in 1..LIST_CAP as u32 {
        insert(next, value, node, rng.below(1 << 20));
    }
    // Unlink every node with a value divisible by 3, keeping them on a free list.
    let mut free = 0u32;
    let mut prev = 0usize;
    while next[prev] != 0 {
        let node = next[prev];
        if value[node as usize].is_multiple_of(3) {
            next[prev] = next[node as usize];
            next[node as usize] = free;
            free = node;
        } else {
            prev = node as usize;
        }
    }
    while free != 0 {
        let node = free;
        free = next[node as usize];
        insert(next, value, node, rng.below(1 << 20) | 1);
    }
    let mut digest = 0u64;
    let mut node = next[0];
    let mut index = 0u64;
    while node != 0 {
        digest = digest.wrapping_add(u64::from(value[node as usize]) ^ index);
        index += 1;
        node = next[node as usize];
    }
    fold(digest, index)
}
