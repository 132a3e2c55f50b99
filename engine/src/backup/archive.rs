//! Exact row counts read from a pg_dump archive while it streams past.
//!
//! pg_dump writes every table's rows in COPY text format, where a row ends
//! with `\n` and a newline inside a value is escaped (`\n` as two bytes), so
//! the rows of a table are the newlines of its data, less the `\.` end
//! marker and the two blank lines pg_dump writes after it. Counting them on
//! the bytes runway already reads (to hash them) gives the rows of the dump
//! itself, in its snapshot, without a second scan of the database competing
//! with pg_dump for the server's cores.
//!
//! - [`ArchiveCounter`]: a custom-format archive (`-Fc`) fed chunk by chunk:
//!   header, table of contents, then one data block per table (zlib chunks).
//! - [`DataCounter`]: one data file of a directory-format archive (`-Fd`,
//!   `<dump id>.dat[.gz]`), fed as the file grows; [`directory_tables`] maps
//!   dump ids to tables from its `toc.dat` afterwards.
//!
//! Archive versions 1.12 to 1.15 (PostgreSQL 9.6 to 16) with zlib or no
//! compression are understood. Anything else (a newer archive version, lz4
//! or zstd) is reported as not countable, and the caller counts in the
//! snapshot instead: the counts stay exact either way.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::{GzDecoder, ZlibDecoder};

use super::manifest::TableRows;

/// `\.` and the two blank lines pg_dump writes after every table's rows.
const END_OF_DATA: &[u8] = b"\\.\n\n\n";
/// Newlines in [`END_OF_DATA`].
const END_NEWLINES: u64 = 3;

/// Block types of a custom-format archive.
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Counts newlines written into it and keeps the last bytes.
#[derive(Default)]
struct Newlines {
    newlines: u64,
    tail: [u8; END_OF_DATA.len()],
    tail_len: usize,
}

impl Write for Newlines {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.newlines += data.iter().fold(0u64, |n, &b| n + u64::from(b == b'\n'));
        let keep = END_OF_DATA.len();
        if data.len() >= keep {
            self.tail.copy_from_slice(&data[data.len() - keep..]);
            self.tail_len = keep;
        } else {
            let mut joined = self.tail[..self.tail_len].to_vec();
            joined.extend_from_slice(data);
            let from = joined.len().saturating_sub(keep);
            let kept = &joined[from..];
            self.tail[..kept.len()].copy_from_slice(kept);
            self.tail_len = kept.len();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Newlines {
    /// Rows of a finished table's data, or why they cannot be told.
    fn rows(&self) -> Result<u64, String> {
        if &self.tail[..self.tail_len] != END_OF_DATA || self.newlines < END_NEWLINES {
            return Err("table data does not end with the COPY end marker".into());
        }
        Ok(self.newlines - END_NEWLINES)
    }
}

/// How a table's data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zlib stream (custom format) or gzip file (directory format).
    Zlib,
}

/// Counts the rows of one table's data fed in pieces.
pub struct DataCounter {
    sink: Sink,
}

enum Sink {
    Plain(Newlines),
    Zlib(Box<ZlibDecoder<Newlines>>),
    Gzip(Box<GzDecoder<Newlines>>),
}

impl DataCounter {
    /// A counter for data compressed as `compression`; `gzip` for the files
    /// of a directory archive, zlib streams otherwise.
    pub fn new(compression: Compression, gzip: bool) -> Self {
        let sink = match (compression, gzip) {
            (Compression::None, _) => Sink::Plain(Newlines::default()),
            (Compression::Zlib, false) => Sink::Zlib(Box::new(ZlibDecoder::new(Newlines::default()))),
            (Compression::Zlib, true) => Sink::Gzip(Box::new(GzDecoder::new(Newlines::default()))),
        };
        Self { sink }
    }

    /// Feeds the next bytes of the data.
    pub fn push(&mut self, data: &[u8]) -> Result<(), String> {
        let written = match &mut self.sink {
            Sink::Plain(n) => n.write_all(data),
            Sink::Zlib(d) => d.write_all(data),
            Sink::Gzip(d) => d.write_all(data),
        };
        written.map_err(|e| format!("cannot decompress table data: {e}"))
    }

