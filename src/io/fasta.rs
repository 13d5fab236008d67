//! Reading FASTA input the way users hand it to us: a path or `-` for stdin, plain or compressed
//! with gzip, bzip2, xz or zstd (detected from the bytes, not the name; concatenated streams are
//! read through), with the mistakes people make caught up front (FASTQ, binary files, archives,
//! empty files) and reported as one line that names the file.
//!
//! The reader knows what it reads ([`SeqKind`]): nucleotides, where RNA is read as DNA (`U` as
//! `T`, said once per file), or sequences to keep as written. Proteins are read as the latter
//! (`U` is selenocysteine there, not uracil) and then by the protein reader of `seq`, which
//! knows the protein alphabet; this module is the floor below it and knows no alphabet but
//! RNA's `U`.
//!
//! The parser works on bytes rather than text lines, for three reasons: a header's description
//! may be in any encoding (only the id must be UTF-8, as it is copied into every output); the
//! sequence rules above are byte rules; and memory stays bounded by the record being
//! read. Sequence lines go straight into the record (no line buffer), a header line is capped at
//! [`MAX_HEADER_BYTES`], and a record larger than this process may hold is refused with a
//! message naming it, not an allocation abort: a few KB of compressed input can expand to one
//! line of many GB.
//!
//! Why our own reader rather than the `needletail` crate (weighed at 0.7.4): its guarantees are
//! not these, and wrapping it would leave it only the line splitting. It has no bound on a record:
//! its buffer grows until an allocation fails and the process aborts (a 3 GB one-line record under
//! a 2 GiB address-space limit aborted at a 2 GiB allocation; this reader refuses it at 1 GiB
//! bases, naming the record), and a bound cannot be put in front of it without finding record
//! starts first, which is this parser again. It reads only the first stream of a concatenated
//! bzip2 or xz file (what `pbzip2` writes, or `cat` of two files), without a word; its errors give
//! a line number but neither the file nor the record; it refuses leading blank lines and takes
//! empty, non-UTF-8 and control-character ids as they come. A record of many lines is held twice,
//! as read and joined: 560 MiB peak for one 272 Mbp record in 60-column lines, 262 MiB here. Nor
//! is it faster where it would count: on 272 Mbp in 14,000 records (Intel Xeon Processor, 2 shared
//! cores, best of 6 runs) it took 0.105 s against 0.137 s with one line per record, 0.416 s
//! against 0.325 s with 60-column lines, and the same 4.1 s gzipped, where decompression is the
//! cost; and reading was 3% of `translate`'s time on a 13.6 Mbp part of that input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// One FASTA record: the id (header up to the first whitespace) and the sequence lines joined;
/// for nucleotides with `U`/`u` already read as `T`/`t` ([`SeqKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastaRecord {
    pub id: String,
    pub seq: Vec<u8>,
}

/// What the sequences of a FASTA file are, which decides how they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeqKind {
    /// DNA or RNA: `U`/`u` read as `T`/`t` (the genetic code and DNABERT-S are DNA's), case and
    /// every other letter kept for the caller to check.
    #[default]
    Nucleotide,
    /// Any sequence, kept as written (line ends and trailing whitespace dropped, nothing
    /// else): for copying records through unchanged (`predict --sequences`, where an RNA
    /// input must come back with its `U`), and for proteins, whose `U` (selenocysteine) must
    /// not become `T` before the protein reader checks their letters.
    Verbatim,
}

/// A header line longer than this is not a header a person wrote: refused instead of read.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// xz streams needing more memory than this to decode are refused (`xz -9` needs 65 MiB).
const XZ_MEMLIMIT: u64 = 1 << 30;

/// How the input is compressed, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// Bytes needed to recognise every format.
    const MAGIC_LEN: usize = 6;

    /// The format whose magic number `head` starts with.
    pub fn detect(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Self::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Self::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::Plain,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Gzip => "gzip",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
        }
    }

    /// The decoded stream of `raw`, which is in this format.
    fn decoder(self, raw: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
        let buffered = BufReader::with_capacity(1 << 16, raw);
        Ok(match self {
            Self::Plain => Box::new(buffered),
            Self::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Self::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
            Self::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(buffered, stream))
            }
            // zstd reads concatenated frames by default; its window is capped at 128 MiB
            // (what `zstd --long` writes), so a hostile frame header cannot claim GBs.
            Self::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        })
    }
}

