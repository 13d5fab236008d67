//! The Nextflow pipeline without Nextflow (which cannot run here): each module's `script:` and
//! `stub:` blocks are read from its main.nf, interpolated the way Groovy would (`${...}`, `$a.b`,
//! `\$`, `\\`, then Nextflow's indentation strip) with the task's inputs staged in a work
//! directory, the `-profile test` parameters and the `task.ext.args` of conf/modules.config, and
//! run with bash (process.shell of conf/base.config) against the real binary, in the workflow's
//! order. Plus: every flag the modules and configs pass exists in the CLI, the scripts are
//! shellcheck clean, exit code 2 of the embedding steps is a success, the params are documented
//! in nextflow_schema.json, and main.nf includes what exists.
//!
//! The Groovy here is a deliberately small subset (string literals, `$` interpolation, dotted
//! names, `+`, `==`, `!=`, `?:`, `? :`, `def x = ...`): a module that needs more fails these
//! tests instead of being half-understood.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixtures, shellcheck};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A Groovy subset: values, GString interpolation, expressions.

#[derive(Clone, Debug, PartialEq)]
enum V {
    Null,
    Bool(bool),
    /// A number, kept as written (Groovy prints it back the same way for our values).
    Num(String),
    Str(String),
    /// Staged files of a `path` input: Nextflow writes them space-separated; `[]` is "no file".
    Files(Vec<String>),
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => n.parse::<f64>().map(|x| x != 0.0).unwrap_or(true),
            V::Str(s) => !s.is_empty(),
            V::Files(f) => !f.is_empty(),
        }
    }
    fn render(&self) -> String {
        match self {
            V::Null => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => n.clone(),
            V::Str(s) => s.clone(),
            V::Files(f) => f.join(" "),
        }
    }
    fn str(s: &str) -> V {
        V::Str(s.to_string())
    }
    fn file(name: &str) -> V {
        V::Files(vec![name.to_string()])
    }
}

/// Variables by dotted name: `meta.id`, `task.cpus`, `params.outdir`, `fasta`, ...
#[derive(Clone, Default)]
struct Ctx(BTreeMap<String, V>);

impl Ctx {
    fn set(&mut self, name: &str, v: V) -> &mut Self {
        self.0.insert(name.to_string(), v);
        self
    }
    fn get(&self, name: &str) -> Result<V, String> {
        if let Some(v) = self.0.get(name) {
            return Ok(v.clone());
        }
        // Unset task.ext.* settings read as null in Nextflow.
        if name.starts_with("task.ext.") {
            return Ok(V::Null);
        }
        Err(format!("unbound variable `{name}`"))
    }
}

/// Interpolate the body of a double-quoted (or triple-double-quoted) Groovy string.
fn gstring(body: &str, ctx: &Ctx) -> Result<String, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let next = *chars.get(i + 1).ok_or("string ends with a backslash")?;
                match next {
                    '\\' => out.push('\\'),
                    '$' => out.push('$'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    '\n' => {} // line continuation: the newline disappears
                    c => return Err(format!("unsupported escape \\{c}")),
                }
                i += 2;
            }
            '$' => match chars.get(i + 1) {
                Some('{') => {
                    let close = (i + 2..chars.len())
                        .find(|&j| chars[j] == '}')
                        .ok_or("unclosed ${")?;
                    let inner: String = chars[i + 2..close].iter().collect();
                    if inner.contains('{') {
                        return Err(format!(
                            "nested braces in ${{{inner}}} are beyond this test"
                        ));
                    }
                    out.push_str(&eval(&inner, ctx)?.render());
                    i = close + 1;
                }
                Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                    // Groovy takes `$a.b.c` greedily as a property path.
                    let mut j = i + 1;
                    let ident = |j: usize| {
                        j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_')
                    };
                    while ident(j) {
                        j += 1;
                    }
                    while j + 1 < chars.len()
                        && chars[j] == '.'
                        && (chars[j + 1].is_ascii_alphabetic() || chars[j + 1] == '_')
                    {
                        j += 1;
                        while ident(j) {
                            j += 1;
                        }
                    }
                    let name: String = chars[i + 1..j].iter().collect();
                    out.push_str(&ctx.get(&name)?.render());
                    i = j;
                }
                _ => {
                    return Err(format!(
                        "a bare `$` at {i} is a Groovy syntax error (escape it: \\$)"
                    ))
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Single(String),
    Double(String),
    Num(String),
    Name(String),
    Op(&'static str),
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != ch {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            if j >= c.len() {
                return Err(format!("unclosed string in {src:?}"));
            }
            let body: String = c[i + 1..j].iter().collect();
            out.push(if ch == '"' {
                Tok::Double(body)
            } else {
                Tok::Single(body)
            });
            i = j + 1;
        } else if ch.is_ascii_digit() {
            let mut j = i;
            while j < c.len() && (c[j].is_ascii_digit() || c[j] == '.') {
                j += 1;
            }
            out.push(Tok::Num(c[i..j].iter().collect()));
            i = j;
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let mut j = i;
            while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_' || c[j] == '.') {
                j += 1;
            }
            out.push(Tok::Name(c[i..j].iter().collect()));
            i = j;
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match two.as_str() {
                "?:" => Some("?:"),
                "==" => Some("=="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
                continue;
            }
            let op = match ch {
                '?' => "?",
                ':' => ":",
                '+' => "+",
                '(' => "(",
                ')' => ")",
                _ => return Err(format!("unsupported character {ch:?} in {src:?}")),
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    ctx: &'a Ctx,
}

impl Parser<'_> {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.peek_op(op) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected `{op}` at token {}: {:?}",
                self.pos, self.toks
            ))
        }
    }
    fn ternary(&mut self) -> Result<V, String> {
        let cond = self.equality()?;
        if self.peek_op("?:") {
            self.pos += 1;
            let other = self.ternary()?;
            return Ok(if cond.truthy() { cond } else { other });
        }
        if self.peek_op("?") {
            self.pos += 1;
            let yes = self.ternary()?;
            self.expect(":")?;
            let no = self.ternary()?;
            return Ok(if cond.truthy() { yes } else { no });
        }
        Ok(cond)
    }
    fn equality(&mut self) -> Result<V, String> {
        let left = self.additive()?;
        for (op, want) in [("==", true), ("!=", false)] {
            if self.peek_op(op) {
                self.pos += 1;
                let right = self.additive()?;
                let same = match (&left, &right) {
                    (V::Null, V::Null) => true,
                    (V::Null, _) | (_, V::Null) => false,
                    (a, b) => a.render() == b.render(),
                };
                return Ok(V::Bool(same == want));
            }
        }
        Ok(left)
    }
    fn additive(&mut self) -> Result<V, String> {
        let mut acc = self.primary()?;
        while self.peek_op("+") {
            self.pos += 1;
            let right = self.primary()?;
            acc = match (&acc, &right) {
                (V::Str(_), _) | (_, V::Str(_)) => V::Str(acc.render() + &right.render()),
                _ => return Err(format!("`+` of {acc:?} and {right:?} is beyond this test")),
            };
        }
        Ok(acc)
    }
    fn primary(&mut self) -> Result<V, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Single(s) => V::Str(s.replace("\\'", "'").replace("\\\\", "\\")),
            Tok::Double(s) => V::Str(gstring(&s, self.ctx)?),
            Tok::Num(n) => V::Num(n),
            Tok::Name(n) if n == "null" => V::Null,
            Tok::Name(n) if n == "true" => V::Bool(true),
            Tok::Name(n) if n == "false" => V::Bool(false),
            Tok::Name(n) => self.ctx.get(&n)?,
            Tok::Op("(") => {
                let v = self.ternary()?;
                self.expect(")")?;
                v
            }
            t => return Err(format!("unexpected {t:?}")),
        })
    }
}

fn eval(src: &str, ctx: &Ctx) -> Result<V, String> {
    let mut p = Parser {
        toks: tokens(src)?,
        pos: 0,
        ctx,
    };
    let v = p.ternary()?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "trailing tokens in {src:?}: {:?}",
            &p.toks[p.pos..]
        ));
    }
    Ok(v)
}

/// Drop a `//` comment that is not inside a string literal.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'\'' | b'"') => quote = Some(b[i]),
            (None, b'/') if b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Groovy's `stripIndent()`, as Nextflow applies it to a task script: remove the smallest
/// indentation of the non-blank lines from every line.
fn strip_indent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The text between the `{` at `open` and its matching `}`, skipping string literals.
fn block_at(text: &str, open: usize) -> &str {
    let b = text.as_bytes();
    assert_eq!(b[open], b'{');
    let (mut depth, mut i, mut quote) = (0usize, open, None::<u8>);
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i += text[i..].find("*/").expect("unclosed /* comment") + 2;
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open + 1..i];
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    panic!("unbalanced braces after byte {open}");
}

// ---------------------------------------------------------------------------------------------
// Modules and configs.

const MODULES: [(&str, &str, &str); 4] = [
    ("TRANSLATE", "translate", "translate"),
    ("EMBED_DNA", "embed_dna", "embed-dna"),
    ("EMBED_PROTEIN", "embed_protein", "embed-protein"),
    ("PREDICT", "predict", "predict"),
];