    /// The rows of the data fed, once it is complete.
    pub fn finish(self) -> Result<u64, String> {
        let newlines = match self.sink {
            Sink::Plain(n) => n,
            Sink::Zlib(d) => d.finish().map_err(|e| format!("cannot decompress table data: {e}"))?,
            Sink::Gzip(d) => d.finish().map_err(|e| format!("cannot decompress table data: {e}"))?,
        };
        newlines.rows()
    }
}

/// A TOC entry with data: `TABLE DATA` of `schema.table`.
#[derive(Debug, Clone)]
struct TableEntry {
    schema: String,
    table: String,
}

/// Where a custom-format archive is being read.
enum State {
    Header,
    Toc {
        remaining: u64,
    },
    BlockHeader,
    /// Inside a data block: the next chunk's length, or 0 for its end.
    ChunkLength,
    /// `remaining` bytes of the current chunk still to come.
    Chunk {
        remaining: usize,
    },
    /// Large objects: the next object's OID, or 0 for the block's end.
    BlobOid,
    BlobChunkLength,
    BlobChunk {
        remaining: usize,
    },
    Failed(String),
}

/// The table whose data block is being read.
struct Current {
    dump_id: i64,
    counter: DataCounter,
}

/// Row counts of a custom-format archive (`pg_dump -Fc`) fed as it is
/// written. Never fails the backup: a problem stops the counting and is
/// reported by [`ArchiveCounter::finish`].
pub struct ArchiveCounter {
    state: State,
    /// Bytes not parsed yet (only small fields wait here; chunk payloads
    /// are fed through without copying), from `pos` on.
    pending: Vec<u8>,
    pos: usize,
    /// Offset in the archive of `pending[0]`.
    offset: u64,
    /// Where the data blocks start (the header and TOC end), once known.
    toc_end: Option<u64>,
    int_size: usize,
    off_size: usize,
    minor: u8,
    compression: Compression,
    tables: HashMap<i64, TableEntry>,
    current: Option<Current>,
    counts: HashMap<i64, u64>,
}

impl Default for ArchiveCounter {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of counting a whole archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCounts {
    /// Tables whose data blocks were read to the end, with their rows.
    pub tables: Vec<TableRows>,
}

/// Not enough bytes yet to parse the next field.
struct Short;

/// A cursor over `pending` for the small fields of the header and the TOC.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Fields<'_> {
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.data.get(self.pos).ok_or(Short)?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let out = self.data.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(out)
    }

    /// pg_dump's `WriteInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, Short> {
        let negative = self.byte()? != 0;
        let size = self.int_size;
        let raw = self.bytes(size)?;
        let mut value: i64 = 0;
        for (i, b) in raw.iter().enumerate().take(8) {
            value |= i64::from(*b) << (8 * i);
        }
        Ok(if negative { -value } else { value })
    }

    /// pg_dump's `WriteStr`: a length (-1 for NULL), then the bytes.
    fn string(&mut self) -> Result<Option<String>, Short> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.bytes(len as usize)?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }
}

impl ArchiveCounter {
    pub fn new() -> Self {
        Self {
            state: State::Header,
            pending: Vec::new(),
            pos: 0,
            offset: 0,
            toc_end: None,
            int_size: 4,
            off_size: 8,
            minor: 0,
            compression: Compression::Zlib,
            tables: HashMap::new(),
            current: None,
            counts: HashMap::new(),
        }
    }

