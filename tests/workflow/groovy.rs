//! A Groovy subset, enough to render the Nextflow modules' scripts and evaluate the configs'
//! closures as Nextflow would (tests/workflow/nextflow_modules.rs): string literals, GString
//! interpolation (`${expr}`, greedy `$a.b.c`, `\$`, `\\`, line continuations), dotted names,
//! `+`, `==`, `!=`, `!`, `&&`, `||`, `?:`, `? :`, `.endsWith(...)`, one-parameter closures, and
//! Groovy's stripIndent. Anything else is an error, so a module that needs more fails its
//! tests instead of being half-understood.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    /// A number, kept as written (Groovy prints it back the same way for our values).
    Num(String),
    Str(String),
    /// Staged files of a `path` input: Nextflow writes them space-separated; `[]` is "no file".
    Files(Vec<String>),
}

impl V {
    pub fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => n.parse::<f64>() != Ok(0.0),
            V::Str(s) => !s.is_empty(),
            V::Files(f) => !f.is_empty(),
        }
    }
    pub fn render(&self) -> String {
        match self {
            V::Null => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Num(s) | V::Str(s) => s.clone(),
            V::Files(f) => f.join(" "),
        }
    }
    pub fn str(s: &str) -> V {
        V::Str(s.to_string())
    }
    pub fn file(name: &str) -> V {
        V::Files(vec![name.to_string()])
    }
}

/// Variables by dotted name: `meta.id`, `task.cpus`, `params.outdir`, `fasta`, ...
#[derive(Clone, Debug, Default)]
pub struct Ctx(pub BTreeMap<String, V>);

impl Ctx {
    pub fn set(&mut self, name: &str, v: V) -> &mut Self {
        self.0.insert(name.to_string(), v);
        self
    }
    pub fn get(&self, name: &str) -> Result<V, String> {
        match self.0.get(name) {
            Some(v) => Ok(v.clone()),
            // Unset task.ext.* settings read as null in Nextflow.
            None if name.starts_with("task.ext.") => Ok(V::Null),
            None => Err(format!("unbound variable `{name}`")),
        }
    }
}