struct Module {
    name: String,
    dir: String,
    subcommand: String,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Block {
    Script,
    Stub,
}

struct Decl {
    pattern: V,
    optional: bool,
    emit: String,
}

fn modules() -> Vec<Module> {
    MODULES
        .iter()
        .map(|(name, dir, sub)| Module {
            name: name.to_string(),
            dir: dir.to_string(),
            subcommand: sub.to_string(),
            text: read(&format!("nextflow/modules/{dir}/main.nf")),
        })
        .collect()
}

fn module(name: &str) -> Module {
    modules().into_iter().find(|m| m.name == name).unwrap()
}

const LABELS: [&str; 6] = ["input:", "output:", "when:", "script:", "stub:", "exec:"];

impl Module {
    /// The lines of a `label:` section, up to the next section.
    fn section(&self, label: &str) -> Option<String> {
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines.iter().position(|l| l.trim() == label)?;
        let end = (start + 1..lines.len())
            .find(|&i| LABELS.contains(&lines[i].trim()))
            .unwrap_or(lines.len());
        Some(lines[start + 1..end].join("\n"))
    }

    /// (statements before the string, the triple-quoted string's raw body) of script/stub.
    fn block(&self, block: Block) -> (String, String) {
        let label = if block == Block::Script {
            "script:"
        } else {
            "stub:"
        };
        let sec = self
            .section(label)
            .unwrap_or_else(|| panic!("{}: no {label} block", self.name));
        let open = sec
            .find("\"\"\"")
            .unwrap_or_else(|| panic!("{}: {label} has no \"\"\"", self.name));
        let rest = &sec[open + 3..];
        let close = rest
            .find("\"\"\"")
            .unwrap_or_else(|| panic!("{}: unclosed \"\"\"", self.name));
        (sec[..open].to_string(), rest[..close].to_string())
    }

    /// Declared input names in order (`tuple val(meta), path(fasta)` -> meta, fasta).
    fn inputs(&self) -> Vec<String> {
        let mut names = Vec::new();
        for line in self.section("input:").unwrap().lines() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(tuple) = line.strip_prefix("tuple ") {
                for part in tuple.split("),") {
                    let inner = part.split_once('(').unwrap().1;
                    names.push(
                        inner
                            .trim_end_matches(')')
                            .split(',')
                            .next()
                            .unwrap()
                            .trim()
                            .to_string(),
                    );
                }
            } else {
                let mut words = line.split_whitespace();
                let kind = words.next().unwrap();
                assert!(
                    ["val", "path"].contains(&kind),
                    "{}: input {line:?}",
                    self.name
                );
                names.push(words.next().unwrap().to_string());
            }
        }
        names
    }

    /// Declared output files: every `path(...)` of the output block, its pattern evaluated.
    fn outputs(&self, ctx: &Ctx) -> Vec<Decl> {
        let mut decls = Vec::new();
        for line in self.section("output:").unwrap().lines() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let emit = line
                .split("emit:")
                .nth(1)
                .map(|s| s.split(',').next().unwrap().trim().to_string())
                .unwrap_or_default();
            let optional = line.contains("optional: true");
            let mut rest = line;
            while let Some(at) = rest.find("path") {
                let after = rest[at + 4..].trim_start_matches(['(', ' ']);
                let quote = after.chars().next().unwrap();
                assert!(
                    quote == '"' || quote == '\'',
                    "{}: output {line:?}",
                    self.name
                );
                let end = after[1..].find(quote).unwrap() + 1;
                let body = &after[1..end];
                let pattern = if quote == '"' {
                    V::Str(gstring(body, ctx).unwrap_or_else(|e| panic!("{}: {e}", self.name)))
                } else {
                    V::str(body)
                };
                decls.push(Decl {
                    pattern,
                    optional,
                    emit: emit.clone(),
                });
                rest = &after[end + 1..];
            }
        }
        decls
    }

    /// The bash script Nextflow would write to .command.sh for this block and context.
    fn render(&self, block: Block, ctx: &Ctx) -> String {
        let (stmts, body) = self.block(block);
        let mut ctx = ctx.clone();
        for stmt in stmts
            .lines()
            .map(|l| strip_comment(l).trim())
            .filter(|l| !l.is_empty())
        {
            let decl = stmt.strip_prefix("def ").unwrap_or_else(|| {
                panic!(
                    "{} {block:?}: only `def x = ...` before the script: {stmt:?}",
                    self.name
                )
            });
            let (name, expr) = decl.split_once('=').unwrap();
            let v = eval(expr.trim(), &ctx)
                .unwrap_or_else(|e| panic!("{} {block:?}: {stmt}: {e}", self.name));
            ctx.set(name.trim(), v);
        }
        let text = gstring(&body, &ctx).unwrap_or_else(|e| panic!("{} {block:?}: {e}", self.name));
        strip_indent(&text)
    }
}

/// `params { name = value }` of a config file, evaluated (`projectDir` = nextflow/).
fn config_params(rel: &str) -> BTreeMap<String, V> {
    let text = read(rel);
    let open = text
        .find("\nparams {")
        .unwrap_or_else(|| panic!("{rel}: no params block"))
        + 8;
    let mut ctx = Ctx::default();
    ctx.set(
        "projectDir",
        V::Str(repo().join("nextflow").display().to_string()),
    );
    let mut out = BTreeMap::new();
    for line in block_at(&text, open).lines() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}: {line:?}"));
        let v = eval(value.trim(), &ctx).unwrap_or_else(|e| panic!("{rel}: {line}: {e}"));
        assert!(
            out.insert(name.trim().to_string(), v).is_none(),
            "{rel}: {name} twice"
        );
    }
    out
}

/// The `-profile test` parameters: nextflow.config's, overridden by conf/test.config's.
fn test_params() -> BTreeMap<String, V> {
    let mut params = config_params("nextflow/nextflow.config");
    for (k, v) in config_params("conf/test.config") {
        assert!(
            params.contains_key(&k),
            "conf/test.config sets unknown param {k}"
        );
        params.insert(k, v);
    }
    params
}

/// `withName: 'A|B' { ext.args = { expr } }` blocks: (process names, closure body source).
fn ext_args_blocks(rel: &str) -> Vec<(Vec<String>, String)> {
    let text = read(rel);
    let mut out = Vec::new();
    for (at, _) in text.match_indices("withName:") {
        let rest = text[at + 9..].trim_start();
        let quote = rest.chars().next().unwrap();
        let selector = &rest[1..rest[1..].find(quote).unwrap() + 1];
        assert!(
            selector
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c == '|'),
            "{rel}: selector {selector:?}: only plain names joined by | are understood here"
        );
        let open = at + text[at..].find('{').unwrap();
        let body = block_at(&text, open);
        if let Some(a) = body.find("ext.args") {
            let copen = a + body[a..].find('{').unwrap();
            let closure = block_at(body, copen);
            let src: Vec<&str> = closure.lines().map(|l| strip_comment(l).trim()).collect();
            out.push((
                selector.split('|').map(String::from).collect(),
                src.join(" "),
            ));
        }
    }
    out
}

/// task.ext.args of a process under `-profile test` (conf/modules.config, then conf/test.config).
fn ext_args(process: &str, params: &BTreeMap<String, V>) -> V {
    let mut ctx = Ctx::default();
    for (k, v) in params {
        ctx.set(&format!("params.{k}"), v.clone());
    }
    let mut args = V::Null;
    for rel in ["conf/modules.config", "conf/test.config"] {
        for (names, src) in ext_args_blocks(rel) {
            if names.iter().any(|n| n == process) {
                args = eval(&src, &ctx).unwrap_or_else(|e| panic!("{rel} {process} ext.args: {e}"));
            }
        }
    }
    args
}

/// process.shell of conf/base.config: the interpreter and its flags.
fn task_shell() -> Vec<String> {
    let text = read("conf/base.config");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("shell"))
        .expect("conf/base.config sets process.shell");
    let list = &line[line.find('[').unwrap() + 1..line.find(']').unwrap()];
    list.split(',')
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tasks: a work directory with staged inputs, run like Nextflow's .command.sh.

/// A directory holding `virnucpro`: a link to the binary under test (first on PATH).
fn bin_dir(root: &Path) -> PathBuf {
    let dir = root.join("bin");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_virnucpro"), dir.join("virnucpro")).unwrap();
    dir
}

struct Task {
    module: Module,
    dir: PathBuf,
    ctx: Ctx,
}

