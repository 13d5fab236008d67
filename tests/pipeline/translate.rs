//! `virnucpro translate` against the original's goldens, and its behaviour on bad input.

use std::fs;
use std::path::Path;

use crate::common::{assert_error, fixtures, records, run, stderr};

fn translate(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "translate",
        input.to_str().unwrap(),
        "--outdir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

fn check_against_golden(chunk: &str) {
    let golden = fixtures().join(format!("e2e/chunk{chunk}"));
    let out = tempfile::tempdir().unwrap();
    let o = translate(
        &fixtures().join("e2e/input.fa"),
        out.path(),
        &["--chunk-size", chunk, "--write-chunks"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "chunked.fa",
        "identified_nucleotide.fa",
        "identified_protein.faa",
    ] {
        let want = fs::read_to_string(golden.join(file)).unwrap();
        let got = fs::read_to_string(out.path().join(file)).unwrap();
        let (want_r, got_r) = (records(&want), records(&got));
        for (i, (w, g)) in want_r.iter().zip(&got_r).enumerate() {
            assert_eq!(w, g, "{file} (chunk {chunk}): record {i} differs");
        }
        assert_eq!(
            want_r.len(),
            got_r.len(),
            "{file} (chunk {chunk}): record count"
        );
        assert_eq!(
            want, got,
            "{file} (chunk {chunk}): bytes differ (line layout)"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(out.path().join("translate.json")).unwrap()).unwrap();
    assert_eq!(summary["records"], 10);
    assert_eq!(summary["records_skipped"], 0);
    let orfs = records(&fs::read_to_string(golden.join("identified_protein.faa")).unwrap()).len();
    assert_eq!(summary["orfs"], orfs as u64);
}

#[test]
fn reproduces_original_chunk300() {
    check_against_golden("300");
}

#[test]
fn reproduces_original_chunk500() {
    check_against_golden("500");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn outputs_of(dir: &Path) -> (String, String) {
    (
        fs::read_to_string(dir.join("identified_nucleotide.fa")).unwrap(),
        fs::read_to_string(dir.join("identified_protein.faa")).unwrap(),
    )
}

#[test]
fn thread_count_does_not_change_output() {
    let sop7 = fixtures().join("e2e/input.fa");
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(translate(&sop7, a.path(), &["-c", "300", "--threads", "1"])
        .status
        .success());
    assert!(translate(&sop7, b.path(), &["-c", "300", "--threads", "3"])
        .status
        .success());
    assert_eq!(outputs_of(a.path()), outputs_of(b.path()));
}

#[test]
fn gzip_and_stdin_give_the_same_output() {
    use std::io::Write;
    let input = fs::read(fixtures().join("e2e/input.fa")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&input).unwrap();
    let gz_path = write(tmp.path(), "input.fa.gz", &gz.finish().unwrap());
    let (plain, zipped, piped) = (
        tmp.path().join("p"),
        tmp.path().join("g"),
        tmp.path().join("s"),
    );
    assert!(
        translate(&fixtures().join("e2e/input.fa"), &plain, &["-c", "500"])
            .status
            .success()
    );
    assert!(translate(&gz_path, &zipped, &["-c", "500"])
        .status
        .success());
    let o = run(
        &["translate", "-", "-c", "500", "-o", piped.to_str().unwrap()],
        Some(&input),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outputs_of(&plain), outputs_of(&zipped));
    assert_eq!(outputs_of(&plain), outputs_of(&piped));
}

#[test]
fn windows_line_endings_are_read_like_unix_ones() {
    let input = fs::read_to_string(fixtures().join("e2e/input.fa")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let crlf = write(
        tmp.path(),
        "crlf.fa",
        input.replace('\n', "\r\n").as_bytes(),
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(
        translate(&fixtures().join("e2e/input.fa"), &a, &["-c", "300"])
            .status
            .success()
    );
    assert!(translate(&crlf, &b, &["-c", "300"]).status.success());
    assert_eq!(outputs_of(&a), outputs_of(&b));
}

#[test]
fn shards_hold_at_most_n_orfs_and_concatenate_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, sharded) = (tmp.path().join("w"), tmp.path().join("s"));
    assert!(
        translate(&fixtures().join("e2e/input.fa"), &whole, &["-c", "300"])
            .status
            .success()
    );
    let o = translate(
        &fixtures().join("e2e/input.fa"),
        &sharded,
        &["-c", "300", "--shard-size", "7"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = fs::read_dir(sharded.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let (mut nt, mut aa) = (String::new(), String::new());
    let nt_names: Vec<&String> = names.iter().filter(|n| n.ends_with(".fa")).collect();
    assert_eq!(
        nt_names.len(),
        30usize.div_ceil(7),
        "30 ORFs in shards of 7: {names:?}"
    );
    for n in &nt_names {
        let text = fs::read_to_string(sharded.join("shards").join(n)).unwrap();
        assert!(records(&text).len() <= 7);
        nt.push_str(&text);
        let faa = n.replace("identified_nucleotide.fa", "identified_protein.faa");
        aa.push_str(&fs::read_to_string(sharded.join("shards").join(faa)).unwrap());
    }
    assert_eq!((nt, aa), outputs_of(&whole));
    assert!(!sharded.join("identified_nucleotide.fa").exists());
    let leftovers: Vec<_> = fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_sample_without_orfs_still_gets_one_empty_shard_pair() {
    // Two bases: no codon, so no ORF. A workflow fanning out over shards must still see the
    // sample (and end with empty tables), so translate writes shard 00000, empty.
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "in.fa", b">tiny\nAC\n");
    let out = tmp.path().join("o");
    let o = translate(&input, &out, &["-c", "500", "--shard-size", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = fs::read_dir(out.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00000.identified_nucleotide.fa",
            "00000.identified_protein.faa"
        ]
    );
    for n in &names {
        assert_eq!(fs::read(out.join("shards").join(n)).unwrap(), b"", "{n}");
    }
}

#[test]
fn empty_record_is_skipped_with_a_warning_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.fa",
        b">empty\n>real desc\nATGGCCATGGCC\n>also_empty\n\n",
    );
    let out = tmp.path().join("o");
    let o = translate(&input, &out, &["-c", "300"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'empty' skipped: empty sequence"),
        "{}",
        stderr(&o)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("translate.json")).unwrap()).unwrap();
    assert_eq!(summary["records"], 3);
    assert_eq!(summary["records_skipped"], 2);
    assert_eq!(summary["skipped"][1]["id"], "also_empty");
    assert!(outputs_of(&out).1.starts_with(">real_chunk_1F1\nMAMA\n"));
}

#[test]
fn missing_file_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = translate(
        &tmp.path().join("nope.fa"),
        &tmp.path().join("o"),
        &["-c", "300"],
    );
    assert_error(&o, &["nope.fa", "cannot open"]);
}

#[test]
fn fastq_binary_and_empty_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fq = write(tmp.path(), "reads.fq", b"@r1\nACGT\n+\nIIII\n");
    assert_error(
        &translate(&fq, &tmp.path().join("o1"), &["-c", "300"]),
        &["reads.fq", "FASTQ"],
    );
    let bin = write(
        tmp.path(),
        "blob.bin",
        &[0x7f, b'E', b'L', b'F', 0, 0, 1, 2],
    );
    assert_error(
        &translate(&bin, &tmp.path().join("o2"), &["-c", "300"]),
        &["blob.bin", "binary"],
    );
    let empty = write(tmp.path(), "empty.fa", b"");
    assert_error(
        &translate(&empty, &tmp.path().join("o3"), &["-c", "300"]),
        &["empty.fa", "empty"],
    );
    let blank = write(tmp.path(), "blank.fa", b"\n\n  \n");
    assert_error(
        &translate(&blank, &tmp.path().join("o4"), &["-c", "300"]),
        &["blank.fa", "empty"],
    );
    let text = write(tmp.path(), "notes.txt", b"hello\n>x\nACGT\n");
    assert_error(
        &translate(&text, &tmp.path().join("o5"), &["-c", "300"]),
        &["notes.txt", "not FASTA"],
    );
}

#[test]
fn bad_character_names_record_and_character_and_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.fa",
        b">good\nACGTACGTAAAT\n>prot\nMKVLEEQ\n",
    );
    let out = tmp.path().join("o");
    assert_error(
        &translate(&input, &out, &["-c", "300"]),
        &["in.fa", "'prot'", "'L'", "position 4"],
    );
    let left: Vec<_> = fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "a failed run left files: {left:?}");
}

#[test]
fn duplicate_ids_are_an_error_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.fa",
        b">a\nATGGCC\n>b\nATGAAA\n>a second\nATGTTT\n",
    );
    assert_error(
        &translate(&input, &tmp.path().join("o"), &["-c", "300"]),
        &["duplicate record id 'a'", "--allow-duplicate-ids"],
    );
    let o = translate(
        &input,
        &tmp.path().join("o2"),
        &["-c", "300", "--allow-duplicate-ids"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let prot = records(&outputs_of(&tmp.path().join("o2")).1);
    assert_eq!(prot.iter().filter(|(id, _)| id == "a_chunk_1F1").count(), 2);
}

#[test]
fn chunk_size_below_a_codon_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["0", "2"] {
        let o = translate(&fixtures().join("e2e/input.fa"), tmp.path(), &["-c", bad]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("--chunk-size"), "{}", stderr(&o));
    }
}

#[test]
fn unwritable_outdir_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "plainfile", b"x");
    let o = translate(
        &fixtures().join("e2e/input.fa"),
        &file.join("sub"),
        &["-c", "300"],
    );
    assert_error(&o, &["output directory", "plainfile"]);
}

#[test]
fn help_lists_working_subcommands_and_version_prints() {
    let o = run(&["--help"], None);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("translate"));
    let o = run(&["--version"], None);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("virnucpro "));
}