/// A streaming FASTA reader over a file or stdin, plain or compressed.
pub struct FastaReader {
    input: BufReader<Box<dyn Read + Send>>,
    label: String,
    compression: Compression,
    /// Records started so far: the 1-based number of the one being read.
    count: usize,
    /// The longest record accepted, in bases (see [`record_limit`]).
    max_bases: usize,
    kind: SeqKind,
    rna_seen: bool,
    finished: bool,
}

/// How the input is named in messages: the path, or "stdin".
pub fn input_label(input: &Path) -> String {
    if input == Path::new("-") {
        "stdin".to_string()
    } else {
        input.display().to_string()
    }
}

impl FastaReader {
    /// Open `input` (`-` = stdin). Fails with a clear message when the content is not FASTA or
    /// there is none.
    pub fn open(input: &Path) -> Result<Self> {
        match Self::open_allow_empty(input)? {
            Some(r) => Ok(r),
            None => bail!("{} is empty: no FASTA records to read", input_label(input)),
        }
    }

    /// Like [`FastaReader::open`], but an empty (or all-blank) input is `None`, not an error:
    /// for steps where an empty shard is a normal, if unusual, input.
    pub fn open_allow_empty(input: &Path) -> Result<Option<Self>> {
        let label = input_label(input);
        let raw: Box<dyn Read + Send> = if input == Path::new("-") {
            Box::new(io::stdin())
        } else {
            if input.is_dir() {
                bail!("{label} is a directory, not a FASTA file");
            }
            Box::new(File::open(input).with_context(|| format!("cannot open {label}"))?)
        };
        Self::from_reader(raw, label)
    }