impl Task {
    /// `inputs`: (declared name, value); `stage`: (file name in the work dir, link target).
    fn new(
        root: &Path,
        module: Module,
        tag: &str,
        inputs: Vec<(&str, V)>,
        stage: &[(String, PathBuf)],
    ) -> Task {
        let declared = module.inputs();
        let given: Vec<String> = inputs.iter().map(|(n, _)| n.to_string()).collect();
        let bound: Vec<String> = declared
            .iter()
            .filter(|d| d.as_str() != "meta")
            .cloned()
            .collect();
        let given_plain: Vec<String> = given
            .iter()
            .filter(|g| !g.starts_with("meta."))
            .cloned()
            .collect();
        assert_eq!(
            bound, given_plain,
            "{}: declared inputs vs the test's",
            module.name
        );
        let dir = root.join(format!("{}_{tag}", module.dir));
        fs::create_dir_all(&dir).unwrap();
        for (name, target) in stage {
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        let params = test_params();
        let mut ctx = Ctx::default();
        for (k, v) in &params {
            ctx.set(&format!("params.{k}"), v.clone());
        }
        ctx.set("task.process", V::Str(module.name.clone()));
        ctx.set("task.cpus", V::Num("2".into()));
        ctx.set("task.ext.args", ext_args(&module.name, &params));
        for (n, v) in inputs {
            ctx.set(n, v);
        }
        Task { module, dir, ctx }
    }

    fn script(&self, block: Block) -> String {
        self.module.render(block, &self.ctx)
    }

    fn run_with(&self, block: Block, path: &Path, env: &[(&str, &str)]) -> Output {
        let script = self.script(block);
        if std::env::var_os("SHOW_TASK_SCRIPTS").is_some() {
            eprintln!(
                "--- {} {block:?} in {}:\n{script}",
                self.module.name,
                self.dir.display()
            );
        }
        fs::write(self.dir.join(".command.sh"), &script).unwrap();
        let shell = task_shell();
        let mut cmd = Command::new(&shell[0]);
        cmd.args(&shell[1..])
            .arg(".command.sh")
            .current_dir(&self.dir);
        let sys_path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{sys_path}", path.display()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn run(&self, block: Block, bin: &Path) -> Output {
        let o = self.run_with(block, bin, &[]);
        assert!(
            o.status.success(),
            "{} {block:?} failed ({:?}):\n{}\n--- script:\n{}",
            self.module.name,
            o.status,
            String::from_utf8_lossy(&o.stderr),
            self.script(block)
        );
        o
    }

    /// Files matching each declared output (non-optional ones must match at least one).
    fn outputs(&self) -> BTreeMap<String, Vec<String>> {
        self.collect_outputs(false)
    }

    /// As `outputs`, but the optional outputs are required too, except the failed-records list
    /// (what a stub must create: everything a successful run can emit).
    fn all_outputs(&self) -> BTreeMap<String, Vec<String>> {
        self.collect_outputs(true)
    }

    fn collect_outputs(&self, all: bool) -> BTreeMap<String, Vec<String>> {
        let files = list_files(&self.dir);
        let mut out = BTreeMap::new();
        for d in self.module.outputs(&self.ctx) {
            let pattern = d.pattern.render();
            let hits: Vec<String> = files
                .iter()
                .filter(|f| glob_match(&pattern, f))
                .cloned()
                .collect();
            let required = !d.optional || (all && d.emit != "failed");
            assert!(
                !required || !hits.is_empty(),
                "{}: declared output {pattern:?} (emit {}) missing; files: {files:?}",
                self.module.name,
                d.emit
            );
            out.entry(d.emit).or_insert_with(Vec::new).extend(hits);
        }
        out
    }

    fn check_versions(&self) {
        let text = fs::read_to_string(self.dir.join("versions.yml")).unwrap();
        assert_eq!(
            text,
            format!(
                "\"{}\":\n    virnucpro: {}\n",
                self.module.name,
                env!("CARGO_PKG_VERSION")
            ),
            "{}: versions.yml",
            self.module.name
        );
    }
}

/// Relative paths of the files under `dir` (following links, as Nextflow's output globs do),
/// leaving out the hidden task files.
fn list_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Nextflow output globs: `*` and `?` within one path segment, `{a,b}` alternatives.
fn glob_match(pattern: &str, path: &str) -> bool {
    if let Some(open) = pattern.find('{') {
        let close = open + pattern[open..].find('}').unwrap();
        return pattern[open + 1..close].split(',').any(|alt| {
            glob_match(
                &format!("{}{alt}{}", &pattern[..open], &pattern[close + 1..]),
                path,
            )
        });
    }
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                seg(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && seg(p, &s[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => seg(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => seg(&p[1..], &s[1..]),
            _ => false,
        }
    }
    seg(pattern.as_bytes(), path.as_bytes())
}

fn param_path(params: &BTreeMap<String, V>, name: &str) -> PathBuf {
    PathBuf::from(params[name].render())
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// The test samplesheet's samples: (id, FASTA resolved against the sheet's directory).
fn test_samples(params: &BTreeMap<String, V>) -> Vec<(String, PathBuf)> {
    let sheet = param_path(params, "input");
    let text = fs::read_to_string(&sheet).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("sample,fasta"), "samplesheet header");
    lines
        .map(|l| {
            let (id, fasta) = l.split_once(',').unwrap();
            (id.to_string(), sheet.parent().unwrap().join(fasta))
        })
        .collect()
}

/// An EMBED_DNA or EMBED_PROTEIN (`name`) task for shard `shard` of sample `id`; `fasta` and
/// `model` are (name in the work directory, file it links to).
fn embed_task(
    root: &Path,
    name: &str,
    tag: &str,
    id: &str,
    shard: &str,
    fasta: (String, PathBuf),
    model: (String, PathBuf),
) -> Task {
    Task::new(
        root,
        module(name),
        tag,
        vec![
            ("meta.id", V::str(id)),
            ("shard", V::str(shard)),
            ("fasta", V::file(&fasta.0)),
            ("model", V::file(&model.0)),
            ("model_subdir", V::str("")),
            ("model_sig", V::str("0123456789abcdef0123456789abcdef")),
            ("config", V::Files(vec![])),
        ],
        &[fasta, model],
    )
}

/// Runs EMBED_DNA or EMBED_PROTEIN (`name`) on one shard file of sample `id` as Nextflow
/// would, checks its versions, report and that no record failed; returns the embeddings file.
fn embed_shard(
    root: &Path,
    bin: &Path,
    name: &str,
    id: &str,
    shard: &str,
    input: &Path,
    model: &Path,
) -> PathBuf {
    let task = embed_task(
        root,
        name,
        &format!("{id}_{shard}"),
        id,
        shard,
        (file_name(input), input.to_path_buf()),
        (file_name(model), model.to_path_buf()),
    );
    task.run(Block::Script, bin);
    task.check_versions();
    let out = task.outputs();
    assert!(
        out["failed"].is_empty(),
        "{name} {id}/{shard}: records failed: {:?}",
        out["failed"]
    );
    assert!(!out["report"].is_empty());
    let emb = &out["embeddings"];
    assert_eq!(emb.len(), 1, "{name} {id}/{shard}: {emb:?}");
    task.dir.join(&emb[0])
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// TRANSLATE -> EMBED_DNA + EMBED_PROTEIN per shard -> PREDICT per sample, each task in its own
/// work directory with links to the previous tasks' outputs, as Nextflow stages them.
#[test]
fn module_scripts_run_the_test_profile_and_reproduce_the_original() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    let params = test_params();
    let samples = test_samples(&params);
    assert!(
        samples.len() >= 2,
        "the test samplesheet exercises several samples"
    );
    let (dnabert, esm, mlp) = (
        param_path(&params, "dnabert"),
        param_path(&params, "esm"),
        param_path(&params, "classifier"),
    );
    let golden = fixtures().join(format!("e2e/chunk{}", params["chunk_size"].render()));

    for (id, fasta) in &samples {
        // TRANSLATE
        let fa = file_name(fasta);
        let t = Task::new(
            root.path(),
            module("TRANSLATE"),
            id,
            vec![
                ("meta.id", V::str(id)),
                ("fasta", V::file(&fa)),
                ("chunk_size", params["chunk_size"].clone()),
                ("shard_size", params["shard_size"].clone()),
                ("config", V::Files(vec![])),
            ],
            &[(fa.clone(), fasta.clone())],
        );
        t.run(Block::Script, &bin);
        t.check_versions();
        let out = t.outputs();
        let (nuc, prot) = (&out["shards"], &out["shards"]);
        let key = |f: &str| {
            file_name(Path::new(f))
                .split('.')
                .next()
                .unwrap()
                .to_string()
        };
        let nuc: Vec<&String> = nuc.iter().filter(|f| f.ends_with(".fa")).collect();
        let prot: BTreeMap<String, &String> = prot
            .iter()
            .filter(|f| f.ends_with(".faa"))
            .map(|f| (key(f), f))
            .collect();
        assert!(
            nuc.len() >= 2,
            "{id}: shard_size should give several shards, got {nuc:?}"
        );
        assert_eq!(nuc.len(), prot.len());

        // EMBED_DNA and EMBED_PROTEIN per shard, paired by shard key.
        let mut dna_files = Vec::new();
        let mut protein_files = Vec::new();
        for n in nuc {
            let k = key(n);
            let p = prot[&k];
            for (name, input, model, list) in [
                ("EMBED_DNA", n, &dnabert, &mut dna_files),
                ("EMBED_PROTEIN", p, &esm, &mut protein_files),
            ] {
                let emb = embed_shard(root.path(), &bin, name, id, &k, &t.dir.join(input), model);
                list.push((k.clone(), emb));
            }
        }

        // PREDICT: every shard of the sample, sorted by shard key (as main.nf passes them).
        dna_files.sort();
        protein_files.sort();
        let names =
            |l: &[(String, PathBuf)]| l.iter().map(|(_, p)| file_name(p)).collect::<Vec<_>>();
        let mut stage: Vec<(String, PathBuf)> = dna_files
            .iter()
            .chain(&protein_files)
            .map(|(_, p)| (file_name(p), p.clone()))
            .collect();
        stage.push((file_name(&mlp), mlp.clone()));
        let task = Task::new(
            root.path(),
            module("PREDICT"),
            id,
            vec![
                ("meta.id", V::str(id)),
                ("dna", V::Files(names(&dna_files))),
                ("protein", V::Files(names(&protein_files))),
                ("classifier", V::file(&file_name(&mlp))),
                ("config", V::Files(vec![])),
            ],
            &stage,
        );
        let script = task.script(Block::Script);
        assert!(
            script.contains(&format!("--dna {}", names(&dna_files).join(" "))),
            "every DNA shard on one --dna:\n{script}"
        );
        task.run(Block::Script, &bin);
        task.check_versions();
        task.outputs();
        assert_eq!(
            fs::read_to_string(golden.join("prediction_results_highestscore.csv")).unwrap(),
            fs::read_to_string(task.dir.join("prediction_results_highestscore.csv")).unwrap(),
            "{id}: prediction_results_highestscore.csv differs from the original's"
        );
        let ids = |p: &Path| -> Vec<String> {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join("\t"))
                .collect()
        };
        assert_eq!(
            ids(&golden.join("prediction_results.txt")),
            ids(&task.dir.join("prediction_results.txt")),
            "{id}: ORF ids and labels"
        );
    }
}

/// A minimal task of each module with dummy inputs (stub blocks ignore their contents).
fn stub_tasks(root: &Path) -> Vec<Task> {
    let dummy = root.join("dummy");
    fs::write(&dummy, ">x\nACGT\n").unwrap();
    let d = |name: &str| (name.to_string(), dummy.clone());
    vec![
        Task::new(
            root,
            module("TRANSLATE"),
            "stub",
            vec![
                ("meta.id", V::str("s1")),
                ("fasta", V::file("s1.fa")),
                ("chunk_size", V::Num("500".into())),
                ("shard_size", V::Num("8".into())),
                ("config", V::Files(vec![])),
            ],
            &[d("s1.fa")],
        ),
        embed_task(
            root,
            "EMBED_DNA",
            "stub",
            "s1",
            "00000",
            d("00000.identified_nucleotide.fa"),
            d("dnabert"),
        ),
        embed_task(
            root,
            "EMBED_PROTEIN",
            "stub",
            "s1",
            "00000",
            d("00000.identified_protein.faa"),
            d("esm"),
        ),
        Task::new(
            root,
            module("PREDICT"),
            "stub",
            vec![
                ("meta.id", V::str("s1")),
                (
                    "dna",
                    V::Files(vec![
                        "s1.00000.dna.safetensors".into(),
                        "s1.00001.dna.safetensors".into(),
                    ]),
                ),
                (
                    "protein",
                    V::Files(vec!["s1.00000.protein.safetensors".into()]),
                ),
                ("classifier", V::file("mlp.pth")),
                ("config", V::Files(vec![])),
            ],
            &[
                d("s1.00000.dna.safetensors"),
                d("s1.00001.dna.safetensors"),
                d("s1.00000.protein.safetensors"),
                d("mlp.pth"),
            ],
        ),
    ]
}

/// A sample whose sequences give no ORF goes through every module to empty tables (one empty
/// shard pair, empty embeddings), so one such sample never fails a run over many.
#[test]
fn a_sample_without_orfs_flows_through_the_modules_to_empty_tables() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    let params = test_params();
    let input = root.path().join("tiny.fa");
    fs::write(&input, ">too_short\nAC\n").unwrap();
    let (dnabert, esm, mlp) = (
        param_path(&params, "dnabert"),
        param_path(&params, "esm"),
        param_path(&params, "classifier"),
    );
    let t = Task::new(
        root.path(),
        module("TRANSLATE"),
        "tiny",
        vec![
            ("meta.id", V::str("tiny")),
            ("fasta", V::file("tiny.fa")),
            ("chunk_size", params["chunk_size"].clone()),
            ("shard_size", params["shard_size"].clone()),
            ("config", V::Files(vec![])),
        ],
        &[("tiny.fa".to_string(), input.clone())],
    );
    t.run(Block::Script, &bin);
    let mut shards = t.outputs()["shards"].clone();
    shards.sort();
    assert_eq!(
        shards,
        [
            "translate/shards/00000.identified_nucleotide.fa",
            "translate/shards/00000.identified_protein.faa"
        ]
    );
    let mut embedded = Vec::new();
    for (name, input, model) in [
        ("EMBED_DNA", &shards[0], &dnabert),
        ("EMBED_PROTEIN", &shards[1], &esm),
    ] {
        let input = t.dir.join(input);
        embedded.push(embed_shard(
            root.path(),
            &bin,
            name,
            "tiny",
            "00000",
            &input,
            model,
        ));
    }
    let names: Vec<String> = embedded.iter().map(|p| file_name(p)).collect();
    let mut stage: Vec<(String, PathBuf)> = names
        .iter()
        .cloned()
        .zip(embedded.iter().cloned())
        .collect();
    stage.push((file_name(&mlp), mlp.clone()));
    let task = Task::new(
        root.path(),
        module("PREDICT"),
        "tiny",
        vec![
            ("meta.id", V::str("tiny")),
            ("dna", V::Files(vec![names[0].clone()])),
            ("protein", V::Files(vec![names[1].clone()])),
            ("classifier", V::file(&file_name(&mlp))),
            ("config", V::Files(vec![])),
        ],
        &stage,
    );
    task.run(Block::Script, &bin);
    task.outputs();
    assert_eq!(
        fs::read_to_string(task.dir.join("prediction_results_highestscore.csv")).unwrap(),
        "Modified_ID\tIs_Virus\n"
    );
}

#[test]
fn module_stubs_create_every_declared_output() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    for task in stub_tasks(root.path()) {
        task.run(Block::Stub, &bin);
        task.check_versions();
        let outs = task.all_outputs();
        assert!(outs.contains_key("versions"), "{}", task.module.name);
    }
}

