//! The snapshot format: a machine's state written into a caller's byte buffer and read back, with no heap.
//!
//! A snapshot is a header followed by a payload of tagged sections:
//!
//! ```text
//! header   magic "TRPZSNAP" (8 bytes) | version u32 | reserved u32 (0) | payload length u64 | checksum u64
//! payload  section* ; section = tag [u8; 4] | index u32 | length u64 | `length` bytes of the component's state
//! ```
//!
//! Every number is little-endian and of fixed width; a `bool` is one byte, 0 or 1; an `Option` is a presence
//! byte (0 or 1) followed by the value when present. The checksum is FNV-1a (64-bit) over the payload. The
//! sections come in a fixed order decided by the writer of each level (the VM writes its own section, then one
//! per hart, then the devices', then RAM), and a reader expects exactly that order: a missing, extra or
//! reordered section is an error naming the section it expected.
//!
//! [`Writer`] writes into a `&mut [u8]` and never fails for lack of room while writing: it goes on counting, so
//! [`Writer::finish`] reports the size needed (a writer over an empty buffer measures a snapshot).
//! [`Reader`] reads from a `&[u8]` and answers every read past the end of a section with
//! [`SnapshotError::Truncated`]. Each component's `load_state` decodes its whole section and validates every
//! value before it changes anything, and changes nothing at all under [`LoadMode::Check`]: a VM restore first
//! checks every section, then applies them, so a corrupt, truncated or hostile snapshot is refused with the VM
//! untouched.
//!
//! This module never panics on any input, never allocates and never trusts a length it reads: every length is
//! checked against the bytes that are actually there before it is used.

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"TRPZSNAP";
/// The format version this build writes and reads. Version 2: every virtio-mmio slot of the `virt` machine has
/// a section (`VIRT` 0 to 7) that starts with the device ID of the device in it (0: empty), where version 1 had
/// a section for slot 0 only.
pub const VERSION: u32 = 2;
/// Size of the header before the payload.
pub const HEADER_LEN: usize = 32;

/// A section's tag: four ASCII bytes naming the component (`b"HART"`, `b"CLNT"`, ...).
pub type Tag = [u8; 4];

/// Which section: its tag and index (the hart number, the device slot, 0 for a single component).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SectionId {
    pub tag: Tag,
    pub index: u32,
}

impl SectionId {
    /// The header and the outer level, outside any section.
    pub const TOP: SectionId = SectionId { tag: *b"----", index: 0 };

    pub const fn new(tag: Tag, index: u32) -> Self {
        Self { tag, index }
    }
}

impl core::fmt::Debug for SectionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &byte in &self.tag {
            let shown = if byte.is_ascii_graphic() || byte == b' ' { byte as char } else { '?' };
            write!(f, "{shown}")?;
        }
        write!(f, "[{}]", self.index)
    }
}

/// Why a snapshot could not be written or restored. Who is at fault: the snapshot (corrupt, truncated, hostile
/// or from another version), the target machine (built differently from the one saved), or the caller (a
/// buffer too small, a component that cannot be saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError {
    /// Saving: the buffer holds fewer than `needed` bytes.
    BufferTooSmall { needed: usize },
    /// Saving: a component (a device with no snapshot support, say) cannot be saved or restored.
    Unsupported { section: SectionId },
    /// The data does not start with [`MAGIC`]: not a snapshot.
    BadMagic,
    /// A snapshot of another format version.
    UnsupportedVersion(u32),
    /// The header's payload length does not match the bytes given.
    LengthMismatch { header: u64, actual: u64 },
    /// The payload's checksum is wrong: the snapshot was damaged.
    ChecksumMismatch,
    /// The data ends inside `section`.
    Truncated { section: SectionId },
    /// The next section is `found` where `expected` must come.
    UnexpectedSection { expected: SectionId, found: SectionId },
    /// `section` holds bytes its component did not read.
    TrailingBytes { section: SectionId },
    /// `section` holds a value its component can never be in.
    Invalid { section: SectionId, what: &'static str },
    /// The snapshot is of a machine built differently from this one (hart count, RAM, devices attached).
    Mismatch { section: SectionId, what: &'static str },
}

/// Whether a component's `load_state` only validates or also applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Decode and validate everything; change nothing.
    Check,
    /// Decode and validate everything, then (only if all of it is valid) replace the component's state.
    Apply,
}

