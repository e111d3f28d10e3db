//! Critical instructions: the patching scanner and the patch table (the sensitivity table joins them here).
pub mod scan;
pub mod table;