/// Interpolate the body of a double-quoted (or triple-double-quoted) Groovy string.
pub fn gstring(body: &str, ctx: &Ctx) -> Result<String, String> {
    let c: Vec<char> = body.chars().collect();
    let word = |j: usize| j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_');
    let (mut out, mut i) = (String::new(), 0);
    while i < c.len() {
        match (c[i], c.get(i + 1).copied().unwrap_or(' ')) {
            ('\\', e) => {
                match e {
                    '\\' | '$' | '"' | '\'' => out.push(e),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    '\n' => {} // line continuation: the newline disappears
                    _ => return Err(format!("unsupported escape \\{e}")),
                }
                i += 2;
            }
            ('$', '{') => {
                let end = (i..c.len()).find(|&j| c[j] == '}').ok_or("unclosed ${")?;
                let inner: String = c[i + 2..end].iter().collect();
                if inner.contains('{') {
                    return Err(format!("nested braces in ${{{inner}}}"));
                }
                out.push_str(&eval(&inner, ctx)?.render());
                i = end + 1;
            }
            ('$', n) if n.is_ascii_alphabetic() || n == '_' => {
                // Groovy takes `$a.b.c` greedily as a property path.
                let mut j = i + 1;
                while word(j) || (j + 1 < c.len() && c[j] == '.' && c[j + 1].is_ascii_alphabetic())
                {
                    j += 1;
                }
                out.push_str(&ctx.get(&c[i + 1..j].iter().collect::<String>())?.render());
                i = j;
            }
            ('$', _) => return Err(format!("a bare `$` at {i} (escape it: \\$)")),
            (ch, _) => {
                out.push(ch);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(char, String),
    Num(String),
    Name(String),
    Op(&'static str),
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 11] = ["?:", "==", "!=", "&&", "||", "?", ":", "+", "(", ")", "!"];
    let c: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    let end =
        |from: usize, ok: fn(char) -> bool| (from..c.len()).find(|&j| !ok(c[j])).unwrap_or(c.len());
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != ch {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let body = c
                .get(i + 1..j)
                .ok_or(format!("unclosed string in {src:?}"))?;
            out.push(Tok::Str(ch, body.iter().collect()));
            i = j + 1;
        } else if ch.is_ascii_digit() {
            let j = end(i, |x| x.is_ascii_digit() || x == '.');
            out.push(Tok::Num(c[i..j].iter().collect()));
            i = j;
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let j = end(i, |x| x.is_ascii_alphanumeric() || x == '_' || x == '.');
            out.push(Tok::Name(c[i..j].iter().collect()));
            i = j;
        } else {
            let rest: String = c[i..].iter().take(2).collect();
            let op = OPS.into_iter().find(|op| rest.starts_with(op));
            let op = op.ok_or(format!("unsupported character {ch:?} in {src:?}"))?;
            out.push(Tok::Op(op));
            i += op.len();
        }
    }
    Ok(out)
}

/// Binary operators by binding strength (weakest first), as in Groovy.
const LEVELS: [&[&str]; 4] = [&["||"], &["&&"], &["==", "!="], &["+"]];

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    ctx: &'a Ctx,
}

impl Parser<'_> {
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op);
        self.pos += usize::from(hit);
        hit
    }
    fn expect(&mut self, op: &str) -> Result<(), String> {
        match self.eat(op) {
            true => Ok(()),
            false => Err(format!(
                "expected `{op}` at token {}: {:?}",
                self.pos, self.toks
            )),
        }
    }
    fn ternary(&mut self) -> Result<V, String> {
        let cond = self.binary(0)?;
        if self.eat("?:") {
            let other = self.ternary()?;
            return Ok(if cond.truthy() { cond } else { other });
        }
        if !self.eat("?") {
            return Ok(cond);
        }
        let yes = self.ternary()?;
        self.expect(":")?;
        let no = self.ternary()?;
        Ok(if cond.truthy() { yes } else { no })
    }
    fn binary(&mut self, level: usize) -> Result<V, String> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut acc = self.binary(level + 1)?;
        while let Some(op) = LEVELS[level].iter().find(|op| self.eat(op)) {
            let right = self.binary(level + 1)?;
            let same = match (&acc, &right) {
                (V::Null, V::Null) => true,
                (V::Null, _) | (_, V::Null) => false,
                (a, b) => a.render() == b.render(),
            };
            acc = match *op {
                "||" => V::Bool(acc.truthy() || right.truthy()),
                "&&" => V::Bool(acc.truthy() && right.truthy()),
                "==" | "!=" => V::Bool(same == (*op == "==")),
                _ if matches!(acc, V::Str(_)) || matches!(right, V::Str(_)) => {
                    V::Str(acc.render() + &right.render())
                }
                _ => return Err(format!("`+` of {acc:?} and {right:?}")),
            };
        }
        Ok(acc)
    }
    fn unary(&mut self) -> Result<V, String> {
        if self.eat("!") {
            return Ok(V::Bool(!self.unary()?.truthy()));
        }
        let tok = self.toks.get(self.pos).cloned().ok_or("unexpected end")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str('\'', s) => V::Str(s.replace("\\'", "'").replace("\\\\", "\\")),
            Tok::Str(_, s) => V::Str(gstring(&s, self.ctx)?),
            Tok::Num(n) => V::Num(n),
            Tok::Name(n) if n == "null" => V::Null,
            Tok::Name(n) if n == "true" || n == "false" => V::Bool(n == "true"),
            // The one method call the configs need: `name.endsWith('suffix')`.
            Tok::Name(n) if n.ends_with(".endsWith") && self.eat("(") => {
                let target = self.ctx.get(n.trim_end_matches(".endsWith"))?.render();
                let suffix = self.ternary()?.render();
                self.expect(")")?;
                V::Bool(target.ends_with(&suffix))
            }
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

/// Evaluate one Groovy expression.
pub fn eval(src: &str, ctx: &Ctx) -> Result<V, String> {
    let mut p = Parser {
        toks: tokens(src)?,
        pos: 0,
        ctx,
    };
    let v = p.ternary()?;
    match p.pos == p.toks.len() {
        true => Ok(v),
        false => Err(format!(
            "trailing tokens in {src:?}: {:?}",
            &p.toks[p.pos..]
        )),
    }
}

/// A closure's body `x -> expr` (or `expr`) applied to `arg`.
pub fn call_closure(body: &str, arg: Option<V>, ctx: &Ctx) -> Result<V, String> {
    let mut ctx = ctx.clone();
    let expr = match (body.split_once("->"), arg) {
        (Some((name, expr)), Some(arg)) => {
            ctx.set(name.trim(), arg);
            expr
        }
        (None, None) => body,
        _ => return Err(format!("closure {{{body}}}: parameter and argument differ")),
    };
    eval(expr.trim(), &ctx)
}

/// Drop a `//` comment that is not inside a string literal.
pub fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let (mut quote, mut i) = (None::<u8>, 0);
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

/// Lines of `text` (comments left out) that contain `needle`.
pub fn code_lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .map(strip_comment)
        .filter(|l| l.contains(needle))
        .collect()
}