impl LoadMode {
    pub fn apply(self) -> bool {
        self == LoadMode::Apply
    }
}

/// Writes a snapshot into a caller's buffer. Writes past the end are counted, not stored (see
/// [`Writer::finish`]).
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

/// Where an open section's length goes, from [`Writer::begin`].
#[must_use]
pub struct OpenSection {
    length_at: usize,
    start: usize,
}

impl<'a> Writer<'a> {
    /// A writer of a bare payload (no header) into `buf`: for one component's state.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written (or that would have been, past the end of the buffer).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(target) = self.buf.get_mut(self.len..end) {
            target.copy_from_slice(bytes);
        }
        self.len = end;
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes(&[value]);
    }
    pub fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn bool(&mut self, value: bool) {
        self.u8(value as u8);
    }
    /// `Some(value)` as 1 and the value, `None` as 0.
    pub fn option_u64(&mut self, value: Option<u64>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.u64(value);
        }
    }
    pub fn u64s(&mut self, values: &[u64]) {
        for &value in values {
            self.u64(value);
        }
    }
    pub fn u32s(&mut self, values: &[u32]) {
        for &value in values {
            self.u32(value);
        }
    }

    /// Starts section `id`; its length is filled in by [`end`](Self::end).
    pub fn begin(&mut self, id: SectionId) -> OpenSection {
        self.bytes(&id.tag);
        self.u32(id.index);
        let length_at = self.len;
        self.u64(0);
        OpenSection { length_at, start: self.len }
    }

    /// Ends a section started by [`begin`](Self::begin).
    pub fn end(&mut self, open: OpenSection) {
        let length = (self.len - open.start) as u64;
        if let Some(target) = self.buf.get_mut(open.length_at..open.length_at + 8) {
            target.copy_from_slice(&length.to_le_bytes());
        }
    }

    /// Writes section `id` with `body`.
    pub fn section(
        &mut self,
        id: SectionId,
        body: impl FnOnce(&mut Self) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let open = self.begin(id);
        body(self)?;
        self.end(open);
        Ok(())
    }

    /// The bytes written, or [`SnapshotError::BufferTooSmall`] with the size needed.
    pub fn finish(self) -> Result<usize, SnapshotError> {
        if self.len > self.buf.len() {
            return Err(SnapshotError::BufferTooSmall { needed: self.len });
        }
        Ok(self.len)
    }
}

/// Writes a whole snapshot: a header, then the payload `body` writes, then the header's length and checksum.
/// Answers the snapshot's length, or the size needed when `buf` is too small.
pub fn write_snapshot(
    buf: &mut [u8],
    body: impl FnOnce(&mut Writer) -> Result<(), SnapshotError>,
) -> Result<usize, SnapshotError> {
    let mut writer = Writer::new(buf);
    writer.bytes(&MAGIC);
    writer.u32(VERSION);
    writer.u32(0);
    writer.u64(0);
    writer.u64(0);
    body(&mut writer)?;
    let len = writer.finish()?;
    let payload_len = (len - HEADER_LEN) as u64;
    let checksum = buf.get(HEADER_LEN..len).map_or(0, checksum);
    if let Some(header) = buf.get_mut(16..32) {
        header[..8].copy_from_slice(&payload_len.to_le_bytes());
        header[8..].copy_from_slice(&checksum.to_le_bytes());
    }
    Ok(len)
}

/// Checks a snapshot's header, length and checksum and returns a reader over its payload.
pub fn open_snapshot(data: &[u8]) -> Result<Reader<'_>, SnapshotError> {
    let mut header = Reader::new(data);
    let magic = header.array::<8>()?;
    if magic != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = header.u32()?;
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    if header.u32()? != 0 {
        return Err(SnapshotError::Invalid { section: SectionId::TOP, what: "reserved header field" });
    }
    let payload_len = header.u64()?;
    let sum = header.u64()?;
    let payload = data.get(HEADER_LEN..).unwrap_or(&[]);
    if payload_len != payload.len() as u64 {
        return Err(SnapshotError::LengthMismatch { header: payload_len, actual: payload.len() as u64 });
    }
    if checksum(payload) != sum {
        return Err(SnapshotError::ChecksumMismatch);
    }
    Ok(Reader::new(payload))
}

