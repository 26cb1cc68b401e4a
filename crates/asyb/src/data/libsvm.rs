//! LIBSVM / SVMlight text files: a strict, allocation-free reader and an atomic writer.
//! Owns the text format (the parse of a piece of lines, the merge of the pieces in file
//! order with the auto index base) and the mapping of every bad token to an
//! [`Error::Parse`] with its 1-based line and byte column; the stream, its compression
//! and the parallel pipeline are [`super::lines`]'s. Knows nothing of losses,
//! of the parameter server or of how the labels will be used: labels are stored raw.
//!
//! One line is `label [qid:N] idx:val idx:val ... [# comment]`. The parse of one line is
//! [`parse_line`], a pure function over a byte slice that appends to caller-owned
//! arrays; the reader cuts the stream into pieces at line breaks, parses the pieces on
//! worker threads and merges them in file order, with the result (error included) of a
//! line-by-line read whatever the thread count.

use std::fs::File;
use std::io::{BufRead, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;

#[cfg(test)]
use super::lines::stream_error;
use super::lines::{self, open, Compression, READ_CHUNK_BYTES};
pub use super::lines::{default_read_threads, is_stdin};
use crate::data::Dataset;
use crate::io::{atomic_write, io_err};
use crate::{Error, Result};

/// How feature indices in the file are numbered. The [`Dataset`] is always 0-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexBase {
    /// 0-based when any row holds index 0, else 1-based (LIBSVM's own convention).
    #[default]
    Auto,
    Zero,
    One,
}

/// What a label must look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelRule {
    /// Any finite number (regression).
    #[default]
    Any,
    /// -1, 0 or +1, written in any numeric form (`+1`, `1.0`, `-1`).
    Binary,
    /// A non-negative integer (multiclass), exactly representable as `f32`.
    Class,
}

/// Options of [`read_libsvm`]. The default is strict, auto-based and infers the feature
/// count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub index_base: IndexBase,
    /// Number of features d; an index `>= d` (after the base shift) is an error. When
    /// `None`, d is the largest index + 1.
    pub features: Option<usize>,
    /// Count and skip lines that do not parse instead of failing on the first one.
    /// Whole-file problems (no rows, no features, unreadable stream) still fail.
    pub skip_bad_lines: bool,
    pub labels: LabelRule,
}

/// What [`read_libsvm`] saw besides the data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Data rows kept.
    pub rows: usize,
    /// Bad lines skipped (only with [`ReadOptions::skip_bad_lines`]).
    pub skipped_lines: u64,
    /// The error message of the first skipped line.
    pub first_skipped: Option<String>,
    /// Whether the file was read as 1-based.
    pub index_base_one: bool,
    /// Bytes of text parsed, after decompression.
    pub bytes: u64,
}

/// Reads a LIBSVM file (plain or compressed) into a [`Dataset`] with 0-based indices,
/// raw `f32` labels and, for all-ones data, no value array. Parses on
/// [`default_read_threads`] threads.
pub fn read_libsvm(path: &Path, opts: &ReadOptions) -> Result<(Dataset, ReadReport)> {
    read_libsvm_with_threads(path, opts, default_read_threads())
}

/// [`read_libsvm`] on `threads` parser threads (0 counts as 1), beside the calling
/// thread, which reads and decompresses. The result, error included, is the same for
/// every thread count.
pub fn read_libsvm_with_threads(
    path: &Path,
    opts: &ReadOptions,
    threads: usize,
) -> Result<(Dataset, ReadReport)> {
    let (source, compression) = open(path, "LIBSVM")?;
    read_parallel(source, compression, path, opts, READ_CHUNK_BYTES, threads)
}

/// Reads the lines of an uncompressed LIBSVM file that start in bytes `[start, end)`:
/// the range is moved to line breaks (a line belongs to the range holding its first
/// byte), so ranges that cut a file into pieces read every line exactly once. Errors
/// name the line by its number in the whole file.
pub fn read_libsvm_range(
    path: &Path,
    start: u64,
    end: u64,
    opts: &ReadOptions,
) -> Result<(Dataset, ReadReport)> {
    let (_, compression) = open(path, "LIBSVM")?;
    if compression != Compression::Plain {
        return Err(Error::Data {
            path: path.into(),
            reason: format!(
                "a {} file cannot be split by byte ranges: give an uncompressed file, a cache, or one file per rank",
                compression.name()
            ),
        });
    }
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let a = line_start_at_or_after(&mut file, path, start.min(len), len)?;
    let b = line_start_at_or_after(&mut file, path, end.min(len), len)?.max(a);
    file.seek(SeekFrom::Start(a))
        .map_err(|e| Error::io(path, e))?;
    let piece = file.take(b - a);
    let r = read_parallel(
        piece,
        Compression::Plain,
        path,
        opts,
        READ_CHUNK_BYTES,
        default_read_threads(),
    );
    match r {
        Err(Error::Parse {
            path,
            line,
            col,
            reason,
        }) => {
            // Only on error: count the lines before the range.
            let before = count_lines(&path, a)?;
            Err(Error::Parse {
                path,
                line: line + before,
                col,
                reason,
            })
        }
        other => other,
    }
}

/// The first position `>= pos` that starts a line (`len` if none).
fn line_start_at_or_after(file: &mut File, path: &Path, pos: u64, len: u64) -> Result<u64> {
    if pos == 0 || pos >= len {
        return Ok(pos);
    }
    file.seek(SeekFrom::Start(pos - 1))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut at = pos - 1;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(len),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
}

/// Line breaks in the first `bytes` bytes of `path`.
fn count_lines(path: &Path, bytes: u64) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file.take(bytes));
    let mut lines = 0u64;
    loop {
        let buf = r.fill_buf().map_err(|e| Error::io(path, e))?;
        if buf.is_empty() {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', buf).count() as u64;
        let n = buf.len();
        r.consume(n);
    }
}

/// Writes `ds` as LIBSVM text, atomically: 1-based indices, labels and values in their
/// shortest form that reads back to the same `f32` (`:1` for a value of 1). Fails,
/// writing nothing, when a label or value is not finite, since the reader would reject
/// the file.
pub fn write_libsvm(path: &Path, ds: &Dataset) -> Result<()> {
    if let Some(i) = ds.labels.iter().position(|l| !l.is_finite()) {
        return Err(Error::Data {
            path: path.to_path_buf(),
            reason: format!("row {i} has a non-finite label; LIBSVM text cannot hold it"),
        });
    }
    if let Some(k) = ds
        .values
        .as_ref()
        .and_then(|v| v.iter().position(|x| !x.is_finite()))
    {
        return Err(Error::Data {
            path: path.to_path_buf(),
            reason: format!("entry {k} has a non-finite value; LIBSVM text cannot hold it"),
        });
    }
    atomic_write(path, |w| {
        let mut out = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
        for i in 0..ds.rows() {
            let row = ds.row(i);
            format_row(&mut out, ds.labels[i], row.indices, row.values);
            if out.len() >= WRITE_CHUNK_BYTES {
                w.write_all(&out).map_err(io_err(path))?;
                out.clear();
            }
        }
        w.write_all(&out).map_err(io_err(path))
    })
}