/// `--flag` tokens in `text` (not part of a longer word).
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        if at > 0 && !text[..at].ends_with([' ', '\t', '\n', '"', '\'', '(']) {
            continue;
        }
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.insert(format!("--{name}"));
        }
    }
    out
}

fn help(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let o = common::run(&args, None);
    assert!(o.status.success(), "virnucpro {args:?} --help");
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn help_has(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        !help[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Every flag a module script or an ext.args setting passes is one the subcommand accepts.
#[test]
fn flags_in_modules_and_configs_exist_in_the_cli() {
    let top = help(&[]);
    for m in modules() {
        let sub = help(&[&m.subcommand]);
        for block in [Block::Script, Block::Stub] {
            let (stmts, body) = m.block(block);
            // The command line: `virnucpro ${cfg} <subcommand>`.
            if block == Block::Script {
                assert!(
                    body.contains(&format!("virnucpro ${{cfg}} {} ", m.subcommand)),
                    "{}: runs `virnucpro ${{cfg}} {}`",
                    m.name,
                    m.subcommand
                );
            }
            for flag in flags(&body) {
                let ok = if flag == "--version" {
                    help_has(&top, &flag)
                } else {
                    help_has(&sub, &flag)
                };
                assert!(
                    ok,
                    "{} {block:?}: `{flag}` is not in `virnucpro {} --help`",
                    m.name, m.subcommand
                );
            }
            // Flags built in Groovy (the optional --config) are global options.
            for flag in flags(&stmts) {
                if help_has(&top, &flag) {
                    continue;
                }
                assert_eq!(
                    flag, "--config",
                    "{}: {flag} is not a global option",
                    m.name
                );
                eprintln!("note: `virnucpro --help` has no --config yet (not merged): {} passes it only when params.virnucpro_config is set", m.name);
            }
        }
    }
    let mut seen = 0;
    for rel in [
        "conf/modules.config",
        "conf/test.config",
        "conf/base.config",
        "nextflow/nextflow.config",
    ] {
        for (names, src) in ext_args_blocks(rel) {
            for name in names {
                let m = module(&name);
                let sub = help(&[&m.subcommand]);
                for flag in flags(&src) {
                    assert!(
                        help_has(&sub, &flag),
                        "{rel}: {name} ext.args `{flag}` is not in `virnucpro {} --help`",
                        m.subcommand
                    );
                    seen += 1;
                }
            }
        }
    }
    assert!(seen >= 5, "ext.args flags were found ({seen})");
}

/// The scripts as rendered for the test profile and for the stubs: shellcheck clean.
#[test]
fn rendered_module_scripts_are_shellcheck_clean() {
    let root = tempfile::tempdir().unwrap();
    let mut scripts = Vec::new();
    for task in stub_tasks(root.path()) {
        for block in [Block::Script, Block::Stub] {
            let path = root
                .path()
                .join(format!("{}_{block:?}.sh", task.module.name));
            fs::write(
                &path,
                format!("#!/usr/bin/env bash\n{}", task.script(block)),
            )
            .unwrap();
            scripts.push(path);
        }
    }
    shellcheck(&scripts);
}

/// A stand-in `virnucpro` that writes the embedding outputs and exits with $FAKE_RC; with
/// FAKE_NO_REPORT set it writes no --report (what a usage error or a crash leaves).
fn fake_bin(root: &Path) -> PathBuf {
    let dir = root.join("fake-bin");
    fs::create_dir_all(&dir).unwrap();
    let script = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "virnucpro 0.1.0"; exit 0; fi
prev=""
for a in "$@"; do
  case "$prev" in
    --output)
      : > "$a"
      if [ "${FAKE_RC:-0}" = 2 ]; then printf 'id\tstep\treason\nx_chunk_1F1\tembed\tfake\n' > "$a.failed.tsv"; fi ;;
    --report) [ -n "${FAKE_NO_REPORT:-}" ] || echo '{}' > "$a" ;;
  esac
  prev=$a
done
exit "${FAKE_RC:-0}"
"#;
    let path = dir.join("virnucpro");
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Exit code 2 (finished, some records failed) passes, with the failed list as an output, but
/// only beside the step's report (a 2 without it is not the binary's "finished"); any other
/// failure, the usage error 64 included, fails the task with its own exit code, under
/// process.shell's `-e`.
#[test]
fn embed_exit_code_2_is_a_success_and_others_fail() {
    let root = tempfile::tempdir().unwrap();
    let fake = fake_bin(root.path());
    for task in stub_tasks(root.path())
        .into_iter()
        .filter(|t| t.module.name.starts_with("EMBED_"))
    {
        for (rc, report, ok) in [
            ("0", true, true),
            ("2", true, true),
            ("2", false, false),
            ("1", true, false),
            ("3", true, false),
            ("64", false, false),
        ] {
            for f in list_files(&task.dir) {
                if f == "versions.yml" || f.ends_with(".failed.tsv") || f.ends_with(".json") {
                    fs::remove_file(task.dir.join(f)).unwrap();
                }
            }
            let no_report = if report { "" } else { "1" };
            let o = task.run_with(
                Block::Script,
                &fake,
                &[("FAKE_RC", rc), ("FAKE_NO_REPORT", no_report)],
            );
            let stderr = String::from_utf8_lossy(&o.stderr);
            if ok {
                assert!(o.status.success(), "{} rc {rc}: {stderr}", task.module.name);
                task.check_versions();
                let outs = task.outputs();
                let want = usize::from(rc == "2");
                assert_eq!(
                    outs["failed"].len(),
                    want,
                    "{} rc {rc}: the failed list is an output",
                    task.module.name
                );
            } else {
                assert_eq!(
                    o.status.code().map(|c| c.to_string()).as_deref(),
                    Some(rc),
                    "{} rc {rc}, report {report}: {stderr}",
                    task.module.name
                );
                assert!(
                    !task.dir.join("versions.yml").exists(),
                    "{}: stopped at the failure",
                    task.module.name
                );
            }
        }
    }
}

/// With params.virnucpro_config set, the file is staged and passed as the global --config.
#[test]
fn virnucpro_config_is_passed_when_set() {
    let root = tempfile::tempdir().unwrap();
    let toml = root.path().join("virnucpro.toml");
    fs::write(&toml, "# no settings: the defaults\n").unwrap();
    let fasta = fixtures().join("e2e/input.fa");
    let task = Task::new(
        root.path(),
        module("TRANSLATE"),
        "config",
        vec![
            ("meta.id", V::str("c")),
            ("fasta", V::file("input.fa")),
            ("chunk_size", V::Num("500".into())),
            ("shard_size", V::Num("8".into())),
            ("config", V::file("virnucpro.toml")),
        ],
        &[("input.fa".into(), fasta), ("virnucpro.toml".into(), toml)],
    );
    let script = task.script(Block::Script);
    assert!(
        script.contains("virnucpro --config virnucpro.toml translate"),
        "{script}"
    );
    if !help_has(&help(&[]), "--config") {
        eprintln!(
            "note: this virnucpro has no --config yet; the rendered command is checked, not run"
        );
        return;
    }
    let bin = bin_dir(root.path());
    task.run(Block::Script, &bin);
    task.outputs();
}

/// Each module follows the nf-core conventions the pipeline relies on.
#[test]
fn modules_follow_the_nf_core_conventions() {
    let base = read("conf/base.config");
    for m in modules() {
        let t = &m.text;
        let directives = &t[..t.find("input:").unwrap()];
        assert!(t.contains(&format!("process {} {{", m.name)), "{}", m.name);
        let tag = if m.name.starts_with("EMBED_") {
            "tag \"${meta.id}:${shard}\""
        } else {
            "tag \"$meta.id\""
        };
        assert!(directives.contains(tag), "{}: {tag}", m.name);
        let label = directives
            .lines()
            .find_map(|l| l.trim().strip_prefix("label '"))
            .unwrap_or_else(|| panic!("{}: label", m.name))
            .trim_end_matches('\'');
        assert!(
            base.contains(&format!("withLabel: '{label}'")),
            "{}: label {label} has resources in conf/base.config",
            m.name
        );
        let gpu = m.name.starts_with("EMBED_");
        assert_eq!(
            label == "process_gpu",
            gpu,
            "{}: GPU steps and only they are process_gpu",
            m.name
        );
        assert!(directives.contains("container \""), "{}: container", m.name);
        assert!(
            directives.contains("publishDir \"${params.outdir}/${meta.id}"),
            "{}: publishDir",
            m.name
        );
        assert!(
            directives.contains("mode: params.publish_dir_mode"),
            "{}: publish mode",
            m.name
        );
        assert!(
            m.section("input:")
                .unwrap()
                .trim_start()
                .starts_with("tuple val(meta), "),
            "{}: tuple val(meta)",
            m.name
        );
        assert!(
            m.section("output:")
                .unwrap()
                .contains("path 'versions.yml'"),
            "{}: versions.yml",
            m.name
        );
        assert_eq!(
            m.section("when:").unwrap().trim(),
            "task.ext.when == null || task.ext.when",
            "{}",
            m.name
        );
        assert!(
            m.block(Block::Script).0.contains("task.ext.args"),
            "{}: task.ext.args",
            m.name
        );
        assert!(
            m.block(Block::Script).1.contains("${args}"),
            "{}: ${{args}} in the command",
            m.name
        );
        m.block(Block::Stub);
    }
    // GPU steps: one accelerator each; local_gpu caps them and turns on the lease.
    let gpu = block_at(
        &base,
        base.find("withLabel: 'process_gpu'").unwrap() + "withLabel: 'process_gpu' ".len(),
    );
    assert!(
        gpu.contains("accelerator"),
        "process_gpu requests an accelerator"
    );
    let config = read("nextflow/nextflow.config");
    let local = block_at(
        &config,
        config.find("local_gpu {").unwrap() + "local_gpu ".len(),
    );
    assert!(
        local.contains("maxForks     = params.gpus_per_node"),
        "{local}"
    );
    assert!(
        local.contains("env.VIRNUCPRO_GPU_LEASE    = '1'"),
        "{local}"
    );
    assert!(local.contains("env.VIRNUCPRO_GPU_LOCK_DIR"), "{local}");
    for profile in [
        "docker",
        "singularity",
        "apptainer",
        "gpu",
        "slurm",
        "local_gpu",
        "test",
    ] {
        assert!(
            config.contains(&format!("\n    {profile} {{")),
            "profile {profile}"
        );
    }
}

/// main.nf includes each module from a file that defines it; the workflow's shape is there.
#[test]
fn main_nf_includes_the_modules_and_gathers_shards_per_sample() {
    let main = read("nextflow/main.nf");
    let mut included = BTreeSet::new();
    for line in main.lines().filter(|l| l.starts_with("include {")) {
        let name = line["include {".len()..line.find('}').unwrap()].trim();
        let from = line.split('\'').nth(1).unwrap();
        if from.starts_with("plugin/") {
            continue; // a Nextflow plugin's function (nf-schema)
        }
        let file = repo().join("nextflow").join(format!("{from}.nf"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("process {name} {{")),
            "{} defines {name}",
            file.display()
        );
        included.insert(name.to_string());
    }
    let mut want: BTreeSet<String> = MODULES.iter().map(|m| m.0.to_string()).collect();
    // The model download step (checked in fetch_models_downloads_ids_once_into_a_store).
    want.insert("FETCH_MODELS".into());
    assert_eq!(included, want);
    for needle in [
        "splitCsv(header: true",
        "def samples    = samplesFrom(params.input)",
        "TRANSLATE(samples, params.chunk_size, params.shard_size, toml)",
        "groupKey(id, meta.shards)",
        ".groupTuple(remainder: true)",
        "PREDICT(embeddings, classifier, toml)",
        "workflow {",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
    // Braces balance in every Groovy file (a cheap syntax check, strings skipped).
    for rel in [
        "nextflow/main.nf",
        "nextflow/nextflow.config",
        "conf/base.config",
        "conf/modules.config",
        "conf/test.config",
        "nextflow/modules/translate/main.nf",
        "nextflow/modules/embed_dna/main.nf",
        "nextflow/modules/embed_protein/main.nf",
        "nextflow/modules/predict/main.nf",
        "nextflow/modules/fetch_models/main.nf",
    ] {
        let text = format!("{{{}}}", read(rel).replace("\"\"\"", "\u{1}"));
        // Triple-quoted scripts hold shell braces: blank them out before counting.
        let mut clean = String::new();
        let mut inside = false;
        for c in text.chars() {
            if c == '\u{1}' {
                inside = !inside;
            } else if !inside {
                clean.push(c);
            }
        }
        assert_eq!(
            block_at(&clean, 0).len(),
            clean.len() - 2,
            "{rel}: braces do not balance"
        );
    }
}

/// Every parameter has a default in nextflow.config and an entry in nextflow_schema.json (and
/// the other way round), with the same default; every `params.x` used anywhere exists.
#[test]
fn params_are_documented_in_the_schema() {
    let params = config_params("nextflow/nextflow.config");
    let schema: serde_json::Value =
        serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    // nf-schema 2.x reads draft 2020-12 only, with the groups under $defs.
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(
        schema.get("definitions").is_none(),
        "draft-07 `definitions`"
    );
    let defs = schema["$defs"].as_object().unwrap();
    let refs: BTreeSet<String> = schema["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["$ref"]
                .as_str()
                .unwrap()
                .trim_start_matches("#/$defs/")
                .to_string()
        })
        .collect();
    assert_eq!(
        refs,
        defs.keys().cloned().collect::<BTreeSet<_>>(),
        "allOf names every group"
    );
    let mut documented = BTreeMap::new();
    for group in defs.values() {
        for (name, prop) in group["properties"].as_object().unwrap() {
            assert!(prop["description"].is_string(), "{name}: description");
            assert!(
                documented.insert(name.clone(), prop.clone()).is_none(),
                "{name} twice"
            );
        }
        for req in group["required"].as_array().into_iter().flatten() {
            assert!(params.contains_key(req.as_str().unwrap()), "required {req}");
        }
    }
    assert_eq!(
        params.keys().cloned().collect::<BTreeSet<_>>(),
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        "nextflow.config params vs nextflow_schema.json"
    );
    for (name, v) in &params {
        let prop = &documented[name];
        // A type list (["string", "integer"]: --classifier 500 arrives as a number): its first.
        let ty = prop["type"]
            .as_str()
            .or_else(|| prop["type"][0].as_str())
            .unwrap();
        match v {
            V::Null => assert!(
                prop.get("default").is_none(),
                "{name}: null in the config, no schema default"
            ),
            V::Bool(b) => assert_eq!(
                (ty, &prop["default"]),
                ("boolean", &serde_json::json!(b)),
                "{name}"
            ),
            V::Num(n) => {
                assert!(ty == "integer" || ty == "number", "{name}: {ty}");
                assert_eq!(prop["default"].to_string(), *n, "{name}: default");
            }
            V::Str(s) => assert_eq!(
                (ty, prop["default"].as_str()),
                ("string", Some(s.as_str())),
                "{name}"
            ),
            V::Files(_) => unreachable!(),
        }
    }
    // Every params.<name> the pipeline reads is defined.
    for rel in [
        "nextflow/main.nf",
        "nextflow/nextflow.config",
        "conf/base.config",
        "conf/modules.config",
        "conf/test.config",
        "nextflow/modules/translate/main.nf",
        "nextflow/modules/embed_dna/main.nf",
        "nextflow/modules/embed_protein/main.nf",
        "nextflow/modules/predict/main.nf",
        "nextflow/modules/fetch_models/main.nf",
    ] {
        let text = read(rel);
        for (at, _) in text.match_indices("params.") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if at > 0
                && text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                continue;
            }
            assert!(
                params.contains_key(&name),
                "{rel}: params.{name} is not in nextflow.config"
            );
        }
    }
}

