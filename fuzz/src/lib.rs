//! Shared helpers of the fuzz targets: a cursor that turns libFuzzer's bytes into the operations a target
//! plays against the code under test.
//!
//! Helpers here only read the input; they never decide what a target asserts.

/// Reads the fuzz input front to back; past its end every read is zero, so a target can always finish.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    /// True about once in `n` (`n` > 0): for the rare, wilder choices.
    pub fn one_in(&mut self, n: u8) -> bool {
        self.u8().is_multiple_of(n)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }

    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 256 {
            self.u8() as u64 % n
        } else if n <= 65536 {
            self.u16() as u64 % n
        } else {
            self.u64() % n
        }
    }

    /// Up to `max` bytes, as many as the input's next byte asks for.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = (self.u8() as usize).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(want);
        self.data = rest;
        head
    }

    /// What is left of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }
}
pub mod virtio;

/// A printer sink that takes as many bytes per write as the input says (sometimes none, sometimes an error),
/// and keeps everything it took.
pub struct Sink {
    pub out: Vec<u8>,
    /// How many bytes each next write takes (`None`: fail); an empty plan takes everything.
    pub plan: std::collections::VecDeque<Option<usize>>,
}

impl embedded_io::ErrorType for Sink {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, embedded_io::ErrorKind> {
        let take = match self.plan.pop_front() {
            Some(None) => return Err(embedded_io::ErrorKind::Other),
            Some(Some(n)) => n.min(buf.len()),
            None => buf.len(),
        };
        self.out.extend_from_slice(&buf[..take]);
        Ok(take)
    }
    fn flush(&mut self) -> Result<(), embedded_io::ErrorKind> {
        Ok(())
    }
}

/// Splits a spool's printed output into its jobs, `(name, id, bytes)`, checking the framing the spool promises:
/// a header line `=== job ID of NAME: LEN bytes ===`, LEN bytes, a newline if the job lacks one, and a trailer
/// `=== end of job ID of NAME ===`. Panics on anything else.
pub fn split_jobs(mut out: &[u8]) -> Vec<(Vec<u8>, u32, Vec<u8>)> {
    let mut jobs = Vec::new();
    while !out.is_empty() {
        let line_end = out.iter().position(|&b| b == b'\n').expect("a header line");
        let header = &out[..line_end];
        out = &out[line_end + 1..];
        let header = header.strip_prefix(b"=== job ").expect("header starts with `=== job `");
        let header = header.strip_suffix(b" bytes ===").expect("header ends with ` bytes ===`");
        let space = header.iter().position(|&b| b == b' ').expect("id then name");
        let id: u32 = std::str::from_utf8(&header[..space]).unwrap().parse().expect("numeric id");
        let rest = header[space..].strip_prefix(b" of ").expect("` of ` after the id");
        let colon = rest.iter().rposition(|&b| b == b':').expect("`: LEN`");
        let name = rest[..colon].to_vec();
        let len: usize = std::str::from_utf8(&rest[colon + 2..]).unwrap().parse().expect("numeric length");
        assert!(out.len() >= len, "job {id} cut short");
        let body = out[..len].to_vec();
        out = &out[len..];
        if body.last() != Some(&b'\n') {
            out = out.strip_prefix(b"\n").expect("newline after a job without one");
        }
        let trailer = format!("=== end of job {id} of ");
        out = out.strip_prefix(trailer.as_bytes()).expect("trailer");
        out = out.strip_prefix(&name[..]).expect("trailer names the same VM");
        out = out.strip_prefix(b" ===\n").expect("trailer end");
        jobs.push((name, id, body));
    }
    jobs
}