/// Output is staged in a buffer of this size so that the `dyn Write` behind
/// [`atomic_write`] sees few, large writes.
pub(crate) const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Appends one LIBSVM line (with its newline). `indices` are 0-based and written 1-based;
/// `values == None` means every value is 1.
pub(crate) fn format_row(out: &mut Vec<u8>, label: f32, indices: &[u32], values: Option<&[f32]>) {
    let mut ibuf = itoa::Buffer::new();
    push_f32(out, label);
    for (k, &f) in indices.iter().enumerate() {
        out.push(b' ');
        // u64: index u32::MAX is written as 4294967296.
        out.extend_from_slice(ibuf.format(u64::from(f) + 1).as_bytes());
        out.push(b':');
        match values.and_then(|v| v.get(k)) {
            Some(&v) => push_f32(out, v),
            None => out.push(b'1'),
        }
    }
    out.push(b'\n');
}

/// Shortest round-trip decimal (Rust's `Display` for floats), with the common binary
/// values special-cased because they dominate CTR-like data.
fn push_f32(out: &mut Vec<u8>, v: f32) {
    if v == 1.0 {
        out.push(b'1');
    } else if v == 0.0 && v.is_sign_positive() {
        out.push(b'0');
    } else if v == -1.0 {
        out.extend_from_slice(b"-1");
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// What a parser made of one piece of lines.
#[derive(Default)]
struct Piece {
    /// Lines in the piece (up to the first bad one when bad lines are fatal).
    lines: u64,
    csr: Csr,
    /// Every value in `csr` is 1.
    ones: bool,
    /// Under [`IndexBase::Auto`]: the piece-local line of the first row with index 0,
    /// after which the piece was parsed as 0-based.
    zero_line: Option<u64>,
    /// Rows accepted under `Undecided` whose index equals the feature count, piece-local.
    at_limit: Vec<AtLimit>,
    /// Lines rejected.
    errors: u64,
    first_error: Option<FirstError>,
}

/// The first bad line of a piece, piece-local.
struct FirstError {
    line: u64,
    /// Where the line is in the piece's text, to judge it again as 0-based.
    span: std::ops::Range<usize>,
    /// It was judged before the base was known.
    undecided: bool,
    error: LineError,
}

impl Piece {
    /// Parses the piece as if no earlier piece held index 0, like [`Builder::line`]
    /// would from a fresh start; [`Builder::merge`] corrects what that assumption got
    /// wrong, which needs only the rows at the feature limit and the first bad line.
    fn parse(&mut self, text: &[u8], opts: &ReadOptions) {
        self.csr.clear();
        self.at_limit.clear();
        self.zero_line = None;
        self.errors = 0;
        self.first_error = None;
        let mut rules = LineRules {
            base: initial_base(opts.index_base),
            features: opts.features.map(|d| d as u64),
            labels: opts.labels,
        };
        let csr = &mut self.csr;
        let mut line_no = 0u64;
        let mut start = 0;
        while start < text.len() {
            let rest = text.get(start..).unwrap_or_default();
            let end = memchr::memchr(b'\n', rest).map_or(text.len(), |p| start + p);
            line_no += 1;
            let line = text.get(start..end).unwrap_or_default();
            match parse_line(line, &rules, &mut csr.indices, &mut csr.values) {
                Ok(Parsed::Blank) => {}
                Ok(Parsed::Row {
                    label,
                    saw_zero,
                    at_limit_col,
                }) => {
                    csr.labels.push(label);
                    csr.indptr.push(csr.indices.len());
                    if let Some(col) = at_limit_col {
                        self.at_limit.push(AtLimit {
                            row: csr.labels.len() - 1,
                            line: line_no,
                            col,
                        });
                    }
                    if saw_zero && rules.base == LineBase::Undecided {
                        rules.base = LineBase::Zero;
                        self.zero_line = Some(line_no);
                    }
                }
                Err(error) => {
                    self.errors += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(FirstError {
                            line: line_no,
                            span: start..end,
                            undecided: rules.base == LineBase::Undecided,
                            error,
                        });
                    }
                    if !opts.skip_bad_lines {
                        break;
                    }
                }
            }
            start = end + 1;
        }
        self.lines = line_no;
        self.ones = csr.values.iter().all(|&v| v == 1.0);
    }
}

/// The LIBSVM line format for the reader's pipeline ([`lines::read_pieces`]).
struct Libsvm<'a> {
    opts: &'a ReadOptions,
}

impl lines::LineFormat for Libsvm<'_> {
    type Piece = Piece;
    fn parse(&self, text: &[u8], piece: &mut Piece) {
        piece.parse(text, self.opts);
    }
    fn lines(piece: &Piece) -> u64 {
        piece.lines
    }
}

impl lines::Merge<Piece> for Builder<'_> {
    fn merge(&mut self, text: &[u8], piece: &mut Piece, lines_before: u64) -> Result<()> {
        Builder::merge(self, text, piece, lines_before)
    }
}

/// The parallel read of LIBSVM text: [`lines::read_pieces`] with this format.
fn read_parallel(
    source: impl Read,
    compression: Compression,
    path: &Path,
    opts: &ReadOptions,
    chunk_bytes: usize,
    threads: usize,
) -> Result<(Dataset, ReadReport)> {
    let mut builder = Builder::new(path, opts);
    builder.ones = true;
    let format = Libsvm { opts };
    let (builder, bytes) = lines::read_pieces(
        source,
        compression,
        path,
        &format,
        builder,
        chunk_bytes,
        threads,
    )?;
    builder.finish(bytes)
}