/// Groovy's `stripIndent()`, as Nextflow applies it to a task script.
pub fn strip_indent(s: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let min = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(indent)
        .min()
        .unwrap_or(0);
    let lines: Vec<&str> = s
        .lines()
        .map(|l| l.get(min..).unwrap_or(l.trim_start()))
        .collect();
    lines.join("\n") + "\n"
}

/// The text between the `{` at `open` and its matching `}`, skipping strings and comments.
pub fn block_at(text: &str, open: usize) -> &str {
    let b = text.as_bytes();
    assert_eq!(b[open], b'{');
    let (mut depth, mut i, mut quote) = (0usize, open, None::<u8>);
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b[i]),
            (None, b'/') if b.get(i + 1) == Some(&b'/') => {
                i += text[i..].find('\n').unwrap_or(text.len() - i);
            }
            (None, b'/') if b.get(i + 1) == Some(&b'*') => {
                i += text[i..].find("*/").expect("unclosed /* comment") + 1;
            }
            (None, b'{') => depth += 1,
            (None, b'}') if depth == 1 => return &text[open + 1..i],
            (None, b'}') => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced braces after byte {open}");
}

/// The body of the `{ ... }` that follows the first `head` in `text`.
pub fn block_after<'a>(text: &'a str, head: &str) -> &'a str {
    let at = text.find(head).unwrap_or_else(|| panic!("no `{head}`"));
    block_at(text, at + text[at..].find('{').unwrap())
}

/// Nextflow output globs: `*` and `?` within one path segment, `{a,b}` alternatives.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    if let (Some(open), Some(close)) = (pattern.find('{'), pattern.find('}')) {
        let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
        let alts = pattern[open + 1..close].split(',');
        return alts
            .into_iter()
            .any(|alt| glob_match(&format!("{head}{alt}{tail}"), path));
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

#[test]
fn groovy_subset_behaves_like_groovy() {
    let mut ctx = Ctx::default();
    ctx.set("meta.id", V::str("s1")).set("params.x", V::Null);
    ctx.set("files", V::Files(vec!["a".into(), "b".into()]));
    let gs = |s: &str| gstring(s, &ctx);
    assert_eq!(gs("$meta.id.${files}\\$x \\\\\n").unwrap(), "s1.a b$x \\\n");
    assert!(
        gs("$meta.id.dna").is_err(),
        "greedy property path, as Groovy"
    );
    assert!(gs("cost $ 5").is_err(), "a bare $");
    assert_eq!(
        gs("a\\\nb").unwrap(),
        "ab",
        "backslash-newline continues the line"
    );
    assert_eq!(eval("params.x ?: 'd'", &ctx).unwrap(), V::str("d"));
    let v = eval("(params.x != null ? 'y' : 'n') + '!'", &ctx);
    assert_eq!(v.unwrap(), V::str("n!"));
    // `a || b && c` is `a || (b && c)`; `!` binds tightest.
    assert_eq!(eval("true || false && false", &ctx).unwrap(), V::Bool(true));
    let v = eval("!params.x && meta.id.endsWith('1')", &ctx);
    assert_eq!(v.unwrap(), V::Bool(true));
    let v = call_closure(" f -> f == 'a' ? null : f ", Some(V::str("b")), &ctx);
    assert_eq!(v.unwrap(), V::str("b"));
    assert_eq!(strip_indent("\n    a\n      b\n"), "\na\n  b\n");
    assert!(glob_match("t/*.fa", "t/0.fa") && !glob_match("*.fa", "t/0.fa"));
    assert!(glob_match("prediction.{svg,png}", "prediction.png"));
    assert_eq!(block_at("{a {b} '}' // }\n}", 0), "a {b} '}' // }\n");
}