/// -profile test points at the shipped fixtures, and the samplesheet's relative paths resolve.
#[test]
fn test_profile_uses_the_shipped_fixtures() {
    let params = test_params();
    for name in ["dnabert", "esm", "classifier", "input"] {
        let p = param_path(&params, name);
        assert!(p.exists(), "{name}: {}", p.display());
    }
    for (id, fasta) in test_samples(&params) {
        assert_eq!(
            fs::canonicalize(&fasta).unwrap(),
            fs::canonicalize(fixtures().join("e2e/input.fa")).unwrap(),
            "{id}"
        );
    }
    assert_eq!(
        params["device"],
        V::str("cpu"),
        "the test profile is CPU only"
    );
    assert_eq!(params["chunk_size"], V::Num("500".into()));
}

#[test]
fn groovy_subset_behaves_like_groovy() {
    let mut ctx = Ctx::default();
    ctx.set("meta.id", V::str("s1"))
        .set("params.x", V::Null)
        .set("params.n", V::Num("0.5".into()))
        .set("files", V::Files(vec!["a".into(), "b".into()]));
    assert_eq!(
        gstring("$meta.id.${files}\\$x \\\\\n", &ctx).unwrap(),
        "s1.a b$x \\\n"
    );
    assert!(
        gstring("$meta.id.dna", &ctx).is_err(),
        "greedy property path, as Groovy"
    );
    assert!(gstring("cost $ 5", &ctx).is_err());
    assert_eq!(
        gstring("a\\\nb", &ctx).unwrap(),
        "ab",
        "backslash-newline continues the line"
    );
    assert_eq!(eval("params.x ?: 'd'", &ctx).unwrap(), V::str("d"));
    assert_eq!(
        eval("params.x != null ? 'y' : 'n'", &ctx).unwrap(),
        V::str("n")
    );
    assert_eq!(
        eval("(params.n ? \"--f ${params.n} \" : '') + ''", &ctx).unwrap(),
        V::str("--f 0.5 ")
    );
    assert_eq!(strip_indent("\n    a\n      b\n    c\n"), "\na\n  b\nc\n");
    assert!(glob_match("t/shards/*.fa", "t/shards/00000.fa"));
    assert!(!glob_match("*.fa", "t/00000.fa"));
    assert!(glob_match("prediction.{svg,png}", "prediction.png"));
}

