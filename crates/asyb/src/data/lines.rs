//! The one reader of text data: a stream (a file, `-` for standard input, a pipe), its
//! compression told by magic bytes (gzip, bzip2, xz, zstd or plain, never by file name),
//! cut into pieces of whole lines that parser threads turn into rows on their own, and
//! merged in file order with the line numbers that errors name. A text format brings its
//! parse of a piece ([`LineFormat`]) and its merge of the parsed pieces ([`Merge`]);
//! `libsvm` is the example.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;

use parking_lot::Mutex;

use crate::{Error, Result};

/// The text is cut into pieces of this size (at a line break) for the parser threads:
/// large enough that the per-piece cost (a channel send, a wake-up, a few vector
/// pushes) vanishes against the parse, small enough to balance the threads on a file of
/// a few megabytes and to still be in cache when a parser picks the piece up. Doubled
/// on demand for longer lines.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// Beyond this many parser threads the reader (one thread, and for compressed input a
/// sequential decoder) and memory bandwidth are the limit, and each thread only adds
/// pieces in flight.
const MAX_READ_THREADS: usize = 8;

/// The number of parser threads a read uses by default: the available cores, at most
/// [`MAX_READ_THREADS`].
pub fn default_read_threads() -> usize {
    crate::par::cores().min(MAX_READ_THREADS)
}