    /// Feeds the next bytes of the archive.
    pub fn push(&mut self, mut data: &[u8]) {
        loop {
            if matches!(self.state, State::Failed(_)) {
                return;
            }
            // Chunk payloads go straight to the decompressor: first what
            // waits in `pending`, then from `data`.
            if let State::Chunk { remaining } | State::BlobChunk { remaining } = self.state {
                let table_data = matches!(self.state, State::Chunk { .. });
                let waiting = self.pending.len() - self.pos;
                let payload = if waiting > 0 {
                    let n = remaining.min(waiting);
                    self.pos += n;
                    &self.pending[self.pos - n..self.pos]
                } else if !data.is_empty() {
                    self.pending.clear();
                    self.offset += self.pos as u64;
                    self.pos = 0;
                    let n = remaining.min(data.len());
                    self.offset += n as u64;
                    let (payload, rest) = data.split_at(n);
                    data = rest;
                    payload
                } else {
                    return;
                };
                let n = payload.len();
                if table_data {
                    let current = self.current.as_mut().expect("a data block is open");
                    if let Err(e) = current.counter.push(payload) {
                        self.fail(e);
                        return;
                    }
                }
                self.state = match (table_data, remaining - n) {
                    (true, 0) => State::ChunkLength,
                    (true, left) => State::Chunk { remaining: left },
                    (false, 0) => State::BlobChunkLength,
                    (false, left) => State::BlobChunk { remaining: left },
                };
                continue;
            }
            if self.parse_fields() {
                continue;
            }
            // The next field is incomplete: gather more bytes.
            self.pending.drain(..self.pos);
            self.offset += self.pos as u64;
            self.pos = 0;
            if data.is_empty() {
                return;
            }
            let take = data.len().min(64 * 1024);
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    fn fail(&mut self, why: String) {
        self.state = State::Failed(why);
        self.pending = Vec::new();
        self.pos = 0;
        self.current = None;
    }

    /// Parses whole fields from `pending` until one is incomplete or a chunk
    /// payload starts; true when it parsed any.
    fn parse_fields(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let pending = std::mem::take(&mut self.pending);
            let mut f = Fields { data: &pending, pos: self.pos, int_size: self.int_size };
            let step = match &self.state {
                State::Header => self.header(&mut f),
                State::Toc { remaining } => {
                    let remaining = *remaining;
                    self.toc_entry(&mut f, remaining)
                }
                State::BlockHeader => self.block_header(&mut f),
                State::ChunkLength => self.chunk_length(&mut f),
                State::BlobOid => f.int().map(|oid| {
                    self.state = if oid == 0 { State::BlockHeader } else { State::BlobChunkLength };
                    Ok(())
                }),
                State::BlobChunkLength => f.int().map(|len| match len {
                    0 => {
                        self.state = State::BlobOid;
                        Ok(())
                    }
                    n if n > 0 => {
                        self.state = State::BlobChunk { remaining: n as usize };
                        Ok(())
                    }
                    _ => Err("negative chunk length".to_owned()),
                }),
                State::Chunk { .. } | State::BlobChunk { .. } | State::Failed(_) => {
                    self.pending = pending;
                    return progressed;
                }
            };
            let pos = f.pos;
            self.pending = pending;
            match step {
                Ok(Ok(())) => {
                    self.pos = pos;
                    progressed = true;
                }
                Ok(Err(why)) => {
                    self.fail(why);
                    return true;
                }
                Err(Short) => return progressed,
            }
        }
    }

    fn header(&mut self, f: &mut Fields<'_>) -> Result<Result<(), String>, Short> {
        if f.bytes(5)? != b"PGDMP" {
            return Ok(Err("not a pg_dump archive".into()));
        }
        let (major, minor, _rev) = (f.byte()?, f.byte()?, f.byte()?);
        let int_size = f.byte()? as usize;
        let off_size = f.byte()? as usize;
        let format = f.byte()?;
        if major != 1 || !(12..=15).contains(&minor) {
            return Ok(Err(format!("archive version {major}.{minor} is not one runway reads")));
        }
        if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
            return Ok(Err(format!("unexpected integer sizes {int_size}/{off_size}")));
        }
        if format != 1 {
            return Ok(Err(format!("archive format {format} is not custom")));
        }
        f.int_size = int_size;
        let compression = if minor >= 15 {
            match f.byte()? {
                0 => Compression::None,
                1 => Compression::Zlib,
                other => return Ok(Err(format!("compression algorithm {other} is not one runway reads"))),
            }
        } else if f.int()? == 0 {
            Compression::None
        } else {
            Compression::Zlib
        };
        for _ in 0..7 {
            f.int()?; // creation time
        }
        for _ in 0..3 {
            f.string()?; // database name, server version, pg_dump version
        }
        let entries = f.int()?;
        if entries < 0 {
            return Ok(Err("negative TOC length".into()));
        }
        self.int_size = int_size;
        self.off_size = off_size;
        self.minor = minor;
        self.compression = compression;
        self.state = State::Toc { remaining: entries as u64 };
        if entries == 0 {
            self.state = State::BlockHeader;
            self.toc_end = Some(self.offset + f.pos as u64);
        }
        Ok(Ok(()))
    }

