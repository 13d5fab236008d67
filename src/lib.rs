//! virnucpro: VirNucPro viral sequence identification in Rust.
//!
//! Data flow (docs/architecture.md): `translate` (chunks + six-frame ORFs) -> `embed-dna` (DNABERT-S)
//! and `embed-protein` (ESM-2) -> `predict` (MLP classifier, per-chunk and per-sequence calls).

pub mod cli;
pub mod config;
pub mod device;
pub mod embed;
pub mod flag_values;
pub mod hub;
pub mod io;
pub mod models;
pub mod pipeline;
pub mod plot;
pub mod predict;
pub mod preflight;
pub mod runtime;
pub mod seq;
pub mod subcommand;
pub mod tokenize;
pub mod train;
pub mod translate;
pub mod weights;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// docs/architecture.md promises to name every file of `src/`: a file in a folder is named
    /// in its folder's row of the modules table (`| \`hub/\` | ... \`client.rs\` ...`) or by
    /// its path anywhere; a top-level file by its name in backquotes.
    #[test]
    fn the_architecture_map_names_every_source_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let row = |folder: &str| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| `{folder}/` |")))
                .unwrap_or("")
        };
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let missing: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(root.join("src"))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .filter(|rel| match rel.split_once('/') {
                Some((folder, name)) => {
                    !doc.contains(rel.as_str()) && !row(folder).contains(&format!("`{name}`"))
                }
                None => !doc.contains(&format!("`{rel}`")),
            })
            .collect();
        assert!(
            missing.is_empty(),
            "docs/architecture.md does not name {missing:?}: add each to its folder's row"
        );
    }

    /// The code characters of Rust source `text` with their line numbers (1-based): comments,
    /// string and character literals left out, so that braces in them do not count.
    fn code_chars(text: &str) -> Vec<(usize, char)> {
        let chars: Vec<char> = text.chars().collect();
        let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
        let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
        while i < chars.len() {
            let c = chars[i];
            if c == '/' && at(i + 1) == '/' {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            if c == '/' && at(i + 1) == '*' {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && at(i + 1) == '/') {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
                i += 2;
                continue;
            }
            if c == 'r' && (at(i + 1) == '"' || (at(i + 1) == '#' && at(i + 2) != '[')) {
                // A raw string: r"..." or r#"..."#, ended by a quote and as many hashes.
                let mut j = i + 1;
                let mut hashes = 0;
                while at(j) == '#' {
                    hashes += 1;
                    j += 1;
                }
                if at(j) == '"' {
                    j += 1;
                    loop {
                        if j >= chars.len() {
                            break;
                        }
                        if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                            j += 1 + hashes;
                            break;
                        }
                        line += usize::from(chars[j] == '\n');
                        j += 1;
                    }
                    i = j;
                    continue;
                }
            }
            if c == '"' {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    line += usize::from(at(i) == '\n');
                    i += 1;
                }
                i += 1;
                continue;
            }
            if c == '\'' {
                // A character literal ('x', '\n', '\u{7f}'); a lifetime has no closing quote.
                let end = if at(i + 1) == '\\' {
                    (i + 2..(i + 12).min(chars.len())).find(|&j| chars[j] == '\'')
                } else {
                    (at(i + 2) == '\'').then_some(i + 2)
                };
                if let Some(end) = end {
                    i = end + 1;
                    continue;
                }
            }
            line += usize::from(c == '\n');
            out.push((line, c));
            i += 1;
        }
        out
    }

    /// Every function of `text` outside its tests: (name, first line, lines from its `fn` to
    /// its closing brace).
    fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
        let code = code_chars(text);
        let lines: Vec<&str> = text.lines().collect();
        let tests_from = lines
            .windows(2)
            .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
            .map_or(usize::MAX, |i| i + 1);
        let mut out = Vec::new();
        for (n, l) in lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_start()))
        {
            if n >= tests_from {
                break;
            }
            let mut rest: &str = l;
            for q in [
                "pub(crate) ",
                "pub(super) ",
                "pub ",
                "const ",
                "async ",
                "unsafe ",
            ] {
                rest = rest.strip_prefix(q).unwrap_or(rest);
            }
            let Some(name) = rest.strip_prefix("fn ") else {
                continue;
            };
            let name: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let (mut depth, mut end) = (0usize, None);
            for &(line, c) in code.iter().skip_while(|(line, _)| *line < n) {
                match c {
                    ';' if depth == 0 => break,
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(line);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if let Some(end) = end {
                out.push((name, n, end - n + 1));
            }
        }
        out
    }

    /// No function in `src/` (tests aside) is longer than a screenful and a half: a longer one
    /// decides several things, and is split by what each part decides.
    #[test]
    fn no_function_is_longer_than_a_screen_and_a_half() {
        const MOST_LINES: usize = 150;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let mut long = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (name, line, n) in function_lengths(&text) {
                if n > MOST_LINES {
                    let rel = f.strip_prefix(root).unwrap().display().to_string();
                    long.push(format!("{rel}:{line} {name} ({n} lines)"));
                }
            }
        }
        assert!(
            long.is_empty(),
            "functions over {MOST_LINES} lines: {long:?}"
        );
    }

    #[test]
    fn function_lengths_skip_braces_in_strings_comments_and_tests() {
        let text = "fn a() {\n    let s = \"}}}\"; // }\n    let c = '}';\n    let r = r#\"}\"#;\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    /* { */ v\n}\nfn decl();\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
        assert_eq!(
            function_lengths(text),
            vec![("a".to_string(), 1, 5), ("b".to_string(), 6, 3)]
        );
    }
}
