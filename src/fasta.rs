//! Reading FASTA input the way users hand it to us: a path or `-` for stdin, plain or gzip
//! (detected from the bytes, not the name), with the mistakes people make caught up front
//! (FASTQ, binary files, empty files) and reported as one line that names the file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;

/// One FASTA record: the id (header up to the first whitespace) and the sequence lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastaRecord {
    pub id: String,
    pub seq: Vec<u8>,
}

/// A streaming FASTA reader over a file, gzip file or stdin.
pub struct FastaReader {
    inner: bio::io::fasta::Records<BufReader<Box<dyn Read + Send>>>,
    label: String,
    count: usize,
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
        let mut buffered = BufReader::with_capacity(1 << 20, raw);
        let is_gzip = buffered
            .fill_buf()
            .with_context(|| format!("cannot read {label}"))?
            .starts_with(&[0x1f, 0x8b]);
        let decoded: Box<dyn Read + Send> = if is_gzip {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut reader = BufReader::with_capacity(1 << 20, decoded);
        if !sniff(&mut reader, &label)? {
            return Ok(None);
        }
        Ok(Some(Self {
            inner: bio::io::fasta::Reader::from_bufread(reader).records(),
            label,
            count: 0,
        }))
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Look at the first bytes and refuse what is clearly not FASTA, with a message that says what
/// it looks like instead. Leading blank lines are skipped, as Biopython does. `false` = empty.
fn sniff<R: BufRead>(reader: &mut R, label: &str) -> Result<bool> {
    loop {
        let buf = reader
            .fill_buf()
            .with_context(|| format!("cannot read {label} (corrupt gzip?)"))?;
        if buf.is_empty() {
            return Ok(false);
        }
        let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if blank == buf.len() {
            reader.consume(blank);
            continue;
        }
        if buf[..buf.len().min(8192)].contains(&0) {
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
        let rec = self.inner.next()?;
        self.count += 1;
        Some(match rec {
            Ok(rec) => {
                if rec.id().is_empty() {
                    Err(anyhow::anyhow!(
                        "{}: record #{} has an empty header (a line with only '>'); give every record an id",
                        self.label,
                        self.count
                    ))
                } else {
                    let id = rec.id().to_string();
                    Ok(FastaRecord { id, seq: rec.seq().to_vec() })
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(anyhow::anyhow!(
                "{}: record #{} is not text (invalid UTF-8 or binary data); is this really a FASTA file?",
                self.label,
                self.count
            )),
            Err(e) => Err(anyhow::anyhow!(
                "{}: cannot read record #{}: {e}",
                self.label,
                self.count
            )),
        })
    }
}

/// Read a whole (modest) FASTA file, refusing duplicate ids since later steps join by id.
/// `None` when the input is empty.
pub fn read_unique(input: &Path) -> Result<Option<Vec<FastaRecord>>> {
    let Some(reader) = FastaReader::open_allow_empty(input)? else {
        return Ok(None);
    };
    let label = reader.label().to_string();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for rec in reader {
        let rec = rec?;
        if !seen.insert(rec.id.clone()) {
            bail!(
                "{label}: duplicate record id '{}'; ids must be unique because predict joins by id",
                rec.id
            );
        }
        out.push(rec);
    }
    Ok(Some(out))
}