// ---------------------------------------------------------------------------------------------
// What a first real run would trip over: GPUs on CPU hosts, GPU isolation in containers, host
// directories, publish modes, -resume and model changes, vanishing samples, the schema.

const GROOVY_FILES: [&str; 10] = [
    "nextflow/main.nf",
    "nextflow/nextflow.config",
    "conf/base.config",
    "conf/modules.config",
    "conf/test.config",
    "nextflow/modules/translate/main.nf",
    "nextflow/modules/embed_dna/main.nf",
    "nextflow/modules/embed_protein/main.nf",
    "nextflow/modules/predict/main.nf",
    "nextflow/modules/fetch_models/main.nf",
];

/// The body of `withLabel: 'process_gpu' { ... }` in conf/base.config.
fn gpu_label_block() -> String {
    let base = read("conf/base.config");
    let at = base
        .find("withLabel: 'process_gpu'")
        .expect("conf/base.config: process_gpu");
    block_at(&base, at + base[at..].find('{').unwrap()).to_string()
}

/// The body of profile `name` in nextflow/nextflow.config.
fn profile_block(name: &str) -> String {
    let config = read("nextflow/nextflow.config");
    let at = config
        .find(&format!("\n    {name} {{"))
        .unwrap_or_else(|| panic!("nextflow.config: no profile {name}"));
    block_at(&config, at + config[at..].find('{').unwrap()).to_string()
}

/// The body of the closure assigned to `name` (`name = { ... }`) in `block`.
fn closure<'a>(block: &'a str, name: &str) -> &'a str {
    let at = block
        .find(&format!("{name} = {{"))
        .unwrap_or_else(|| panic!("no `{name} = {{ ... }}` in:\n{block}"));
    block_at(block, at + block[at..].find('{').unwrap())
}