/// The sequential read loop, one line after the other on the calling thread: the
/// reference that [`read_parallel`] must match, with the chunk size as a parameter so
/// tests can put line breaks on every possible chunk boundary.
#[cfg(test)]
fn read_stream(
    mut source: impl Read,
    compression: Compression,
    path: &Path,
    opts: &ReadOptions,
    chunk_bytes: usize,
) -> Result<(Dataset, ReadReport)> {
    let mut builder = Builder::new(path, opts);
    let mut buf = vec![0u8; chunk_bytes.max(1)];
    let mut len = 0usize;
    let mut lines_done = 0u64;
    let mut bytes = 0u64;
    loop {
        let mut eof = false;
        while len < buf.len() {
            let free = buf.get_mut(len..).unwrap_or_default();
            match source.read(free) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    len += n;
                    bytes += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(path, compression, e)),
            }
        }
        let filled = buf.get(..len).unwrap_or_default();
        if eof {
            builder.parse_lines(filled, lines_done)?;
            break;
        }
        match memchr::memrchr(b'\n', filled) {
            Some(p) => {
                let complete = filled.get(..=p).unwrap_or_default();
                lines_done += builder.parse_lines(complete, lines_done)?;
                buf.copy_within(p + 1..len, 0);
                len -= p + 1;
            }
            // One line longer than the buffer: grow rather than split it.
            None => buf.resize(buf.len() * 2, 0),
        }
    }
    builder.finish(bytes)
}

/// The index base a line is parsed under. `Undecided` is [`IndexBase::Auto`] before any
/// row with index 0 has been seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineBase {
    Zero,
    One,
    Undecided,
}

/// Everything [`parse_line`] needs to judge one line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineRules {
    pub base: LineBase,
    pub features: Option<u64>,
    pub labels: LabelRule,
}

/// A line that parsed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Parsed {
    /// Blank or comment only.
    Blank,
    Row {
        label: f32,
        /// The row holds index 0, so an `Undecided` file is 0-based.
        saw_zero: bool,
        /// Under `Undecided` with a feature count d: column of an index equal to d, which
        /// is in range only if the file turns out 1-based.
        at_limit_col: Option<u64>,
    },
}

/// Why a line did not parse: 1-based byte column of the offending token and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineError {
    pub col: u64,
    pub reason: String,
}

/// Parses one line (without its `\n`) and appends its entries, raw indices as written in
/// the file, to `indices` and `values`. On error nothing is appended.
pub(crate) fn parse_line(
    line: &[u8],
    rules: &LineRules,
    indices: &mut Vec<u32>,
    values: &mut Vec<f32>,
) -> std::result::Result<Parsed, LineError> {
    let start = indices.len();
    let parsed = parse_line_inner(line, rules, indices, values);
    if parsed.is_err() {
        indices.truncate(start);
        values.truncate(start);
    }
    parsed
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A token of a line: `start..end`, the position of its first `:`, if any, and the
/// value of what precedes that `:` when it is 1 to 10 digits.
struct Token {
    start: usize,
    end: usize,
    colon: Option<usize>,
    digits: Option<u64>,
}

/// The next space- or tab-separated token at or after `*pos`. One pass finds its end, its
/// `:` and the value of a plain index before it, since this runs once per stored entry on
/// tokens of a few bytes, where a vectorized search or a second pass costs more than the
/// scan.
fn next_token(line: &[u8], pos: &mut usize) -> Option<Token> {
    let mut i = *pos;
    while line.get(i).is_some_and(|&b| is_blank(b)) {
        i += 1;
    }
    let start = i;
    let (mut value, mut plain) = (0u64, true);
    let mut colon = None;
    while let Some(&b) = line.get(i) {
        let d = b.wrapping_sub(b'0');
        if d < 10 {
            value = value.wrapping_mul(10).wrapping_add(u64::from(d));
        } else if b == b':' {
            colon = Some(i);
            break;
        } else if is_blank(b) {
            break;
        } else {
            plain = false;
        }
        i += 1;
    }
    let len = i - start;
    let digits = (colon.is_some() && plain && (1..=10).contains(&len)).then_some(value);
    if colon.is_some() {
        while line.get(i).is_some_and(|&b| !is_blank(b)) {
            i += 1;
        }
    }
    *pos = i;
    (i > start).then_some(Token {
        start,
        end: i,
        colon,
        digits,
    })
}

fn err(col0: usize, reason: String) -> LineError {
    LineError {
        col: col0 as u64 + 1,
        reason,
    }
}

fn parse_line_inner(
    line: &[u8],
    rules: &LineRules,
    indices: &mut Vec<u32>,
    values: &mut Vec<f32>,
) -> std::result::Result<Parsed, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = match memchr::memchr(b'#', line) {
        Some(p) => line.get(..p).unwrap_or_default(),
        None => line,
    };
    let mut pos = 0;
    let Some(Token {
        start: ls, end: le, ..
    }) = next_token(line, &mut pos)
    else {
        return Ok(Parsed::Blank);
    };
    let label_tok = line.get(ls..le).unwrap_or_default();
    let label = parse_label(label_tok, rules.labels).map_err(|r| err(ls, r))?;

    let mut base = rules.base;
    let mut saw_zero = false;
    let mut at_limit_col = None;
    let mut prev: Option<u32> = None;
    let mut first = true;
    while let Some(Token {
        start: ts,
        end: te,
        colon,
        digits,
    }) = next_token(line, &mut pos)
    {
        let tok = line.get(ts..te).unwrap_or_default();
        if first && tok.starts_with(b"qid:") {
            first = false;
            continue;
        }
        first = false;
        let Some(c) = colon.map(|p| p - ts) else {
            return Err(err(
                ts,
                format!("expected index:value, found '{}'", show(tok)),
            ));
        };
        let idx_tok = tok.get(..c).unwrap_or_default();
        let val_tok = tok.get(c + 1..).unwrap_or_default();
        let raw = match digits.and_then(|v| u32::try_from(v).ok()) {
            Some(raw) => raw,
            None => parse_index(idx_tok).map_err(|r| err(ts, r))?,
        };

        if raw == 0 {
            match base {
                LineBase::One => {
                    return Err(err(ts, "feature index 0 in a 1-based file".to_string()));
                }
                // Indices strictly increase, so a 0 can only be first and decides the
                // rest of this line before any range check has run.
                LineBase::Undecided => {
                    base = LineBase::Zero;
                    saw_zero = true;
                }
                LineBase::Zero => saw_zero = true,
            }
        }
        if let Some(p) = prev {
            if raw == p {
                return Err(err(ts, format!("duplicate feature index {raw}")));
            }
            if raw < p {
                return Err(err(
                    ts,
                    format!("feature indices must be strictly increasing: {raw} after {p}"),
                ));
            }
        }
        prev = Some(raw);
        if let Some(d) = rules.features {
            let raw = u64::from(raw);
            match base {
                LineBase::Zero if raw >= d => {
                    return Err(err(ts, out_of_range(raw, d, LineBase::Zero)));
                }
                LineBase::One if raw > d => {
                    return Err(err(ts, out_of_range(raw, d, LineBase::One)));
                }
                LineBase::Undecided if raw > d => {
                    return Err(err(ts, out_of_range(raw, d, LineBase::Undecided)));
                }
                LineBase::Undecided if raw == d => at_limit_col = Some(ts as u64 + 1),
                _ => {}
            }
        }
        let value = parse_value(val_tok).map_err(|r| err(ts + c + 1, r))?;
        indices.push(raw);
        values.push(value);
    }
    Ok(Parsed::Row {
        label,
        saw_zero,
        at_limit_col,
    })
}

