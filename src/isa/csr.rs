//! CSR numbers and fields.