    /// A reader over any byte stream (compressed or not), named `label` in messages; `None`
    /// when it holds no records. For tests and callers that already have the bytes.
    pub fn from_reader(mut raw: Box<dyn Read + Send>, label: String) -> Result<Option<Self>> {
        // Peek at the magic bytes without losing them: a pipe may deliver them one by one.
        let mut head = Vec::with_capacity(Compression::MAGIC_LEN);
        (&mut raw)
            .take(Compression::MAGIC_LEN as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {label}"))?;
        if head.starts_with(b"PK\x03\x04") {
            bail!(
                "{label} is a zip archive; unzip it first (FASTA may be plain or compressed \
                 with gzip, bzip2, xz or zstd)"
            );
        }
        let compression = Compression::detect(&head);
        let raw: Box<dyn Read + Send> = Box::new(io::Cursor::new(head).chain(raw));
        let decoded = compression
            .decoder(raw)
            .map_err(|e| read_error(&label, compression, 0, e))?;
        let mut input = BufReader::with_capacity(1 << 20, decoded);
        if !sniff(&mut input, &label, compression)? {
            return Ok(None);
        }
        Ok(Some(Self {
            input,
            label,
            compression,
            count: 0,
            max_bases: record_limit(),
            kind: SeqKind::Nucleotide,
            rna_seen: false,
            finished: false,
        }))
    }

    /// Read the records as `kind` (nucleotides unless told).
    pub fn with_kind(mut self, kind: SeqKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// What the input was compressed with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The next record, or `None` at the end. The input is positioned at a '>' at the start of
    /// a line (or at its end).
    fn read_record(&mut self) -> Result<Option<FastaRecord>> {
        let mut header = Vec::new();
        if !self.read_header(&mut header)? {
            return Ok(None);
        }
        let id = record_id(&header)
            .map_err(|why| anyhow!("{}: record #{} {why}", self.label, self.count))?
            .to_string();
        drop(header);
        let mut seq = Vec::new();
        self.read_sequence(&mut seq, &id)?;
        // A whole chromosome grows its buffer by doubling: give the slack back.
        if seq.capacity() - seq.len() > 1 << 20 {
            seq.shrink_to_fit();
        }
        if self.kind == SeqKind::Nucleotide && memchr::memchr2(b'U', b'u', &seq).is_some() {
            read_rna_as_dna(&mut seq);
            if !self.rna_seen {
                self.rna_seen = true;
                tracing::warn!(
                    "{}: read U as T (RNA input; record '{id}' is the first with U)",
                    self.label
                );
            }
        }
        Ok(Some(FastaRecord { id, seq }))
    }

    /// The header line (from '>' to the end of the line, both excluded) into `header`; `false`
    /// at the end of the input.
    fn read_header(&mut self, header: &mut Vec<u8>) -> Result<bool> {
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) => return Err(read_error(&self.label, self.compression, self.count, e)),
            };
            if avail.is_empty() {
                if header.is_empty() {
                    return Ok(false);
                }
                break;
            }
            if header.is_empty() {
                debug_assert_eq!(avail[0], b'>', "a record starts at '>'");
                self.count += 1;
            }
            let (take, eol) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if header.len() + take > MAX_HEADER_BYTES {
                bail!(
                    "{}: record #{} has a header line longer than {} MiB; is this really a \
                     FASTA file?",
                    self.label,
                    self.count,
                    MAX_HEADER_BYTES >> 20
                );
            }
            header.extend_from_slice(&avail[..take]);
            self.input.consume(take);
            if eol {
                break;
            }
        }
        // Drop the '>' and the line end.
        header.remove(0);
        let kept = header.trim_ascii_end().len();
        header.truncate(kept);
        Ok(true)
    }

    /// The sequence lines of the current record, joined into `seq`, up to the next line that
    /// starts with '>' or the end of the input. Trailing whitespace of each line (`\r` of
    /// Windows files, stray spaces) is dropped, as Biopython does.
    fn read_sequence(&mut self, seq: &mut Vec<u8>, id: &str) -> Result<()> {
        let mut line_start = 0usize;
        let mut at_line_start = true;
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) => return Err(read_error(&self.label, self.compression, self.count, e)),
            };
            if avail.is_empty() || (at_line_start && avail[0] == b'>') {
                let kept = line_start + seq[line_start..].trim_ascii_end().len();
                seq.truncate(kept);
                return Ok(());
            }
            if at_line_start && avail[0] == b'\n' {
                // A run of blank lines adds nothing to the record: skipped in one step, not line
                // by line (`translate` of 2 GiB of them, 72 KB as zstd, took 25 s of CPU one by
                // one and takes 1.2 s so).
                let blank = avail.iter().take_while(|&&b| b == b'\n').count();
                self.input.consume(blank);
                continue;
            }
            let (take, eol) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let line = &avail[..take - usize::from(eol)];
            if seq.len() + line.len() > self.max_bases {
                bail!(
                    "{}: record #{} ('{id}') is longer than {} bases, more than half the memory \
                     this process may use; split the record or give it more memory",
                    self.label,
                    self.count,
                    self.max_bases
                );
            }
            if seq.try_reserve(line.len()).is_err() {
                bail!(
                    "{}: record #{} ('{id}') does not fit in memory ({} bases read so far); \
                     split the record or give it more memory",
                    self.label,
                    self.count,
                    seq.len()
                );
            }
            seq.extend_from_slice(line);
            self.input.consume(take);
            at_line_start = eol;
            if eol {
                let kept = line_start + seq[line_start..].trim_ascii_end().len();
                seq.truncate(kept);
                line_start = seq.len();
            }
        }
    }
}