    fn toc_entry(&mut self, f: &mut Fields<'_>, remaining: u64) -> Result<Result<(), String>, Short> {
        let entry = read_toc_entry(f, self.minor)?;
        let _ = f.byte()?; // custom format: data offset flag ...
        f.bytes(self.off_size)?; // ... and offset
        if entry.desc == "TABLE DATA" {
            self.tables.insert(entry.dump_id, TableEntry { schema: entry.namespace, table: entry.tag });
        }
        self.state = if remaining <= 1 {
            self.toc_end = Some(self.offset + f.pos as u64);
            State::BlockHeader
        } else {
            State::Toc { remaining: remaining - 1 }
        };
        Ok(Ok(()))
    }

    fn block_header(&mut self, f: &mut Fields<'_>) -> Result<Result<(), String>, Short> {
        let kind = f.byte()?;
        let dump_id = f.int()?;
        match kind {
            BLK_DATA => {
                self.current = Some(Current { dump_id, counter: DataCounter::new(self.compression, false) });
                self.state = State::ChunkLength;
            }
            BLK_BLOBS => self.state = State::BlobOid,
            other => return Ok(Err(format!("unknown data block type {other}"))),
        }
        Ok(Ok(()))
    }

    fn chunk_length(&mut self, f: &mut Fields<'_>) -> Result<Result<(), String>, Short> {
        let len = f.int()?;
        if len < 0 {
            return Ok(Err("negative chunk length".into()));
        }
        if len > 0 {
            self.state = State::Chunk { remaining: len as usize };
            return Ok(Ok(()));
        }
        let current = self.current.take().expect("a data block is open");
        match current.counter.finish() {
            Ok(rows) => {
                self.counts.insert(current.dump_id, rows);
            }
            // Data of an entry that is not TABLE DATA (none today) is not ours to judge.
            Err(why) if self.tables.contains_key(&current.dump_id) => return Ok(Err(why)),
            Err(_) => {}
        }
        self.state = State::BlockHeader;
        Ok(Ok(()))
    }

    /// Where the archive's data blocks start: the header and table of
    /// contents are the bytes before. Known once they were fed.
    pub fn toc_end(&self) -> Option<u64> {
        self.toc_end
    }

    /// Every table whose data block was read to its end. `Err` says why the
    /// archive could not be counted (the caller counts in the snapshot).
    pub fn finish(self) -> Result<ArchiveCounts, String> {
        match self.state {
            State::Failed(why) => return Err(why),
            State::BlockHeader if self.pos == self.pending.len() => {}
            _ => return Err("the archive ended inside a block".into()),
        }
        let mut tables: Vec<TableRows> = self
            .tables
            .into_iter()
            .filter_map(|(id, t)| {
                self.counts.get(&id).map(|rows| TableRows {
                    schema: t.schema,
                    table: t.table,
                    rows: *rows as i64,
                })
            })
            .collect();
        tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        Ok(ArchiveCounts { tables })
    }
}

/// The fields of a TOC entry runway needs.
struct TocEntry {
    dump_id: i64,
    desc: String,
    namespace: String,
    tag: String,
}