/// Stream formats told apart by their magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn sniff(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(b"BZh") {
            Compression::Bzip2
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::Plain => "plain",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// Whether `path` names standard input (`-`).
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` (`-`: standard input) and wraps it in the decoder its first bytes call
/// for; `format` names the text format in the error for a binary cache. The bytes read to tell the format are handed back in front of the rest, so a
/// pipe or a FIFO loses nothing. Every decoder accepts concatenated
/// members/streams/frames, as written by `pigz`, `pbzip2`, `pixz` and `zstd -T`.
pub(crate) fn open(path: &Path, format: &str) -> Result<(Box<dyn Read>, Compression)> {
    let mut file: Box<dyn Read> = if is_stdin(path) {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| Error::io(path, e))?)
    };
    let mut magic = [0u8; 8];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let head = magic.get(..got).unwrap_or(&[]).to_vec();
    if head == crate::data::cache::MAGIC {
        return Err(Error::Data {
            path: path.into(),
            reason: if is_stdin(path) || !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                "a binary cache must be read from a regular file (it is memory-mapped), not from a pipe, FIFO or device".into()
            } else {
                format!("a binary cache, not {format} text")
            },
        });
    }
    let compression = Compression::sniff(&head);
    let raw = std::io::Cursor::new(head).chain(file);
    let source: Box<dyn Read> = match compression {
        Compression::Plain => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 18, raw),
        )),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(
            std::io::BufReader::with_capacity(1 << 18, raw),
        )),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::with_capacity(1 << 18, raw),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| Error::io(path, e))?)
        }
    };
    Ok((source, compression))
}

/// An error while pulling bytes: an operating-system failure stays an I/O error; anything
/// a decoder raised (bad checksum, truncated stream, garbage) is the file's fault.
pub(crate) fn stream_error(path: &Path, compression: Compression, e: std::io::Error) -> Error {
    if compression == Compression::Plain || e.raw_os_error().is_some() {
        Error::io(path, e)
    } else {
        Error::Data {
            path: path.to_path_buf(),
            reason: format!("corrupt or truncated {} stream: {e}", compression.name()),
        }
    }
}

/// A text format's parse of one piece of whole lines, run on the parser threads.
pub(crate) trait LineFormat: Sync {
    /// What the format makes of a piece; recycled from piece to piece, so that the steady
    /// state allocates nothing.
    type Piece: Default + Send;
    /// Parses `text` (whole lines, the last one cut only at the end of the stream) into
    /// `piece`, as if it were the start of the file; the merge corrects what depends on
    /// earlier lines.
    fn parse(&self, text: &[u8], piece: &mut Self::Piece);
    /// Lines of the piece the parse went through (the next piece's lines come after).
    fn lines(piece: &Self::Piece) -> u64;
}

/// Takes the parsed pieces in file order.
pub(crate) trait Merge<P>: Send {
    /// Adds the next piece; `text` is its text, `lines_before` the lines of the earlier
    /// pieces. An error ends the read there, as a line-by-line read would have stopped.
    fn merge(&mut self, text: &[u8], piece: &mut P, lines_before: u64) -> Result<()>;
}

/// The parallel read: the calling thread reads (and decompresses) the stream into
/// pieces that end at a line break, `threads` parser threads parse each piece on their
/// own, and one merger thread hands the pieces to `merger` in file order. Returns the
/// merger and the bytes read.
///
/// The pieces are cut where a sequential reader with a `chunk_bytes` buffer would cut,
/// so even the race between a parse error and a corrupt stream ends the same way: lines
/// in pieces handed out before the stream failed are judged first. `chunk_bytes` is a
/// parameter so that tests can put piece boundaries everywhere.
pub(crate) fn read_pieces<F: LineFormat, M: Merge<F::Piece>>(
    mut source: impl Read,
    compression: Compression,
    path: &Path,
    format: &F,
    merger: M,
    chunk_bytes: usize,
    threads: usize,
) -> Result<(M, u64)> {
    let threads = threads.max(1);
    // One piece being filled, one per parser, and a few parsed ones waiting for an
    // earlier piece in the merger: this bounds the memory besides the output.
    let max_slots = 2 * threads + 2;
    let (work_tx, work_rx) = mpsc::channel::<Slot<F::Piece>>();
    let (done_tx, done_rx) = mpsc::channel::<ParsedSlot<F::Piece>>();
    let (free_tx, free_rx) = mpsc::channel::<Slot<F::Piece>>();
    let work_rx = Mutex::new(work_rx);
    let (merged, read) = std::thread::scope(|s| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            s.spawn(move || loop {
                let next = work_rx.lock().recv();
                let Ok(mut slot) = next else { break };
                // A panic must reach the merger: with a piece missing it would wait
                // forever, and so would the reader for the piece's slot.
                let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let text = slot.text.get(..slot.len).unwrap_or_default();
                    format.parse(text, &mut slot.piece)
                }));
                let sent = match parsed {
                    Ok(()) => done_tx.send(Ok(slot)),
                    Err(panic) => done_tx.send(Err(panic)),
                };
                if sent.is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let merger = s.spawn(move || merge_in_order::<F, M>(done_rx, free_tx, merger));
        let read = feed(
            &mut source,
            compression,
            path,
            chunk_bytes,
            max_slots,
            work_tx,
            free_rx,
        );
        let merged = merger
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (merged, read)
    });
    // A bad line handed out before the stream failed is the earlier problem.
    let merger = merged?;
    let bytes = read?;
    Ok((merger, bytes))
}

/// What a parser thread hands the merger: its slot, or the panic that lost it.
type ParsedSlot<T> = std::thread::Result<Slot<T>>;

/// One piece of text and what a parser made of it, recycled between the reader, the
/// parsers and the merger.
#[derive(Default)]
struct Slot<T> {
    /// Position of the piece in the file.
    seq: usize,
    /// `text[..len]` is the piece: whole lines, the last one cut only at the end of the
    /// stream. The bytes past `len` are scratch space for the reader.
    text: Vec<u8>,
    len: usize,
    piece: T,
}

/// The reader: fills slots from `source`, cuts them after their last line break (the
/// rest starts the next slot) and hands them to the parsers. Returns the bytes read.
/// Stops early, without error, when the merger has quit (it holds the error).
fn feed<T: Default>(
    source: &mut impl Read,
    compression: Compression,
    path: &Path,
    chunk_bytes: usize,
    max_slots: usize,
    work_tx: mpsc::Sender<Slot<T>>,
    free_rx: mpsc::Receiver<Slot<T>>,
) -> Result<u64> {
    let mut made = 0usize;
    let mut take = || match free_rx.try_recv() {
        Ok(slot) => Some(slot),
        Err(mpsc::TryRecvError::Disconnected) => None,
        Err(mpsc::TryRecvError::Empty) if made < max_slots => {
            made += 1;
            Some(Slot::default())
        }
        Err(mpsc::TryRecvError::Empty) => free_rx.recv().ok(),
    };
    let mut cap = chunk_bytes.max(1);
    let mut bytes = 0u64;
    let mut seq = 0usize;
    let Some(mut cur) = take() else {
        return Ok(0);
    };
    cur.len = 0;
    loop {
        if cur.text.len() < cap {
            cur.text.resize(cap, 0);
        }
        let mut eof = false;
        while cur.len < cap {
            let free = cur.text.get_mut(cur.len..cap).unwrap_or_default();
            match source.read(free) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    cur.len += n;
                    bytes += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(path, compression, e)),
            }
        }
        if eof {
            if cur.len > 0 {
                cur.seq = seq;
                // A send fails only when the parsers are gone, after the merger quit.
                let _ = work_tx.send(cur);
            }
            return Ok(bytes);
        }
        let filled = cur.text.get(..cur.len).unwrap_or_default();
        match memchr::memrchr(b'\n', filled) {
            Some(p) => {
                let Some(mut next) = take() else {
                    return Ok(bytes);
                };
                let tail = filled.get(p + 1..).unwrap_or_default();
                if next.text.len() < cap {
                    next.text.resize(cap, 0);
                }
                if let Some(head) = next.text.get_mut(..tail.len()) {
                    head.copy_from_slice(tail);
                }
                next.len = tail.len();
                cur.len = p + 1;
                cur.seq = seq;
                seq += 1;
                if work_tx.send(cur).is_err() {
                    return Ok(bytes);
                }
                cur = next;
            }
            // One line longer than the piece: grow rather than split it.
            None => cap *= 2,
        }
    }
}

/// The merger: takes parsed slots in any order, hands them to `merger` in file order
/// and sends them back to the reader. Returns at the first error that a sequential read
/// would have stopped at.
fn merge_in_order<F: LineFormat, M: Merge<F::Piece>>(
    done_rx: mpsc::Receiver<ParsedSlot<F::Piece>>,
    free_tx: mpsc::Sender<Slot<F::Piece>>,
    mut merger: M,
) -> Result<M> {
    let mut waiting = std::collections::BTreeMap::new();
    let (mut next, mut lines) = (0usize, 0u64);
    for parsed in done_rx {
        let slot = parsed.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        waiting.insert(slot.seq, slot);
        while let Some(mut slot) = waiting.remove(&next) {
            let text = slot.text.get(..slot.len).unwrap_or_default();
            merger.merge(text, &mut slot.piece, lines)?;
            lines += F::lines(&slot.piece);
            next += 1;
            // The reader may be done already.
            let _ = free_tx.send(slot);
        }
    }
    Ok(merger)
}
