//! Disassembly of [`super::Inst`] in the assembler syntax of the RISC-V specification.