/// Reads one TOC entry up to (not including) its format-specific extra part.
fn read_toc_entry(f: &mut Fields<'_>, minor: u8) -> Result<TocEntry, Short> {
    let dump_id = f.int()?;
    let _had_dumper = f.int()?;
    let _table_oid = f.string()?;
    let _oid = f.string()?;
    let tag = f.string()?.unwrap_or_default();
    let desc = f.string()?.unwrap_or_default();
    let _section = f.int()?;
    let _defn = f.string()?;
    let _drop = f.string()?;
    let _copy = f.string()?;
    let namespace = f.string()?.unwrap_or_default();
    let _tablespace = f.string()?;
    if minor >= 14 {
        let _table_am = f.string()?;
    }
    let _owner = f.string()?;
    let _with_oids = f.string()?;
    while f.string()?.is_some() {} // dependencies, ended by NULL
    Ok(TocEntry { dump_id, desc, namespace, tag })
}

/// The tables of a directory-format archive by the dump id in their data
/// file's name, from its `toc.dat` (read once pg_dump has finished).
pub fn directory_tables(toc: &[u8]) -> Result<HashMap<i64, TableRows>, String> {
    let mut f = Fields { data: toc, pos: 0, int_size: 4 };
    let short = |_| "toc.dat ends early".to_owned();
    if f.bytes(5).map_err(short)? != b"PGDMP" {
        return Err("toc.dat is not a pg_dump archive".into());
    }
    let (major, minor, _rev) = (f.byte().map_err(short)?, f.byte().map_err(short)?, f.byte().map_err(short)?);
    let int_size = f.byte().map_err(short)? as usize;
    let _off_size = f.byte().map_err(short)?;
    // The format byte of a directory archive's toc.dat (3 with pg_dump 15)
    // is not checked: its entries end with a file name either way.
    let _format = f.byte().map_err(short)?;
    if major != 1 || !(12..=15).contains(&minor) || !(1..=8).contains(&int_size) {
        return Err(format!("toc.dat version {major}.{minor} is not one runway reads"));
    }
    f.int_size = int_size;
    if minor >= 15 {
        f.byte().map_err(short)?;
    } else {
        f.int().map_err(short)?;
    }
    for _ in 0..7 {
        f.int().map_err(short)?;
    }
    for _ in 0..3 {
        f.string().map_err(short)?;
    }
    let entries = f.int().map_err(short)?;
    let mut tables = HashMap::new();
    for _ in 0..entries.max(0) {
        let entry = read_toc_entry(&mut f, minor).map_err(short)?;
        let _file = f.string().map_err(short)?; // directory format: the data file's name
        if entry.desc == "TABLE DATA" {
            tables.insert(entry.dump_id, TableRows { schema: entry.namespace, table: entry.tag, rows: 0 });
        }
    }
    Ok(tables)
}