pub(crate) fn out_of_range(raw: u64, features: u64, base: LineBase) -> String {
    match base {
        LineBase::Zero => format!(
            "feature index {raw} is out of range for {features} features \
             (0-based indices must be < {features})"
        ),
        LineBase::One => format!(
            "feature index {raw} is out of range for {features} features \
             (1-based indices must be <= {features})"
        ),
        LineBase::Undecided => {
            format!("feature index {raw} is out of range for {features} features")
        }
    }
}

/// A token for an error message: lossy UTF-8, cut so that a garbage line cannot make a
/// megabyte-long message.
fn show(tok: &[u8]) -> String {
    const MAX: usize = 40;
    match tok.get(..MAX) {
        Some(head) if tok.len() > MAX => format!("{}...", String::from_utf8_lossy(head)),
        _ => String::from_utf8_lossy(tok).into_owned(),
    }
}

/// The largest exactly representable integer in `f32`: bigger class ids would collide.
const MAX_CLASS: f64 = 16_777_216.0;

fn parse_label(tok: &[u8], rule: LabelRule) -> std::result::Result<f32, String> {
    if memchr::memchr(b':', tok).is_some() {
        return Err(format!(
            "missing label: the line starts with the feature '{}'",
            show(tok)
        ));
    }
    let v: f64 = match small_int(tok) {
        Some(v) => f64::from(v),
        None => {
            fast_float2::parse(tok).map_err(|_| format!("label '{}' is not a number", show(tok)))?
        }
    };
    if !v.is_finite() {
        return Err(format!("label '{}' is not a finite number", show(tok)));
    }
    let label = v as f32;
    if !label.is_finite() {
        return Err(format!("label '{}' is out of the f32 range", show(tok)));
    }
    match rule {
        LabelRule::Any => {}
        LabelRule::Binary => {
            if v != -1.0 && v != 0.0 && v != 1.0 {
                return Err(format!(
                    "label {} is not a binary label (expected -1, 0 or +1; for more \
                     classes use --loss softmax, for a real target --loss squared or huber)",
                    show(tok)
                ));
            }
        }
        LabelRule::Class => {
            if v < 0.0 || v.fract() != 0.0 || v > MAX_CLASS {
                return Err(format!(
                    "label {} is not a class label (expected a non-negative integer \
                     up to {MAX_CLASS})",
                    show(tok)
                ));
            }
        }
    }
    Ok(label)
}

/// Digits only: no sign, no spaces, no exponent. Written by hand because this runs once
/// per stored entry and `str::parse` would need a UTF-8 check first.
fn parse_index(tok: &[u8]) -> std::result::Result<u32, String> {
    if tok.is_empty() {
        return Err("missing feature index before ':'".to_string());
    }
    let (negative, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, tok),
    };
    let mut v: u64 = 0;
    let mut ok = !digits.is_empty();
    for &b in digits {
        if !b.is_ascii_digit() {
            ok = false;
            break;
        }
        // Saturates just above u32::MAX so that long digit strings cannot overflow.
        v = (v * 10 + u64::from(b - b'0')).min(u64::from(u32::MAX) + 1);
    }
    if !ok {
        return Err(format!(
            "feature index '{}' is not a non-negative integer",
            show(tok)
        ));
    }
    if negative {
        return Err(format!("feature index {} is negative", show(tok)));
    }
    u32::try_from(v).map_err(|_| {
        format!(
            "feature index {} is too large (largest allowed: {})",
            show(tok),
            u32::MAX
        )
    })
}

/// `[+-]` and at most 7 digits: an integer below 2^24, exact in `f32` and `f64`, so this
/// is what any correct parser returns (`-0` included). Most labels and values of CTR-like
/// files (`1`, `0`, `-1`) are such, and this is several times cheaper than the general
/// parse.
fn small_int(tok: &[u8]) -> Option<f32> {
    let (negative, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, tok),
    };
    if digits.is_empty() || digits.len() > 7 {
        return None;
    }
    let mut v = 0u32;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    // Exact: v < 10^7 < 2^24.
    let v = v as f32;
    Some(if negative { -v } else { v })
}

fn parse_value(tok: &[u8]) -> std::result::Result<f32, String> {
    if let Some(v) = small_int(tok) {
        return Ok(v);
    }
    if tok.is_empty() {
        return Err("missing feature value after ':'".to_string());
    }
    let v: f32 = fast_float2::parse(tok)
        .map_err(|_| format!("feature value '{}' is not a number", show(tok)))?;
    if v.is_finite() {
        return Ok(v);
    }
    // Only on the error path: tell "inf"/"nan" apart from a finite number too big for f32.
    match fast_float2::parse::<f64, _>(tok) {
        Ok(w) if w.is_finite() => Err(format!(
            "feature value '{}' is out of the f32 range",
            show(tok)
        )),
        _ => Err(format!(
            "feature value '{}' is not a finite number",
            show(tok)
        )),
    }
}

/// A row accepted under `Undecided` whose index equals the feature count: in range only
/// if no row ever shows index 0.
#[derive(Clone, Copy, Debug)]
struct AtLimit {
    row: usize,
    line: u64,
    col: u64,
}

/// Rows in CSR form with raw (file-based) indices. `values` is either as long as
/// `indices` or, in a merged [`Builder`] whose values have all been 1 so far, empty.
#[derive(Debug)]
struct Csr {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
    labels: Vec<f32>,
}

impl Default for Csr {
    fn default() -> Self {
        Csr {
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
            labels: Vec::new(),
        }
    }
}

impl Csr {
    /// Empties the arrays, keeping their capacity.
    fn clear(&mut self) {
        self.indptr.clear();
        self.indptr.push(0);
        self.indices.clear();
        self.values.clear();
        self.labels.clear();
    }