/// The id of a header (the text after '>', without the line end): up to the first whitespace,
/// as Biopython. The rest, the description, is ignored whatever its encoding; the id must be
/// UTF-8 without control characters because it is copied into every output file.
fn record_id(header: &[u8]) -> Result<&str, String> {
    let end = header
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(header.len());
    let word = &header[..end];
    let text = match std::str::from_utf8(word) {
        Ok(text) => text,
        Err(e) => {
            let valid = std::str::from_utf8(&word[..e.valid_up_to()]).expect("valid prefix");
            // Non-ASCII whitespace (say U+00A0) may end the id before the bad byte.
            if !valid.contains(char::is_whitespace) {
                return Err(format!(
                    "has an id that is not UTF-8 text (byte 0x{:02x} at column {}); ids are \
                     copied into every output file: rename the record",
                    word[e.valid_up_to()],
                    e.valid_up_to() + 2
                ));
            }
            valid
        }
    };
    let id = text.split(char::is_whitespace).next().unwrap_or_default();
    if id.is_empty() {
        return Err(
            "has an empty header (nothing between '>' and the first space); give every record \
             an id"
                .to_string(),
        );
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "has a control character (U+{:04X}) in its id '{}'; ids are copied into every \
             output file: rename the record",
            c as u32,
            id.escape_default()
        ));
    }
    Ok(id)
}

/// `U`/`u` read as `T`/`t`: the genetic code and the models are DNA's.
fn read_rna_as_dna(seq: &mut [u8]) {
    for b in seq.iter_mut() {
        match *b {
            b'U' => *b = b'T',
            b'u' => *b = b't',
            _ => {}
        }
    }
}

/// The one-line message for a failed read: for compressed input, most likely a damaged or
/// truncated file, so say how to check it.
fn read_error(label: &str, compression: Compression, record: usize, e: io::Error) -> anyhow::Error {
    let at = if record > 0 {
        format!(" (in record #{record})")
    } else {
        String::new()
    };
    match compression {
        Compression::Plain => anyhow!("cannot read {label}{at}: {e}"),
        c => anyhow!(
            "cannot read {label}{at}: corrupt or truncated {} data ({e}); check the file with \
             `{} -t`",
            c.name(),
            c.name()
        ),
    }
}

/// The most bases one record may have: half the memory this process may use
/// ([`crate::runtime::resources::memory_limit_bytes`]), since a whole record is held in memory and
/// translating it costs about as much again. Unlimited when no limit can be read; allocation
/// failures are still reported, not aborted on.
fn record_limit() -> usize {
    crate::runtime::resources::memory_limit_bytes().map_or(usize::MAX, |bytes| {
        usize::try_from(bytes / 2).unwrap_or(usize::MAX)
    })
}

/// Look at the first bytes and refuse what is clearly not FASTA, with a message that says what
/// it looks like instead. Leading blank lines are skipped, as Biopython does. `false` = empty.
fn sniff<R: BufRead>(reader: &mut R, label: &str, compression: Compression) -> Result<bool> {
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| read_error(label, compression, 0, e))?;
        if buf.is_empty() {
            return Ok(false);
        }
        let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if blank == buf.len() {
            reader.consume(blank);
            continue;
        }
        if buf[..buf.len().min(8192)].contains(&0) {
            if compression != Compression::Plain {
                let name = compression.name();
                bail!(
                    "{label} is {name}-compressed but holds binary data, not FASTA text (or the \
                     file is damaged; check it with `{name} -t`)"
                );
            }
            bail!("{label} is a binary file, not FASTA text (expected lines starting with '>')");
        }
        match buf[blank] {
            b'>' => {
                reader.consume(blank);
                return Ok(true);
            }
            b'@' => bail!(
                "{label} looks like FASTQ (starts with '@'); convert it to FASTA first, e.g. `seqkit fq2fa`"
            ),
            _ => bail!("{label} is not FASTA: the first non-blank line does not start with '>'"),
        }
    }
}

impl Iterator for FastaReader {
    type Item = Result<FastaRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let next = self.read_record();
        if !matches!(next, Ok(Some(_))) {
            self.finished = true;
        }
        next.transpose()
    }
}

/// Read a whole (modest) FASTA file of `kind`, refusing duplicate ids since later steps join by
/// id. `None` when the input is empty.
pub fn read_unique(input: &Path, kind: SeqKind) -> Result<Option<Vec<FastaRecord>>> {
    let Some(reader) = FastaReader::open_allow_empty(input)? else {
        return Ok(None);
    };
    let label = reader.label().to_string();
    collect_unique(&label, reader.with_kind(kind)).map(Some)
}