/// FNV-1a, 64-bit, over `bytes` taken eight at a time (little-endian words, then the tail bytes): cheap enough
/// to run over a whole RAM image.
pub fn checksum(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut value = [0u8; 8];
        value.copy_from_slice(word);
        hash = (hash ^ u64::from_le_bytes(value)).wrapping_mul(PRIME);
    }
    for &byte in words.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    hash
}

/// Reads a snapshot (or one section of it); every read is bounds-checked.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    section: SectionId,
}

impl<'a> Reader<'a> {
    /// A reader of a bare payload (no header).
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, section: SectionId::TOP }
    }

    /// The section being read (for errors).
    pub fn section_id(&self) -> SectionId {
        self.section
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// An error for a value `what` that the component can never hold.
    pub fn invalid(&self, what: &'static str) -> SnapshotError {
        SnapshotError::Invalid { section: self.section, what }
    }

    /// An error for a snapshot of a machine built differently (`what` differs).
    pub fn mismatch(&self, what: &'static str) -> SnapshotError {
        SnapshotError::Mismatch { section: self.section, what }
    }

    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(len).ok_or(SnapshotError::Truncated { section: self.section })?;
        let bytes = self.data.get(self.pos..end).ok_or(SnapshotError::Truncated { section: self.section })?;
        self.pos = end;
        Ok(bytes)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut value = [0u8; N];
        value.copy_from_slice(self.bytes(N)?);
        Ok(value)
    }

    pub fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A `bool`: exactly 0 or 1.
    pub fn bool(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid("a flag that is neither 0 nor 1")),
        }
    }
    pub fn option_u64(&mut self) -> Result<Option<u64>, SnapshotError> {
        Ok(if self.bool()? { Some(self.u64()?) } else { None })
    }
    pub fn u64s<const N: usize>(&mut self) -> Result<[u64; N], SnapshotError> {
        let mut values = [0u64; N];
        for value in &mut values {
            *value = self.u64()?;
        }
        Ok(values)
    }
    pub fn u32s<const N: usize>(&mut self) -> Result<[u32; N], SnapshotError> {
        let mut values = [0u32; N];
        for value in &mut values {
            *value = self.u32()?;
        }
        Ok(values)
    }

    /// A count that must be at most `max`.
    pub fn count(&mut self, max: usize, what: &'static str) -> Result<usize, SnapshotError> {
        let count = self.u32()?;
        usize::try_from(count).ok().filter(|&count| count <= max).ok_or(self.invalid(what))
    }

    /// Whether the next section is `id` (without reading it).
    pub fn next_is(&self, id: SectionId) -> bool {
        let mut probe = self.clone();
        matches!((probe.array::<4>(), probe.u32()), (Ok(tag), Ok(index)) if SectionId::new(tag, index) == id)
    }

    /// Reads the header of the next section, which must be `id`, and answers a reader of its body alone.
    pub fn section(&mut self, id: SectionId) -> Result<Reader<'a>, SnapshotError> {
        let truncated = SnapshotError::Truncated { section: id };
        let tag = self.array::<4>().map_err(|_| truncated)?;
        let index = self.u32().map_err(|_| truncated)?;
        let found = SectionId::new(tag, index);
        if found != id {
            return Err(SnapshotError::UnexpectedSection { expected: id, found });
        }
        let length = self.u64().map_err(|_| truncated)?;
        let body = usize::try_from(length).ok().and_then(|length| self.bytes(length).ok()).ok_or(truncated)?;
        Ok(Reader { data: body, pos: 0, section: id })
    }

    /// Reads section `id` with `body`, which must read all of it.
    pub fn read_section<T>(
        &mut self,
        id: SectionId,
        body: impl FnOnce(&mut Reader<'a>) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let mut section = self.section(id)?;
        let value = body(&mut section)?;
        section.finish()?;
        Ok(value)
    }

    /// Succeeds when everything was read.
    pub fn finish(&self) -> Result<(), SnapshotError> {
        if self.remaining() != 0 {
            return Err(SnapshotError::TrailingBytes { section: self.section });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEMO: SectionId = SectionId::new(*b"DEMO", 3);

    fn demo(buf: &mut [u8]) -> Result<usize, SnapshotError> {
        write_snapshot(buf, |w| {
            w.section(DEMO, |w| {
                w.u64(0x1122_3344_5566_7788);
                w.bool(true);
                w.option_u64(Some(5));
                w.option_u64(None);
                Ok(())
            })
        })
    }

    fn read_demo(data: &[u8]) -> Result<(u64, bool, Option<u64>, Option<u64>), SnapshotError> {
        let mut reader = open_snapshot(data)?;
        let value = reader.read_section(DEMO, |r| Ok((r.u64()?, r.bool()?, r.option_u64()?, r.option_u64()?)))?;
        reader.finish()?;
        Ok(value)
    }

    #[test]
    fn a_snapshot_round_trips_and_measures_itself() {
        let needed = match demo(&mut []) {
            Err(SnapshotError::BufferTooSmall { needed }) => needed,
            other => panic!("an empty buffer measures: {other:?}"),
        };
        let mut buf = vec![0u8; needed];
        assert_eq!(demo(&mut buf), Ok(needed));
        assert_eq!(&buf[..8], b"TRPZSNAP");
        assert_eq!(read_demo(&buf), Ok((0x1122_3344_5566_7788, true, Some(5), None)));
    }

    #[test]
    fn damage_is_named() {
        let mut buf = vec![0u8; 256];
        let len = demo(&mut buf).unwrap();
        let good = &buf[..len];
        let mut bad = good.to_vec();
        bad[0] = b'X';
        assert_eq!(read_demo(&bad), Err(SnapshotError::BadMagic));
        let mut bad = good.to_vec();
        bad[8] = 9;
        assert_eq!(read_demo(&bad), Err(SnapshotError::UnsupportedVersion(9)));
        let mut bad = good.to_vec();
        bad[len - 1] ^= 1;
        assert_eq!(read_demo(&bad), Err(SnapshotError::ChecksumMismatch));
        assert!(matches!(read_demo(&good[..len - 1]), Err(SnapshotError::LengthMismatch { .. })));
        assert!(matches!(read_demo(&good[..10]), Err(SnapshotError::Truncated { .. })));
        // A flag of 2, with the checksum made right again: the hostile case.
        let mut bad = good.to_vec();
        bad[HEADER_LEN + 16 + 8] = 2;
        let sum = checksum(&bad[HEADER_LEN..]);
        bad[24..32].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            read_demo(&bad),
            Err(SnapshotError::Invalid { section: DEMO, what: "a flag that is neither 0 nor 1" })
        );
    }

    #[test]
    fn sections_must_come_as_expected_and_be_read_whole() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.section(DEMO, |w| {
            w.u32(7);
            Ok(())
        })
        .unwrap();
        let len = w.finish().unwrap();
        let mut r = Reader::new(&buf[..len]);
        let other = SectionId::new(*b"DEMO", 4);
        assert_eq!(
            r.clone().section(other).err(),
            Some(SnapshotError::UnexpectedSection { expected: other, found: DEMO })
        );
        assert_eq!(r.clone().read_section(DEMO, |r| r.u16()), Err(SnapshotError::TrailingBytes { section: DEMO }));
        assert_eq!(r.clone().read_section(DEMO, |r| r.u64()), Err(SnapshotError::Truncated { section: DEMO }));
        assert_eq!(r.read_section(DEMO, |r| r.u32()), Ok(7));
        assert!(r.finish().is_ok());
    }

    proptest! {
        /// Arbitrary bytes, and every truncation or one-byte change of a good snapshot, are refused without a
        /// panic.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128), cut in 0usize..64,
                                       at in 0usize..64, flip in 1u8..) {
            let _ = read_demo(&data);
            let mut buf = vec![0u8; 256];
            let len = demo(&mut buf).unwrap();
            prop_assert!(read_demo(&buf[..cut.min(len - 1)]).is_err());
            let mut bad = buf[..len].to_vec();
            bad[at % len] ^= flip;
            prop_assert!(read_demo(&bad).is_err());
        }
    }
}