    /// Removes the rows listed (sorted ascending) by compacting the arrays in place.
    fn remove_rows(&mut self, drop: &[usize]) {
        if drop.is_empty() {
            return;
        }
        let with_values = self.values.len() == self.indices.len();
        let rows = self.labels.len();
        let mut drop_iter = drop.iter().peekable();
        let (mut out_row, mut out_nz) = (0usize, 0usize);
        for r in 0..rows {
            if drop_iter.peek() == Some(&&r) {
                drop_iter.next();
                continue;
            }
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            self.indices.copy_within(a..b, out_nz);
            if with_values {
                self.values.copy_within(a..b, out_nz);
            }
            out_nz += b - a;
            self.labels[out_row] = self.labels[r];
            out_row += 1;
            self.indptr[out_row] = out_nz;
        }
        self.labels.truncate(out_row);
        self.indptr.truncate(out_row + 1);
        self.indices.truncate(out_nz);
        if with_values {
            self.values.truncate(out_nz);
        }
    }
}

fn initial_base(index_base: IndexBase) -> LineBase {
    match index_base {
        IndexBase::Auto => LineBase::Undecided,
        IndexBase::Zero => LineBase::Zero,
        IndexBase::One => LineBase::One,
    }
}

/// Accumulates rows in CSR form, raw (file-based) indices, until [`Builder::finish`]
/// shifts them and checks the file as a whole. Fed line by line ([`Builder::line`], the
/// sequential reference) or piece by piece in file order ([`Builder::merge`]).
struct Builder<'a> {
    path: &'a Path,
    opts: &'a ReadOptions,
    base: LineBase,
    csr: Csr,
    /// `csr.values` is not stored because every value so far is 1: it is written out
    /// only if a value other than 1 turns up, which on binary data it never does.
    ones: bool,
    skipped: u64,
    first_skipped: Option<(u64, String)>,
    at_limit: Vec<AtLimit>,
}

impl<'a> Builder<'a> {
    fn new(path: &'a Path, opts: &'a ReadOptions) -> Self {
        Builder {
            path,
            opts,
            base: initial_base(opts.index_base),
            csr: Csr::default(),
            ones: false,
            skipped: 0,
            first_skipped: None,
            at_limit: Vec::new(),
        }
    }