/// The bodies of the double-quoted string literals of a piece of Groovy (comments and
/// single-quoted strings skipped).
fn double_quoted(src: &str) -> Vec<String> {
    let code: Vec<char> = src
        .lines()
        .map(strip_comment)
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let q = code[i];
        if q == '"' || q == '\'' {
            let mut j = i + 1;
            while j < code.len() && code[j] != q {
                j += if code[j] == '\\' { 2 } else { 1 };
            }
            assert!(j < code.len(), "unclosed string in {src}");
            if q == '"' {
                out.push(code[i + 1..j].iter().collect());
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Lines of `text` (comments left out) that contain `needle`.
fn code_lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .map(strip_comment)
        .filter(|l| l.contains(needle))
        .collect()
}

/// GPUs are asked for only when the run opts in (-profile gpu or local_gpu): by default, and
/// with the test profile, no accelerator, no `--gpus all`, no `--nv`, so a CPU-only host (no
/// NVIDIA container toolkit, or CUDA_VISIBLE_DEVICES="" under Nextflow >= 26.10) runs the tasks.
#[test]
fn gpus_are_opt_in() {
    let params = config_params("nextflow/nextflow.config");
    assert_eq!(params["use_gpu"], V::Bool(false), "GPUs are off by default");
    assert_eq!(
        test_params()["use_gpu"],
        V::Bool(false),
        "-profile test runs on any host"
    );
    let gpu = gpu_label_block();
    for needle in ["--gpus", "--nv", "accelerator"] {
        let lines = code_lines_with(&gpu, needle);
        assert!(!lines.is_empty(), "process_gpu: {needle}");
        for l in lines {
            assert!(
                l.contains("params.use_gpu ?") || l.contains("params.use_gpu &&"),
                "process_gpu: `{needle}` is not behind params.use_gpu: {l}"
            );
        }
    }
    // The lease picks among all of the node's GPUs itself: no per-task accelerator with it.
    let acc = code_lines_with(&gpu, "accelerator");
    assert!(acc[0].contains("!params.gpu_lease"), "{}", acc[0]);
    // Nowhere else does a GPU option hide (the label is the only place that asks for GPUs).
    for rel in GROOVY_FILES {
        let text = read(rel);
        let text = if rel == "conf/base.config" {
            text.replace(&gpu, "")
        } else {
            text
        };
        for needle in ["--gpus", "'--nv'", "accelerator ", "accelerator="] {
            assert!(
                code_lines_with(&text, needle).is_empty(),
                "{rel}: `{needle}` outside process_gpu: {:?}",
                code_lines_with(&text, needle)
            );
        }
    }
    for profile in ["gpu", "local_gpu"] {
        assert!(
            profile_block(profile).contains("params.use_gpu             = true")
                || profile_block(profile).contains("params.use_gpu = true"),
            "-profile {profile} turns GPUs on"
        );
    }
    // SLURM asks for GPUs (--gres) only with the opt-in too.
    let slurm = profile_block("slurm");
    for l in code_lines_with(&slurm, "slurm_gpu_") {
        assert!(l.contains("params.use_gpu ?"), "-profile slurm: {l}");
    }
    for profile in ["docker", "singularity", "apptainer", "slurm", "test"] {
        assert!(
            !profile_block(profile).contains("use_gpu ="),
            "-profile {profile} must not turn GPUs on (combine it with gpu)"
        );
    }
    // Asking for a CUDA device without the opt-in stops the run at the start.
    let main = read("nextflow/main.nf");
    assert!(
        main.contains("params.device.toString().startsWith('cuda') && !params.use_gpu"),
        "main.nf: --device cuda without -profile gpu is refused"
    );
}

/// Apptainer/Singularity start tasks with `env - PATH=...`: CUDA_VISIBLE_DEVICES (set by SLURM
/// or the local executor) must be whitelisted, as for docker, or `--device auto` takes every GPU.
#[test]
fn container_engines_keep_the_task_gpu_assignment() {
    for engine in ["docker", "singularity", "apptainer"] {
        let block = profile_block(engine);
        let line = block
            .lines()
            .map(strip_comment)
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{engine}.envWhitelist"))
            })
            .unwrap_or_else(|| panic!("-profile {engine}: no {engine}.envWhitelist"));
        assert!(
            line.contains("CUDA_VISIBLE_DEVICES"),
            "-profile {engine}: {line}"
        );
    }
}

/// --checkpoint_dir and the GPU lock directory are host directories the tasks write to: both
/// are created before the task (the rendered beforeScript, run here) and mounted at the same
/// path into docker and singularity/apptainer containers; relative paths are refused.
#[test]
fn host_directories_are_created_and_mounted_into_containers() {
    let gpu = gpu_label_block();
    let options = closure(&gpu, "containerOptions");
    for mount in [
        "-v ${params.checkpoint_dir}:${params.checkpoint_dir}",
        "-B ${params.checkpoint_dir}",
        "-v ${params.gpu_lock_dir}:${params.gpu_lock_dir}",
        "-B ${params.gpu_lock_dir}",
    ] {
        assert!(options.contains(mount), "containerOptions: {mount}");
    }
    for (param, mounts) in [
        (
            "params.checkpoint_dir ?",
            ["-v ${params.checkpoint_dir}", "-B ${params.checkpoint_dir}"],
        ),
        (
            "params.gpu_lease ?",
            ["-v ${params.gpu_lock_dir}", "-B ${params.gpu_lock_dir}"],
        ),
    ] {
        for m in mounts {
            let lines = code_lines_with(options, m);
            assert!(
                lines.iter().all(|l| l.contains(param)),
                "{m} only when {param}: {lines:?}"
            );
        }
    }

    // The beforeScript's commands, rendered and run: both directories appear, the lock
    // directory private to the user.
    let root = tempfile::tempdir().unwrap();
    let ck = root.path().join("shared/checkpoints");
    let locks = root.path().join("locks");
    let mut ctx = Ctx::default();
    ctx.set("params.checkpoint_dir", V::Str(ck.display().to_string()))
        .set("params.gpu_lock_dir", V::Str(locks.display().to_string()));
    let before = closure(&gpu, "beforeScript");
    let commands: Vec<String> = double_quoted(before)
        .iter()
        .map(|s| gstring(s, &ctx).unwrap())
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &commands.join(" && ")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ck.is_dir(), "checkpoint dir created");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&locks).unwrap().permissions().mode() & 0o777,
        0o700,
        "lock dir private when new"
    );
    // The beforeScript is the label's alone now (profiles would replace it).
    assert!(!profile_block("local_gpu").contains("beforeScript"));

    // The checkpoint directory still reaches the binary (conf/modules.config).
    let mut params = test_params();
    params.insert("checkpoint_dir".into(), V::Str(ck.display().to_string()));
    let args = ext_args("EMBED_PROTEIN", &params).render();
    assert!(
        args.contains(&format!("--checkpoint-dir {}", ck.display())),
        "{args}"
    );

    // Relative paths would be mounted wrongly and differ per task: refused at the start.
    let main = read("nextflow/main.nf");
    assert!(main.contains("['checkpoint_dir', 'gpu_lock_dir'].each"));
    assert!(main.contains("!params[name].toString().startsWith('/')"));
    let schema: serde_json::Value =
        serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    for name in ["checkpoint_dir", "gpu_lock_dir"] {
        assert_eq!(
            schema["$defs"]["compute_options"]["properties"][name]["pattern"], "^/",
            "{name}"
        );
    }
}

/// `move` would take away files later steps read (translate.json, the embeddings that feed
/// PREDICT) and that -resume needs: the schema does not offer it and main.nf refuses it.
#[test]
fn publish_dir_mode_move_is_refused() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    let modes: Vec<&str> = schema["$defs"]["input_output_options"]["properties"]
        ["publish_dir_mode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(!modes.contains(&"move"), "{modes:?}");
    assert!(modes.contains(&"copy"));
    let main = read("nextflow/main.nf");
    let at = main
        .find("if (params.publish_dir_mode == 'move') {")
        .expect("main.nf refuses move");
    assert!(main[at..]
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .starts_with("error "));
    for m in modules() {
        for l in code_lines_with(&m.text, "mode:") {
            assert!(
                l.contains("mode: params.publish_dir_mode"),
                "{}: {l}",
                m.name
            );
        }
    }
}

