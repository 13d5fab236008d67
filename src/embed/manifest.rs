//! `embed-dna` / `embed-protein --manifest FILE`: several inputs embedded by one process, the
//! model loaded once ([`super::reuse`]). A pipeline with many small samples (viromes, small
//! assemblies) would otherwise load ESM-2 3B once per sample, and loading would dominate.
//!
//! The manifest is a TSV file, one input a line: `INPUT<TAB>OUTPUT[<TAB>REPORT]`; blank lines
//! and lines starting with `#` are skipped; relative paths are relative to the working
//! directory, as on the command line. Each input is embedded exactly as `embed-* --output
//! OUTPUT --report REPORT INPUT` would embed it: its own output file (its ids only, written
//! atomically), its own failed list, checkpoint and report. So that no output can mix with or
//! overwrite another, every file a line names must be distinct from every other one named.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::failed_path;

/// A manifest larger than this is refused before it is read: even a million inputs fit.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestEntry {
    pub input: PathBuf,
    pub output: PathBuf,
    pub report: Option<PathBuf>,
    /// Its line number, for messages.
    pub line: usize,
}

/// The manifest's entries, checked (see the module's header).
pub fn read(path: &Path) -> Result<Vec<ManifestEntry>> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read --manifest {shown}"))?
        .len();
    if size > MAX_MANIFEST_BYTES {
        bail!(
            "--manifest {shown}: {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may \
             have; split the inputs over several manifests"
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read --manifest {shown}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "--manifest {shown}: not UTF-8 text (invalid byte at offset {}); it must list \
             INPUT<TAB>OUTPUT[<TAB>REPORT] lines",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse(&text).with_context(|| format!("--manifest {shown}"))
}

/// The entries of a manifest's text.
pub fn parse(text: &str) -> Result<Vec<ManifestEntry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.trim().is_empty()) {
            bail!(
                "line {}: expected INPUT<TAB>OUTPUT or INPUT<TAB>OUTPUT<TAB>REPORT, found {} \
                 tab-separated field(s){}",
                i + 1,
                fields.len(),
                if fields.iter().any(|f| f.trim().is_empty()) {
                    " with an empty one"
                } else {
                    ""
                }
            );
        }
        if fields[0] == "-" {
            bail!(
                "line {}: `-` (stdin) cannot be one input of several; give a file",
                i + 1
            );
        }
        entries.push(ManifestEntry {
            input: PathBuf::from(fields[0]),
            output: PathBuf::from(fields[1]),
            report: fields.get(2).map(PathBuf::from),
            line: i + 1,
        });
    }
    if entries.is_empty() {
        bail!("no inputs (every line is blank or a # comment)");
    }
    check_distinct(&entries)?;
    Ok(entries)
}

/// Every file written (output, its failed list, report) is named once, and is none of the
/// inputs: otherwise one input's output would replace another's, or an input be overwritten.
fn check_distinct(entries: &[ManifestEntry]) -> Result<()> {
    let mut seen: HashMap<PathBuf, (usize, &'static str)> = HashMap::new();
    for e in entries {
        seen.insert(normal(&e.input), (e.line, "input"));
    }
    for e in entries {
        let written = [
            Some((e.output.clone(), "output")),
            Some((failed_path(&e.output), "failed list")),
            e.report.clone().map(|r| (r, "report")),
        ];
        for (path, what) in written.into_iter().flatten() {
            if let Some((line, other)) = seen.insert(normal(&path), (e.line, what)) {
                bail!(
                    "line {}: its {what} {} is also the {other} of line {line}; give every \
                     input its own output and report",
                    e.line,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether two paths name the same file (as far as their text says).
pub fn same_path(a: &Path, b: &Path) -> bool {
    normal(a) == normal(b)
}

/// A path as compared above: absolute, `.` left out (`a` and `./a` are the same file).
fn normal(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_reports() {
        let m =
            parse("# input\toutput\treport\n1/a.faa\ta.st\ta.json\n\n2/a.faa\tb.st\r\n").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].input, PathBuf::from("1/a.faa"));
        assert_eq!(m[0].report, Some(PathBuf::from("a.json")));
        assert_eq!(
            (m[1].output.clone(), m[1].report.clone(), m[1].line),
            (PathBuf::from("b.st"), None, 4)
        );
    }

    #[test]
    fn refuses_what_would_mix_or_overwrite() {
        let cases = [
            ("", "no inputs"),
            ("# only a comment\n", "no inputs"),
            ("a.faa\n", "line 1: expected"),
            ("a.faa\ta.st\ta.json\textra\n", "found 4"),
            ("a.faa\t\ta.json\n", "with an empty one"),
            ("-\ta.st\n", "stdin"),
            (
                "a.faa\tx.st\nb.faa\t./x.st\n",
                "line 2: its output ./x.st is also the output of line 1",
            ),
            (
                "a.faa\tx.st\nb.faa\ty.st\tx.st\n",
                "is also the output of line 1",
            ),
            (
                "a.faa\tb.faa\nb.faa\tc.st\n",
                "line 1: its output b.faa is also the input of line 2",
            ),
            (
                "a.faa\tx.st\nb.faa\ty.st\tx.st.failed.tsv\n",
                "is also the failed list of line 1",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