    /// Parses the lines of `text` (whole lines; the last may lack its `\n`), numbering them
    /// from `lines_before + 1`. Returns the number of lines seen.
    #[cfg(test)]
    fn parse_lines(&mut self, text: &[u8], lines_before: u64) -> Result<u64> {
        let mut line_no = lines_before;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', text) {
            line_no += 1;
            self.line(text.get(start..nl).unwrap_or_default(), line_no)?;
            start = nl + 1;
        }
        if let Some(tail) = text.get(start..) {
            if !tail.is_empty() {
                line_no += 1;
                self.line(tail, line_no)?;
            }
        }
        Ok(line_no - lines_before)
    }

    #[cfg(test)]
    fn line(&mut self, line: &[u8], line_no: u64) -> Result<()> {
        let rules = LineRules {
            base: self.base,
            features: self.opts.features.map(|d| d as u64),
            labels: self.opts.labels,
        };
        let csr = &mut self.csr;
        match parse_line(line, &rules, &mut csr.indices, &mut csr.values) {
            Ok(Parsed::Blank) => Ok(()),
            Ok(Parsed::Row {
                label,
                saw_zero,
                at_limit_col,
            }) => {
                csr.labels.push(label);
                csr.indptr.push(csr.indices.len());
                if let Some(col) = at_limit_col {
                    self.at_limit.push(AtLimit {
                        row: csr.labels.len() - 1,
                        line: line_no,
                        col,
                    });
                }
                if saw_zero && self.base == LineBase::Undecided {
                    self.base = LineBase::Zero;
                    self.resolve_at_limit(line_no)?;
                }
                Ok(())
            }
            Err(e) => self.reject(line_no, e),
        }
    }

    /// Appends the piece in `slot`, whose first line is line `lines_before + 1`, with the
    /// outcome of feeding its lines one by one to [`Builder::line`]. The piece was parsed
    /// as if no earlier line held index 0; when one did, only two things change (0-based
    /// judging is stricter than `Undecided` exactly at an index equal to the feature
    /// count, and words some messages differently): its rows at the feature limit are
    /// bad, and its first bad line may read differently.
    fn merge(&mut self, text: &[u8], slot: &mut Piece, lines_before: u64) -> Result<()> {
        let late_zero = self.opts.index_base == IndexBase::Auto && self.base == LineBase::Zero;
        let row0 = self.csr.labels.len();
        if late_zero {
            // Tokens before the one at the limit passed the same checks as 0-based ones
            // and the row has no index 0, so a 0-based parse fails at that very token.
            let d = self.opts.features.unwrap_or(0) as u64;
            let mut drop = Vec::with_capacity(slot.at_limit.len());
            for a in &slot.at_limit {
                let reason = out_of_range(d, d, LineBase::Zero);
                self.reject(lines_before + a.line, LineError { col: a.col, reason })?;
                drop.push(a.row);
            }
            slot.csr.remove_rows(&drop);
        } else {
            self.at_limit.extend(slot.at_limit.iter().map(|a| AtLimit {
                row: row0 + a.row,
                line: lines_before + a.line,
                col: a.col,
            }));
        }
        self.append(&slot.csr, slot.ones);
        if let (false, Some(z)) = (late_zero, slot.zero_line) {
            self.base = LineBase::Zero;
            self.resolve_at_limit(lines_before + z)?;
        }
        if let Some(first) = slot.first_error.take() {
            let mut error = first.error;
            if late_zero && first.undecided {
                let line = text.get(first.span).unwrap_or_default();
                let rules = LineRules {
                    base: LineBase::Zero,
                    features: self.opts.features.map(|d| d as u64),
                    labels: self.opts.labels,
                };
                let (mut i, mut v) = (Vec::new(), Vec::new());
                // 0-based judging is stricter, so the line is still bad.
                if let Err(e) = parse_line(line, &rules, &mut i, &mut v) {
                    error = e;
                }
            }
            self.reject(lines_before + first.line, error)?;
            // The other bad lines are bad under either base; only the first can be the
            // first skipped.
            self.skipped += slot.errors.saturating_sub(1);
        }
        Ok(())
    }

    /// Appends `src` (which stores every value) to the rows.
    fn append(&mut self, src: &Csr, ones: bool) {
        let nz = self.csr.indices.len();
        self.csr.indices.extend_from_slice(&src.indices);
        self.csr.labels.extend_from_slice(&src.labels);
        self.csr
            .indptr
            .extend(src.indptr.iter().skip(1).map(|&p| nz + p));
        if self.ones && !ones {
            self.csr.values.resize(nz, 1.0);
            self.ones = false;
        }
        if !self.ones {
            self.csr.values.extend_from_slice(&src.values);
        }
    }

    fn reject(&mut self, line: u64, e: LineError) -> Result<()> {
        let error = Error::Parse {
            path: self.path.to_path_buf(),
            line,
            col: e.col,
            reason: e.reason,
        };
        if !self.opts.skip_bad_lines {
            return Err(error);
        }
        self.skipped += 1;
        if self.first_skipped.as_ref().map_or(true, |(l, _)| line < *l) {
            self.first_skipped = Some((line, error.to_string()));
        }
        Ok(())
    }

    /// The file just proved 0-based: rows kept earlier with an index equal to the feature
    /// count are out of range after all.
    fn resolve_at_limit(&mut self, zero_line: u64) -> Result<()> {
        let pending = std::mem::take(&mut self.at_limit);
        let d = self.opts.features.unwrap_or(0) as u64;
        for p in &pending {
            let reason = format!(
                "feature index {d} is out of range for {d} features (0-based indices must \
                 be < {d}; the file is 0-based since line {zero_line} has index 0)"
            );
            self.reject(p.line, LineError { col: p.col, reason })?;
        }
        let drop: Vec<usize> = pending.iter().map(|p| p.row).collect();
        self.csr.remove_rows(&drop);
        Ok(())
    }

    fn finish(self, bytes: u64) -> Result<(Dataset, ReadReport)> {
        let path = self.path;
        let data_err = |reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        let skipped_note = match &self.first_skipped {
            Some((_, first)) => format!(" ({} bad lines skipped; first: {first})", self.skipped),
            None => String::new(),
        };
        let Csr {
            indptr,
            mut indices,
            values,
            labels,
        } = self.csr;
        if labels.is_empty() {
            return Err(data_err(format!("no data rows{skipped_note}")));
        }
        let one_based = self.base != LineBase::Zero;
        if one_based {
            // Every raw index is >= 1 here: a 0 either errored (One) or made the file
            // 0-based (Auto).
            for x in &mut indices {
                *x = x.saturating_sub(1);
            }
        }
        let features = match self.opts.features {
            Some(d) => d,
            None => {
                // The last entry of a row is its largest index.
                let max = indptr
                    .windows(2)
                    .filter(|w| w[1] > w[0])
                    .filter_map(|w| indices.get(w[1] - 1))
                    .max();
                match max {
                    Some(&m) => m as usize + 1,
                    None => 0,
                }
            }
        };
        if features == 0 {
            return Err(data_err(format!(
                "no features: every data row is empty{skipped_note}"
            )));
        }
        let mut ds = Dataset {
            indptr: indptr.into(),
            indices: indices.into(),
            values: (!self.ones).then(|| values.into()),
            labels: labels.into(),
            weights: None,
            features,
        };
        ds.compact_binary();
        let report = ReadReport {
            rows: ds.rows(),
            skipped_lines: self.skipped,
            first_skipped: self.first_skipped.map(|(_, m)| m),
            index_base_one: one_based,
            bytes,
        };
        Ok((ds, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn rules(base: LineBase, features: Option<u64>) -> LineRules {
        LineRules {
            base,
            features,
            labels: LabelRule::Any,
        }
    }

    fn parse(
        line: &str,
        r: &LineRules,
    ) -> std::result::Result<(Parsed, Vec<u32>, Vec<f32>), LineError> {
        let (mut i, mut v) = (vec![7], vec![7.0]);
        let p = parse_line(line.as_bytes(), r, &mut i, &mut v);
        match p {
            Ok(p) => Ok((p, i[1..].to_vec(), v[1..].to_vec())),
            Err(e) => {
                // A failed line leaves the caller's arrays as they were.
                assert_eq!((i, v), (vec![7], vec![7.0]));
                Err(e)
            }
        }
    }

    #[test]
    fn parses_entries_and_ignores_qid_and_comment() {
        let r = rules(LineBase::One, None);
        let (p, i, v) = parse("-1 qid:3 2:0.5\t10:1 # 11:2\r", &r).unwrap();
        assert_eq!(
            p,
            Parsed::Row {
                label: -1.0,
                saw_zero: false,
                at_limit_col: None
            }
        );
        assert_eq!(i, vec![2, 10]);
        assert_eq!(v, vec![0.5, 1.0]);
        assert_eq!(parse("  # only a comment", &r).unwrap().0, Parsed::Blank);
        assert_eq!(parse("\r", &r).unwrap().0, Parsed::Blank);
    }

    #[test]
    fn qid_only_right_after_label() {
        let e = parse("1 2:1 qid:3", &rules(LineBase::One, None)).unwrap_err();
        assert_eq!(e.col, 7);
        assert_eq!(
            e.reason,
            "feature index 'qid' is not a non-negative integer"
        );
    }

    #[test]
    fn error_columns_point_at_the_token() {
        let r = rules(LineBase::One, Some(10));
        let cases = [
            ("x 1:1", 1, "label 'x' is not a number"),
            ("1 1:1 3", 7, "expected index:value, found '3'"),
            ("1 1:1 :3", 7, "missing feature index before ':'"),
            (
                "1 1:1 a:3",
                7,
                "feature index 'a' is not a non-negative integer",
            ),
            ("1 1:1 -4:3", 7, "feature index -4 is negative"),
            ("1  0:3", 4, "feature index 0 in a 1-based file"),
            ("1 3:1 3:2", 7, "duplicate feature index 3"),
            (
                "1 3:1 2:2",
                7,
                "feature indices must be strictly increasing: 2 after 3",
            ),
            ("1 3:1 4:", 9, "missing feature value after ':'"),
            ("1 3:1 4:z", 9, "feature value 'z' is not a number"),
            (
                "1 3:1 4:nan",
                9,
                "feature value 'nan' is not a finite number",
            ),
            (
                "1 3:1 4:1e39",
                9,
                "feature value '1e39' is out of the f32 range",
            ),
            (
                "1 3:1 11:1",
                7,
                "feature index 11 is out of range for 10 features (1-based indices must be <= 10)",
            ),
        ];
        for (line, col, reason) in cases {
            let e = parse(line, &r).unwrap_err();
            assert_eq!((e.col, e.reason.as_str()), (col, reason), "line {line:?}");
        }
    }

    #[test]
    fn index_limits() {
        assert_eq!(parse_index(b"4294967295"), Ok(u32::MAX));
        assert_eq!(
            parse_index(b"4294967296").unwrap_err(),
            "feature index 4294967296 is too large (largest allowed: 4294967295)"
        );
        assert!(parse_index(b"99999999999999999999999999").is_err());
        assert!(parse_index(b"+3").is_err());
        assert!(parse_index(b"-").is_err());
        assert!(parse_index(b"1e3").is_err());
    }

    #[test]
    fn label_rules() {
        for ok in ["1", "+1", "1.0", "-1", "-1.0", "0", "0.0"] {
            assert!(
                parse_label(ok.as_bytes(), LabelRule::Binary).is_ok(),
                "{ok}"
            );
        }
        assert_eq!(
            parse_label(b"2", LabelRule::Binary).unwrap_err(),
            "label 2 is not a binary label (expected -1, 0 or +1; for more classes use \
             --loss softmax, for a real target --loss squared or huber)"
        );
        assert_eq!(parse_label(b"7", LabelRule::Class), Ok(7.0));
        for bad in ["-1", "1.5", "1e9"] {
            assert!(
                parse_label(bad.as_bytes(), LabelRule::Class).is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_label(b"-2.5e3", LabelRule::Any), Ok(-2500.0));
        assert!(parse_label(b"inf", LabelRule::Any).is_err());
        assert!(parse_label(b"1e300", LabelRule::Any).is_err());
        assert_eq!(
            parse_label(b"3:1", LabelRule::Any).unwrap_err(),
            "missing label: the line starts with the feature '3:1'"
        );
    }

    #[test]
    fn undecided_base_switches_on_zero_and_defers_the_limit() {
        let r = rules(LineBase::Undecided, Some(5));
        let (p, i, _) = parse("1 0:1 4:1", &r).unwrap();
        assert_eq!(
            p,
            Parsed::Row {
                label: 1.0,
                saw_zero: true,
                at_limit_col: None
            }
        );
        assert_eq!(i, vec![0, 4]);
        // With index 0 on the same line, 5 is known to be out of range at once.
        let e = parse("1 0:1 5:1", &r).unwrap_err();
        assert_eq!(e.col, 7);
        let (p, _, _) = parse("1 2:1 5:1", &r).unwrap();
        assert_eq!(
            p,
            Parsed::Row {
                label: 1.0,
                saw_zero: false,
                at_limit_col: Some(7)
            }
        );
        assert_eq!(
            parse("1 6:1", &r).unwrap_err().reason,
            "feature index 6 is out of range for 5 features"
        );
    }

    #[test]
    fn long_tokens_are_cut_in_messages() {
        let long = "x".repeat(1000);
        let e = parse(&format!("{long} 1:1"), &rules(LineBase::One, None)).unwrap_err();
        assert!(e.reason.len() < 100, "{}", e.reason);
    }

    fn read_with_chunk(text: &[u8], chunk: usize) -> Result<(Dataset, ReadReport)> {
        read_stream(
            text,
            Compression::Plain,
            Path::new("mem.svm"),
            &ReadOptions::default(),
            chunk,
        )
    }

    #[test]
    fn every_chunk_size_gives_the_same_dataset() {
        let text = b"1 1:0.5 3:2\n\n-1 2:1 # c\r\n# x\n0 qid:1 1:1 2:1 3:1 4:1 5:1\n1\n2 7:0.25";
        let (want, rep) = read_with_chunk(text, 1 << 20).unwrap();
        assert_eq!(want.rows(), 5);
        assert_eq!(want.features, 7);
        assert_eq!(rep.bytes, text.len() as u64);
        for chunk in 1..text.len() + 2 {
            let (got, _) = read_with_chunk(text, chunk).unwrap();
            assert_eq!(got, want, "chunk {chunk}");
        }
        // Line numbers survive chunking too.
        let bad = b"1 1:1\n1 2:1\n1 3:x\n";
        for chunk in 1..bad.len() + 2 {
            let e = read_with_chunk(bad, chunk).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Parse {
                        line: 3,
                        col: 5,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn remove_rows_compacts() {
        let opts = ReadOptions::default();
        let mut b = Builder::new(Path::new("x"), &opts);
        b.parse_lines(b"1 1:1\n2 2:2 3:3\n3\n4 4:4\n", 0).unwrap();
        b.csr.remove_rows(&[1, 2]);
        assert_eq!(b.csr.labels, vec![1.0, 4.0]);
        assert_eq!(b.csr.indptr, vec![0, 1, 2]);
        assert_eq!(b.csr.indices, vec![1, 4]);
        assert_eq!(b.csr.values, vec![1.0, 4.0]);
    }

    #[test]
    fn format_row_is_one_based_and_short() {
        let mut out = Vec::new();
        format_row(&mut out, -1.0, &[0, 4, u32::MAX], Some(&[1.0, 0.1, -2.5]));
        format_row(&mut out, 0.5, &[2], None);
        format_row(&mut out, 3.0, &[], None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-1 1:1 5:0.1 4294967296:-2.5\n0.5 3:1\n3\n"
        );
    }

    /// Random LIBSVM-ish text over features `0..=d + 1`: mostly good rows, with index 0
    /// now and then (so the auto base flips mid-file), index d (the auto base's limit),
    /// qid tokens, comments, blank lines, CRLF, tabs, a few bad lines and sometimes no
    /// final newline.
    fn random_text(rng: &mut Xoshiro256PlusPlus, d: u32) -> Vec<u8> {
        const BAD: [&str; 12] = [
            "x 1:1",
            "1 2:1 2:1",
            "1 3:1 2:1",
            "1 1:nan",
            "1 1:1e39",
            "1 -1:2",
            "2.5 1:1",
            "1 :1",
            "1 1:",
            "1 1",
            "1 2:1 qid:3",
            "1:1",
        ];
        const LABELS: [&str; 7] = ["1", "-1", "+1", "0", "1.0", "-1.0", "1e0"];
        const VALUES: [&str; 6] = ["1", "1", "1", "0.5", "-2", "1.0"];
        let mut out = Vec::new();
        let lines = rng.random_range(0..40);
        for i in 0..lines {
            match rng.random_range(0..24) {
                0 => {}
                1 => out.extend_from_slice(b"# a comment 3:x"),
                2 => out.extend_from_slice(b" \t "),
                3 => out.extend_from_slice(BAD[rng.random_range(0..BAD.len())].as_bytes()),
                _ => {
                    out.extend_from_slice(LABELS[rng.random_range(0..LABELS.len())].as_bytes());
                    if rng.random_bool(0.1) {
                        out.extend_from_slice(b" qid:7");
                    }
                    let mut idx = if rng.random_bool(0.04) { 0 } else { 1 };
                    for _ in 0..rng.random_range(0..6) {
                        if idx > d + 1 {
                            break;
                        }
                        out.push(if rng.random_bool(0.8) { b' ' } else { b'\t' });
                        let v = VALUES[rng.random_range(0..VALUES.len())];
                        out.extend_from_slice(format!("{idx}:{v}").as_bytes());
                        idx += rng.random_range(1..4);
                    }
                    if rng.random_bool(0.1) {
                        out.extend_from_slice(b" # 9:9");
                    }
                }
            }
            if i + 1 < lines || rng.random_bool(0.5) {
                out.extend_from_slice(if rng.random_bool(0.2) { b"\r\n" } else { b"\n" });
            }
        }
        out
    }

    fn random_options(rng: &mut Xoshiro256PlusPlus, d: u32) -> ReadOptions {
        ReadOptions {
            index_base: [
                IndexBase::Auto,
                IndexBase::Auto,
                IndexBase::Zero,
                IndexBase::One,
            ][rng.random_range(0..4)],
            features: rng.random_bool(0.6).then_some(d as usize),
            skip_bad_lines: rng.random_bool(0.5),
            labels: [LabelRule::Any, LabelRule::Binary][rng.random_range(0..2)],
        }
    }

    /// The result of a read, errors included, in a form that compares exactly.
    fn outcome(r: Result<(Dataset, ReadReport)>) -> String {
        format!("{r:?}")
    }

    #[test]
    fn parallel_reads_match_the_sequential_reader() {
        let path = Path::new("mem.svm");
        let (mut rows, mut errors) = (0, 0);
        for seed in 0..600u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let d = rng.random_range(2..8);
            let text = random_text(&mut rng, d);
            let opts = random_options(&mut rng, d);
            let chunk = rng.random_range(1..300);
            let want = outcome(read_stream(
                &text[..],
                Compression::Plain,
                path,
                &opts,
                1 << 20,
            ));
            // Chunking never changes a read of a sound stream.
            let seq = outcome(read_stream(
                &text[..],
                Compression::Plain,
                path,
                &opts,
                chunk,
            ));
            assert_eq!(seq, want, "seed {seed}");
            for threads in [1, 2, 3, 7] {
                let got = read_parallel(&text[..], Compression::Plain, path, &opts, chunk, threads);
                assert_eq!(
                    outcome(got),
                    want,
                    "seed {seed}, {threads} threads, chunk {chunk}, {opts:?}, text {:?}",
                    String::from_utf8_lossy(&text)
                );
            }
            if want.starts_with("Ok") {
                rows += 1;
            } else if want.contains("Parse") {
                errors += 1;
            }
        }
        // Both outcomes are well represented.
        assert!(
            rows > 150 && errors > 150,
            "{rows} good reads, {errors} parse errors"
        );
    }

    #[test]
    fn parallel_reads_of_compressed_streams_match_even_when_cut() {
        let path = Path::new("mem.svm.gz");
        for seed in 0..150u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let d = rng.random_range(2..8);
            let mut text = Vec::new();
            for _ in 0..8 {
                text.extend(random_text(&mut rng, d));
                text.push(b'\n');
            }
            let opts = random_options(&mut rng, d);
            let chunk = rng.random_range(1..300);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&text).unwrap();
            let mut gz = e.finish().unwrap();
            // A truncated stream: whether a bad line or the stream fails first depends on
            // where the pieces are cut, which is the same in both readers.
            if seed % 3 == 0 {
                gz.truncate(gz.len() * 2 / 3);
            }
            let decode = || flate2::read::MultiGzDecoder::new(&gz[..]);
            let want = outcome(read_stream(decode(), Compression::Gzip, path, &opts, chunk));
            for threads in [1, 2, 3, 7] {
                let got = read_parallel(decode(), Compression::Gzip, path, &opts, chunk, threads);
                assert_eq!(
                    outcome(got),
                    want,
                    "seed {seed}, {threads} threads, chunk {chunk}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                   base in 0..3u8, features in proptest::option::of(0..20u64)) {
            let base = [LineBase::Zero, LineBase::One, LineBase::Undecided][base as usize];
            let (mut i, mut v) = (Vec::new(), Vec::new());
            let r = LineRules { base, features, labels: LabelRule::Class };
            if parse_line(&bytes, &r, &mut i, &mut v).is_err() {
                prop_assert!(i.is_empty() && v.is_empty());
            }
            prop_assert_eq!(i.len(), v.len());
        }

        #[test]
        fn small_integers_parse_as_the_general_parser_would(tok in "[+-]?[0-9]{0,9}") {
            let general32 = fast_float2::parse::<f32, _>(tok.as_bytes()).ok();
            let general64 = fast_float2::parse::<f64, _>(tok.as_bytes()).ok();
            if let Some(v) = small_int(tok.as_bytes()) {
                prop_assert_eq!(Some(v.to_bits()), general32.map(f32::to_bits));
                prop_assert_eq!(Some(f64::from(v).to_bits()), general64.map(f64::to_bits));
            }
            prop_assert_eq!(parse_value(tok.as_bytes()).ok().map(f32::to_bits),
                            general32.map(f32::to_bits));
        }

        #[test]
        fn entries_index_as_parse_index_does(idx in "[-+]?[0-9]{0,12}x?", val in "[0-9.:]{0,4}") {
            let line = format!("1 {idx}:{val}");
            let (mut i, mut v) = (Vec::new(), Vec::new());
            let got = parse_line(line.as_bytes(), &rules(LineBase::Zero, None), &mut i, &mut v);
            match parse_index(idx.as_bytes()) {
                Ok(raw) => match got {
                    Ok(_) => prop_assert_eq!(i, vec![raw]),
                    // Only the value can be at fault.
                    Err(e) => prop_assert_eq!(e.col as usize, 3 + idx.len() + 1),
                },
                Err(reason) => prop_assert_eq!(got, Err(LineError { col: 3, reason })),
            }
        }

        #[test]
        fn parse_line_on_token_soup(toks in proptest::collection::vec(
            prop_oneof![Just("1"), Just("0:1"), Just("3:2.5"), Just("qid:2"), Just(":"),
                        Just("#"), Just("\t"), Just("-1"), Just("4294967296:1"), Just("2:")],
            0..8)) {
            let line = toks.join(" ");
            let (mut i, mut v) = (Vec::new(), Vec::new());
            let r = rules(LineBase::Undecided, Some(4));
            match parse_line(line.as_bytes(), &r, &mut i, &mut v) {
                Ok(_) => prop_assert!(i.windows(2).all(|w| w[0] < w[1])),
                Err(e) => prop_assert!(e.col >= 1 && e.col as usize <= line.len() + 1),
            }
        }
    }
}