/// The dump id and compression of a directory archive's data file
/// (`3356.dat.gz`, `3356.dat`); `None` for other files (`toc.dat`, blobs).
pub fn data_file(name: &str) -> Option<(i64, Compression)> {
    let (id, rest) = name.split_once('.')?;
    let compression = match rest {
        "dat" => Compression::None,
        "dat.gz" => Compression::Zlib,
        _ => return None,
    };
    Some((id.parse().ok()?, compression))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg_dump's `WriteInt` with 4-byte ints.
    fn int(v: i64) -> Vec<u8> {
        let mut out = vec![u8::from(v < 0)];
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        out
    }

    fn string(s: Option<&str>) -> Vec<u8> {
        match s {
            None => int(-1),
            Some(s) => [int(s.len() as i64), s.as_bytes().to_vec()].concat(),
        }
    }

    fn entry(id: i64, desc: &str, schema: &str, tag: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(int(id));
        out.extend(int(i64::from(desc == "TABLE DATA")));
        out.extend(string(Some("0")));
        out.extend(string(Some("0")));
        out.extend(string(Some(tag)));
        out.extend(string(Some(desc)));
        out.extend(int(2));
        for s in [Some(""), Some(""), None, Some(schema), Some(""), Some("heap"), Some("me"), Some("false")] {
            out.extend(string(s));
        }
        out.extend(string(Some("1")));
        out.extend(string(None));
        out.push(1); // offset not set
        out.extend([0u8; 8]);
        out
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A small custom-format archive with two tables and a large object.
    fn archive(compressed: bool) -> Vec<u8> {
        let mut out = b"PGDMP".to_vec();
        out.extend([1, 14, 0, 4, 8, 1]);
        out.extend(int(if compressed { -1 } else { 0 }));
        for v in [1, 2, 3, 4, 5, 2025, 0] {
            out.extend(int(v));
        }
        for s in ["app", "15.8", "15.8"] {
            out.extend(string(Some(s)));
        }
        out.extend(int(4));
        out.extend(entry(10, "TABLE", "public", "a"));
        out.extend(entry(11, "TABLE DATA", "public", "a"));
        out.extend(entry(12, "TABLE DATA", "we ird", "B\"c"));
        out.extend(entry(13, "BLOBS", "", "BLOBS"));
        let block = |out: &mut Vec<u8>, id: i64, data: &[u8]| {
            out.push(BLK_DATA);
            out.extend(int(id));
            let payload = if compressed { zlib(data) } else { data.to_vec() };
            for chunk in payload.chunks(7) {
                out.extend(int(chunk.len() as i64));
                out.extend_from_slice(chunk);
            }
            out.extend(int(0));
        };
        block(&mut out, 11, b"1\tline\\nbreak\n2\t\\N\n3\tx\n\\.\n\n\n");
        out.push(BLK_BLOBS);
        out.extend(int(13));
        out.extend(int(16384));
        out.extend(int(3));
        out.extend(b"\n\n\n");
        out.extend(int(0));
        out.extend(int(0));
        block(&mut out, 12, b"\\.\n\n\n");
        out
    }

    fn count(archive: &[u8], piece: usize) -> Result<ArchiveCounts, String> {
        let mut counter = ArchiveCounter::new();
        for chunk in archive.chunks(piece) {
            counter.push(chunk);
        }
        counter.finish()
    }

    #[test]
    fn counts_rows_in_any_split() {
        for compressed in [true, false] {
            let data = archive(compressed);
            for piece in [1, 2, 3, 5, 64, 1 << 20] {
                let counts = count(&data, piece).expect("counts");
                let rows: Vec<(String, i64)> =
                    counts.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
                assert_eq!(
                    rows,
                    [("public.a".to_owned(), 3), ("we ird.B\"c".to_owned(), 0)],
                    "piece {piece}, compressed {compressed}"
                );
            }
        }
    }

    #[test]
    fn knows_where_the_table_of_contents_ends() {
        let data = archive(true);
        let first_block = data.windows(6).position(|w| w == [BLK_DATA, 0, 11, 0, 0, 0]).expect("block 11");
        for piece in [1, 7, 4096] {
            let mut counter = ArchiveCounter::new();
            for chunk in data.chunks(piece) {
                counter.push(chunk);
            }
            assert_eq!(counter.toc_end(), Some(first_block as u64), "piece {piece}");
        }
    }

    #[test]
    fn damage_is_reported_not_guessed() {
        let data = archive(false);
        // Cut off inside a block.
        assert!(count(&data[..data.len() - 10], 4096).is_err());
        // A changed end marker.
        let mut bad = data.clone();
        let at = bad.windows(3).position(|w| w == b"\\.\n").expect("marker");
        bad[at] = b'x';
        assert!(count(&bad, 4096).is_err());
        // Not an archive at all.
        assert!(count(b"PGDMX and more bytes than a header", 4096).is_err());
        // A newer archive version.
        let mut newer = data;
        newer[6] = 16;
        assert!(count(&newer, 4096).unwrap_err().contains("1.16"));
    }

    #[test]
    fn data_file_names() {
        assert_eq!(data_file("3356.dat.gz"), Some((3356, Compression::Zlib)));
        assert_eq!(data_file("3356.dat"), Some((3356, Compression::None)));
        assert_eq!(data_file("toc.dat"), None);
        assert_eq!(data_file("blob_16384.dat.gz"), None);
        assert_eq!(data_file("3356.dat.lz4"), None);
    }
}