/// Every record of `records` (read from the input named `label`), refusing duplicate ids since
/// later steps join by id. Takes any iterator so that a caller may read each record further
/// (proteins) before its id is checked, in the order the reader met them.
pub fn collect_unique(
    label: &str,
    records: impl IntoIterator<Item = Result<FastaRecord>>,
) -> Result<Vec<FastaRecord>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for rec in records {
        let rec = rec?;
        if !seen.insert(rec.id.clone()) {
            bail!(
                "{label}: duplicate record id '{}'; ids must be unique because predict joins by id",
                rec.id
            );
        }
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// All records of `bytes`, or the first error as its one-line message.
    fn read_all(bytes: &[u8]) -> Result<Vec<FastaRecord>, String> {
        read_as(bytes, SeqKind::Nucleotide)
    }

    fn read_as(bytes: &[u8], kind: SeqKind) -> Result<Vec<FastaRecord>, String> {
        let reader =
            FastaReader::from_reader(Box::new(io::Cursor::new(bytes.to_vec())), "t.fa".into())
                .map_err(|e| format!("{e:#}"))?;
        let Some(reader) = reader else {
            return Ok(Vec::new());
        };
        reader
            .with_kind(kind)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| format!("{e:#}"))
    }

    fn pairs(recs: &[FastaRecord]) -> Vec<(&str, &str)> {
        recs.iter()
            .map(|r| (r.id.as_str(), std::str::from_utf8(&r.seq).unwrap()))
            .collect()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Plain => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::stream::encode_all(data, 1).unwrap(),
        }
    }

    const ALL: [Compression; 5] = [
        Compression::Plain,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ];

    #[test]
    fn records_lines_and_blank_lines() {
        let got = read_all(b"\n\n>a desc here\nACGT\nAC\n\n>b\nGG\n>c\n").unwrap();
        assert_eq!(pairs(&got), [("a", "ACGTAC"), ("b", "GG"), ("c", "")]);
    }

    #[test]
    fn runs_of_blank_lines_longer_than_the_buffer_are_skipped() {
        let mut bytes = b">a\nAC\n".to_vec();
        bytes.extend(vec![b'\n'; 3 << 20]);
        bytes.extend(b"GT \r\n\r\n\n\n");
        bytes.extend(vec![b'\n'; (1 << 20) + 7]);
        bytes.extend(b">b\n\n\nT\n\n");
        let got = read_all(&bytes).unwrap();
        assert_eq!(pairs(&got), [("a", "ACGT"), ("b", "T")]);
    }

    #[test]
    fn windows_line_ends_and_trailing_spaces_are_dropped() {
        let got = read_all(b">a x\r\nAC \r\nGT\r\n>b\r\nT").unwrap();
        assert_eq!(pairs(&got), [("a", "ACGT"), ("b", "T")]);
    }

    #[test]
    fn inner_spaces_are_kept_for_validation_to_report() {
        let got = read_all(b">a\nAC GT\n").unwrap();
        assert_eq!(pairs(&got), [("a", "AC GT")]);
    }

    #[test]
    fn rna_is_read_as_dna() {
        let got = read_all(b">r\nAUGuuU\n>d\nACGT\n").unwrap();
        assert_eq!(pairs(&got), [("r", "ATGttT"), ("d", "ACGT")]);
    }

    #[test]
    fn verbatim_keeps_every_letter() {
        let got = read_as(b">r x\nAUGuu \r\nN*1\n", SeqKind::Verbatim).unwrap();
        assert_eq!(pairs(&got), [("r", "AUGuuN*1")]);
    }

    #[test]
    fn non_utf8_description_is_accepted() {
        let got = read_all(b">seq1 caf\xe9 \xff\xfe\nACGT\n").unwrap();
        assert_eq!(pairs(&got), [("seq1", "ACGT")]);
        // A non-ASCII space (U+00A0) ends the id as Biopython's str.split() does.
        let got = read_all(b">seq2\xc2\xa0\xff\nA\n").unwrap();
        assert_eq!(pairs(&got), [("seq2", "A")]);
    }

    #[test]
    fn non_utf8_or_control_characters_in_an_id_are_refused_by_record_number() {
        let err = read_all(b">ok\nA\n>bad\xffid desc\nA\n").unwrap_err();
        assert!(
            err.contains("t.fa: record #2") && err.contains("0xff"),
            "{err}"
        );
        let err = read_all(b">ok\nA\n>a\x01b\nA\n").unwrap_err();
        assert!(
            err.contains("record #2") && err.contains("control"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_header_is_an_error_even_without_a_sequence() {
        // A lone '>' must not end the file early and drop the records after it.
        let err = read_all(b">a\nA\n>\n>b\nA\n").unwrap_err();
        assert!(err.contains("record #2 has an empty header"), "{err}");
        let err = read_all(b">a\nA\n> desc\nA\n").unwrap_err();
        assert!(err.contains("record #2 has an empty header"), "{err}");
    }

    #[test]
    fn a_header_without_end_is_capped() {
        let mut bytes = b">".to_vec();
        bytes.resize(MAX_HEADER_BYTES + 10, b'a');
        let err = read_all(&bytes).unwrap_err();
        assert!(
            err.contains("record #1 has a header line longer than 1 MiB"),
            "{err}"
        );
    }

    #[test]
    fn every_compression_is_detected_and_read() {
        let fasta = b">a\nACGT\n>b\nUUAA\n";
        for c in ALL {
            let bytes = compress(c, fasta);
            assert_eq!(Compression::detect(&bytes), c);
            let got = read_all(&bytes).unwrap();
            assert_eq!(pairs(&got), [("a", "ACGT"), ("b", "TTAA")], "{c:?}");
        }
    }

    #[test]
    fn concatenated_streams_are_read_through() {
        for c in ALL {
            let mut bytes = compress(c, b">a\nAC\nGT\n");
            bytes.extend(compress(c, b">b\nTT\n"));
            let got = read_all(&bytes).unwrap();
            assert_eq!(pairs(&got), [("a", "ACGT"), ("b", "TT")], "{c:?}");
        }
    }

    #[test]
    fn truncated_or_corrupt_compressed_input_is_an_error_naming_the_format() {
        let fasta: Vec<u8> = (0..200)
            .flat_map(|i| format!(">r{i}\nACGTTGCAACGGTCA\n").into_bytes())
            .collect();
        for c in &ALL[1..] {
            let bytes = compress(*c, &fasta);
            let cut = &bytes[..bytes.len() - 9];
            let err = read_all(cut).unwrap_err();
            assert!(
                err.contains(&format!("corrupt or truncated {} data", c.name())),
                "{c:?}: {err}"
            );
            let mut flipped = bytes.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x55;
            flipped[mid + 1] ^= 0xaa;
            // A flipped byte is caught by the format's checksum or structure.
            let err = read_all(&flipped).unwrap_err();
            assert!(err.contains(c.name()), "{c:?}: {err}");
        }
    }

    #[test]
    fn archives_and_non_fasta_are_refused_up_front() {
        let err = read_all(b"PK\x03\x04rest").unwrap_err();
        assert!(err.contains("zip archive"), "{err}");
        let err = read_all(&compress(Compression::Zstd, b"@r\nACGT\n+\nIIII\n")).unwrap_err();
        assert!(err.contains("FASTQ"), "{err}");
        assert!(read_all(&compress(Compression::Xz, b"\n\n"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ids_follow_biopython() {
        assert_eq!(record_id(b"a b c"), Ok("a"));
        assert_eq!(record_id(b"a\tb"), Ok("a"));
        assert!(record_id(b"").is_err());
        assert!(record_id(b" a").is_err());
    }

    #[test]
    fn the_record_limit_is_below_physical_memory() {
        if let Some(total) = crate::runtime::resources::memory_limit_bytes() {
            assert!((record_limit() as u64) <= total / 2);
        }
    }
}