/// -resume hashes a directory input by its own path, size and mtime: the embedding steps take
/// a signature of the model's files as an input too, computed from names, sizes and mtimes of
/// every file under the model (links followed).
#[test]
fn model_files_signature_is_an_input_of_the_embedding_steps() {
    for name in ["EMBED_DNA", "EMBED_PROTEIN"] {
        let m = module(name);
        assert!(
            m.section("input:")
                .unwrap()
                .lines()
                .any(|l| strip_comment(l).trim()
                    == "tuple path(model), val(model_subdir), val(model_sig)"),
            "{name}: model input"
        );
    }
    let main = read("nextflow/main.nf");
    for needle in [
        // Local paths, and the snapshots of fetched or --hf_home Hub ids, all through modelInput.
        "def dnabert    = modelChannel('dnabert', specs.dnabert, FETCH_MODELS.out.model)",
        "def esm        = modelChannel('esm', specs.esm, FETCH_MODELS.out.model)",
        "channel.value(kind == 'classifier' ? file(given, checkIfExists: true) : modelInput(given))",
        "modelInput(snapshotOf(dir, given, where).toString())",
        "return [staged, sub, modelSignature(model)]",
        "path.listFiles().each",
        "${rel}\\t${path.size()}\\t${path.lastModified()}",
        "lines.sort().join('\\n').md5()",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
}

/// A Hugging Face cache snapshot (files are links into ../../blobs) is staged as its
/// repository directory and read through snapshots/<rev>: the module's script, run with the
/// binary on such a layout of the tiny DNABERT-S, embeds the shard.
#[test]
fn a_hub_cache_snapshot_model_is_read_through_its_repository_directory() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    let params = test_params();
    let dnabert = param_path(&params, "dnabert");
    let repo_dir = root.path().join("hub/models--zhihan1996--DNABERT-S");
    let rev = "0123abcd";
    let snapshot = repo_dir.join("snapshots").join(rev);
    fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    for (i, e) in fs::read_dir(&dnabert).unwrap().enumerate() {
        let e = e.unwrap();
        let blob = format!("blob{i:02}");
        fs::copy(e.path(), repo_dir.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snapshot.join(e.file_name()))
            .unwrap();
    }
    let shard = root.path().join("00000.identified_nucleotide.fa");
    fs::write(&shard, format!(">orf1\n{}\n", "ACGTTGCAAG".repeat(30))).unwrap();
    let task = Task::new(
        root.path(),
        module("EMBED_DNA"),
        "hub",
        vec![
            ("meta.id", V::str("hub")),
            ("shard", V::str("00000")),
            ("fasta", V::file("00000.identified_nucleotide.fa")),
            ("model", V::file("models--zhihan1996--DNABERT-S")),
            ("model_subdir", V::Str(format!("snapshots/{rev}"))),
            ("model_sig", V::str("0123456789abcdef0123456789abcdef")),
            ("config", V::Files(vec![])),
        ],
        &[
            ("00000.identified_nucleotide.fa".into(), shard.clone()),
            ("models--zhihan1996--DNABERT-S".into(), repo_dir.clone()),
        ],
    );
    let script = task.script(Block::Script);
    assert!(
        script.contains(&format!(
            "--model models--zhihan1996--DNABERT-S/snapshots/{rev} "
        )),
        "{script}"
    );
    task.run(Block::Script, &bin);
    let out = task.outputs();
    assert_eq!(out["embeddings"].len(), 1);
    assert!(out["failed"].is_empty(), "{:?}", out["failed"]);
    let main = read("nextflow/main.nf");
    for needle in [
        "real.parent?.name == 'snapshots' && repo?.resolve('blobs')?.isDirectory()",
        "def sub = hubSnapshot ? \"snapshots/${real.name}\".toString() : ''",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
}

/// A shard embedded by one step and not the other, or a sample short of shards, fails the
/// run: every join fails on mismatch and duplicates, every groupTuple keeps its remainder and
/// the shard count is checked, and samples missing from PREDICT's reports are named.
#[test]
fn a_missing_shard_or_sample_fails_the_run() {
    let main = read("nextflow/main.nf");
    // Channel joins are chained calls on their own line (`.join(', ')` of lists is not one).
    let joins: Vec<&str> = main
        .lines()
        .map(|l| strip_comment(l).trim())
        .filter(|l| l.starts_with(".join("))
        .collect();
    assert!(!joins.is_empty());
    for j in joins {
        assert!(
            j.contains("failOnMismatch: true") && j.contains("failOnDuplicate: true"),
            "every channel join fails on mismatch and duplicates: {j}"
        );
    }
    let groups = main.matches(".groupTuple(").count();
    assert!(groups >= 1);
    assert_eq!(
        main.matches(".groupTuple(remainder: true)").count(),
        groups,
        "groupTuple keeps incomplete groups (to check them)"
    );
    let at = main.find(".groupTuple(remainder: true)").unwrap();
    let after = &main[at..];
    let check = after
        .find("if (keys.size() != meta.shards) {")
        .expect("shard count checked");
    assert!(after[check..]
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .starts_with("error "));
    for needle in [
        "def missing = lists[0] - lists[1]",
        "PREDICT.out.report.map { meta, report -> meta.id }.toList()",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
}

/// nf-schema 2.x reads the schema (draft 2020-12, checked in params_are_documented_in_the_schema)
/// and validates the parameters before anything runs.
#[test]
fn parameters_are_validated_at_the_start() {
    let config = read("nextflow/nextflow.config");
    let plugins = block_at(&config, config.find("plugins {").expect("plugins") + 8);
    assert!(plugins.contains("id 'nf-schema@2."), "{plugins}");
    let main = read("nextflow/main.nf");
    assert!(main.contains("include { validateParameters } from 'plugin/nf-schema'"));
    let wf = block_at(&main, main.find("workflow {").unwrap() + 9);
    let first = wf
        .lines()
        .map(strip_comment)
        .find(|l| !l.trim().is_empty())
        .unwrap();
    assert_eq!(
        first.trim(),
        "validateParameters()",
        "first thing the workflow does"
    );
}

/// Apptainer/Singularity without --container_sif would pull `docker://virnucpro:…` from
/// Docker Hub, where it is not: the run stops at the start unless the image names a registry.
#[test]
fn containers_without_a_registry_fail_early_under_apptainer() {
    let main = read("nextflow/main.nf");
    let at = main
        .find("if (workflow.containerEngine in ['singularity', 'apptainer'] && !params.container_sif && !params.container.contains('/')) {")
        .expect("main.nf checks the apptainer image");
    let msg = main[at..].lines().nth(1).unwrap();
    assert!(msg.trim().starts_with("error "));
    for needle in [
        "--container_sif",
        "containers/virnucpro.def",
        "--container registry/",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    // The default is a local name: the check applies to it.
    assert!(!config_params("nextflow/nextflow.config")["container"]
        .render()
        .contains('/'));
}

/// Requests are capped by --max_cpus/--max_memory/--max_time, and the test profile by its own
/// limits; local_gpu documents the wait and Nextflow >= 26.10's own GPU tracking.
#[test]
fn resource_limits_cap_requests() {
    let config = read("nextflow/nextflow.config");
    assert!(config.contains(
        "process.resourceLimits = [cpus: params.max_cpus, memory: params.max_memory, time: params.max_time].findAll { k, v -> v != null }"
    ));
    assert!(read("conf/test.config").contains("resourceLimits = [cpus: 2"));
    let at = config.find("\n    local_gpu {").unwrap();
    let doc: Vec<&str> = config[..at]
        .lines()
        .rev()
        .take_while(|l| l.trim_start().starts_with("//"))
        .collect();
    let doc = doc.join("\n");
    for needle in ["26.10", "maxForks is per process", "--max_cpus"] {
        assert!(doc.contains(needle), "local_gpu's comment: {needle}");
    }
}

/// nf-test files for environments with Nextflow: per module a stub and a real test that give
/// every declared input, and a pipeline test with the test profile.
#[test]
fn nf_test_files_cover_every_module_and_the_pipeline() {
    assert!(repo().join("nextflow/nf-test.config").is_file());
    for m in modules() {
        let rel = format!("nextflow/modules/{}/tests/main.nf.test", m.dir);
        let t = read(&rel);
        assert!(t.contains(&format!("process \"{}\"", m.name)), "{rel}");
        assert!(t.contains("script \"../main.nf\""), "{rel}");
        let stubs = t.matches("options \"-stub\"").count();
        let tests = t.matches("\n    test(\"").count();
        assert!(stubs >= 1 && tests > stubs, "{rel}: stub and real tests");
        // Each test gives every declared input: input[0] .. input[n-1].
        let declared = m
            .section("input:")
            .unwrap()
            .lines()
            .filter(|l| !strip_comment(l).trim().is_empty())
            .count();
        for (i, test) in t.split("\n    test(\"").skip(1).enumerate() {
            for k in 0..declared {
                assert!(
                    test.contains(&format!("input[{k}]")),
                    "{rel} test {i}: input[{k}]"
                );
            }
            assert!(
                !test.contains(&format!("input[{declared}]")),
                "{rel} test {i}"
            );
        }
    }
    let t = read("nextflow/tests/main.nf.test");
    assert!(t.contains("nextflow_pipeline"));
    assert!(t.contains("script \"../main.nf\""));
    assert!(t.contains("profile \"test\""));
    assert!(t.contains("options \"-stub\""));
}

/// FETCH_MODELS: one task per model given as a Hub id / 500 / 300 / URL, stored once (storeDir
/// in conf/modules.config) at the path `virnucpro models fetch` leaves it, wired before the
/// GPU steps; with --hf_home nothing is fetched.
#[test]
fn fetch_models_downloads_ids_once_into_a_store() {
    let m = read("nextflow/modules/fetch_models/main.nf");
    assert!(m.contains("process FETCH_MODELS {"));
    assert!(m.contains("task.ext.when == null || task.ext.when"));
    assert!(m.contains("container \""));
    assert!(m.contains("tuple val(kind), val(id), val(stored)"));
    assert!(m.contains("path(\"${stored}\"), emit: model"));
    assert!(m.contains("virnucpro models fetch ${args} --${kind} '${id}'"));
    assert!(m.contains("stub:"));
    // The flags it passes exist on `models fetch`.
    let help = help(&["models", "fetch", "--help"]);
    for flag in ["--dnabert", "--esm", "--classifier", "--revision"] {
        assert!(help_has(&help, flag), "models fetch {flag}");
    }
    assert!(repo()
        .join("nextflow/modules/fetch_models/meta.yml")
        .is_file());
    let t = read("nextflow/modules/fetch_models/tests/main.nf.test");
    assert!(t.contains("process \"FETCH_MODELS\"") && t.contains("options \"-stub\""));
    // Stored once, on shared storage, and nowhere published.
    let modules = read("conf/modules.config");
    let at = modules
        .find("withName: 'FETCH_MODELS'")
        .expect("a FETCH_MODELS block");
    let block = block_at(&modules, at + modules[at..].find('{').unwrap());
    assert!(
        block.contains("storeDir") && block.contains("params.model_store"),
        "{block}"
    );
    assert!(!m.contains("publishDir"));
    let main = read("nextflow/main.nf");
    for needle in [
        "FETCH_MODELS(channel.fromList(remote.collect",
        "def remote = params.hf_home ? [] :",
        "modelChannel('dnabert', specs.dnabert, FETCH_MODELS.out.model)",
        "modelChannel('esm', specs.esm, FETCH_MODELS.out.model)",
        "modelChannel('classifier', specs.classifier, FETCH_MODELS.out.model)",
        // The store path is the cache layout of `virnucpro models fetch` (src/hub).
        "\"hub/models--${given.split('@')[0].replace('/', '--')}\"",
        "\"virnucpro/classifiers/${key}\"",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
    // The embedding steps come after: they take the model channels built from the fetch.
    assert!(main.find("FETCH_MODELS(").unwrap() < main.find("EMBED_DNA(").unwrap());
}
