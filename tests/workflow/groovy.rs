//! A Groovy subset, enough to render the Nextflow modules' scripts and evaluate the configs'
//! closures as Nextflow would (tests/workflow/nextflow_modules.rs): string literals, GString
//! interpolation (`${expr}`, greedy `$a.b.c`, `\$`, `\\`, line continuations), dotted names
//! (into maps too), `+`, `==`, `!=`, `!`, `&&`, `||`, `?:`, `? :`, list literals, the methods
//! `.endsWith(s)`, `.collect { a -> ... }` (a closure of one parameter, or several taking a
//! list's elements), `.transpose()`, `.join(s)` and `.size()`, and Groovy's stripIndent. Anything else is an error, so a module that needs more fails its
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
    List(Vec<V>),
    /// A map such as `meta`, whose keys dotted names reach (`m.id`).
    Map(BTreeMap<String, V>),
}

impl V {
    pub fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => n.parse::<f64>() != Ok(0.0),
            V::Str(s) => !s.is_empty(),
            V::Files(f) => !f.is_empty(),
            V::List(l) => !l.is_empty(),
            V::Map(m) => !m.is_empty(),
        }
    }
    /// The elements of a list, or of staged files (each a file name).
    pub fn items(&self) -> Result<Vec<V>, String> {
        match self {
            V::List(l) => Ok(l.clone()),
            V::Files(f) => Ok(f.iter().map(|n| V::Str(n.clone())).collect()),
            v => Err(format!("not a list: {v:?}")),
        }
    }
    pub fn render(&self) -> String {
        match self {
            V::Null => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Num(s) | V::Str(s) => s.clone(),
            V::Files(f) => f.join(" "),
            // As Groovy prints them.
            V::List(l) => format!(
                "[{}]",
                l.iter().map(V::render).collect::<Vec<_>>().join(", ")
            ),
            V::Map(m) => {
                let kv: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.render()))
                    .collect();
                format!("[{}]", kv.join(", "))
            }
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
            // `m.id` of a map `m`: the longest bound prefix, then its keys.
            None if name.contains('.') => {
                let mut cut = name.rmatch_indices('.').map(|(i, _)| i);
                let found = cut.find_map(|i| self.0.get(&name[..i]).map(|v| (v, &name[i + 1..])));
                let (mut v, rest) = found.ok_or(format!("unbound variable `{name}`"))?;
                for key in rest.split('.') {
                    v = match v {
                        V::Map(m) => m.get(key).ok_or(format!("no key `{key}` in `{name}`"))?,
                        _ => return Err(format!("`{name}`: not a map before `{key}`")),
                    };
                }
                Ok(v.clone())
            }
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
    /// `.name` after a value that is not a name (`[a, b].transpose()`, `{ ... }.join(' ')`).
    Method(String),
    /// A closure's body, kept as text until it is called.
    Closure(String),
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 14] = [
        "?:", "==", "!=", "&&", "||", "?", ":", "+", "(", ")", "!", "[", "]", ",",
    ];
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
        } else if ch == '{' {
            let body = block_at(
                &src[c[..i].iter().map(|x| x.len_utf8()).sum::<usize>()..],
                0,
            );
            out.push(Tok::Closure(body.to_string()));
            i += body.chars().count() + 2;
        } else if ch == '.' && c.get(i + 1).is_some_and(|x| x.is_ascii_alphabetic()) {
            let j = end(i + 1, |x| x.is_ascii_alphanumeric() || x == '_');
            out.push(Tok::Method(c[i + 1..j].iter().collect()));
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
        let mut v = self.primary()?;
        while let Some(Tok::Method(m)) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            v = self.call(v, &m)?;
        }
        Ok(v)
    }
    fn primary(&mut self) -> Result<V, String> {
        let tok = self.toks.get(self.pos).cloned().ok_or("unexpected end")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str('\'', s) => V::Str(s.replace("\\'", "'").replace("\\\\", "\\")),
            Tok::Str(_, s) => V::Str(gstring(&s, self.ctx)?),
            Tok::Num(n) => V::Num(n),
            Tok::Name(n) if n == "null" => V::Null,
            Tok::Name(n) if n == "true" || n == "false" => V::Bool(n == "true"),
            // `a.b.method(...)` / `a.b.method { ... }`: the last segment is a method call.
            Tok::Name(n) if n.contains('.') && self.at_arguments() => {
                let (target, method) = n.rsplit_once('.').unwrap();
                let target = self.ctx.get(target)?;
                self.call(target, method)?
            }
            Tok::Name(n) => self.ctx.get(&n)?,
            Tok::Op("(") => {
                let v = self.ternary()?;
                self.expect(")")?;
                v
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.eat("]") {
                    if !items.is_empty() {
                        self.expect(",")?;
                    }
                    items.push(self.ternary()?);
                }
                V::List(items)
            }
            t => return Err(format!("unexpected {t:?}")),
        })
    }
    fn at_arguments(&self) -> bool {
        matches!(
            self.toks.get(self.pos),
            Some(Tok::Op("(") | Tok::Closure(_))
        )
    }
    /// `target.method(arg)` or `target.method { closure }`.
    fn call(&mut self, target: V, method: &str) -> Result<V, String> {
        if let Some(Tok::Closure(body)) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            if method != "collect" {
                return Err(format!("unsupported method {method} {{ }}"));
            }
            let items = target.items()?.into_iter();
            let out: Result<Vec<V>, String> = items
                .map(|x| call_closure(&body, Some(x), self.ctx))
                .collect();
            return Ok(V::List(out?));
        }
        self.expect("(")?;
        let arg = if self.eat(")") {
            None
        } else {
            let a = self.ternary()?;
            self.expect(")")?;
            Some(a)
        };
        Ok(match (method, arg) {
            ("endsWith", Some(a)) => V::Bool(target.render().ends_with(&a.render())),
            ("join", Some(a)) => {
                let parts: Vec<String> = target.items()?.iter().map(V::render).collect();
                V::Str(parts.join(&a.render()))
            }
            ("size", None) => V::Num(target.items()?.len().to_string()),
            ("transpose", None) => {
                let rows: Vec<Vec<V>> = target
                    .items()?
                    .iter()
                    .map(V::items)
                    .collect::<Result<_, _>>()?;
                let n = rows.first().map_or(0, Vec::len);
                if rows.iter().any(|r| r.len() != n) {
                    // Groovy would cut to the shortest; a module relying on that is a bug.
                    return Err(format!("transpose of lists of different lengths: {rows:?}"));
                }
                V::List(
                    (0..n)
                        .map(|i| V::List(rows.iter().map(|r| r[i].clone()).collect()))
                        .collect(),
                )
            }
            (m, a) => return Err(format!("unsupported method {m}({a:?})")),
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

/// A closure's body `x -> expr` (or `expr`) applied to `arg`; `a, b -> expr` takes the
/// elements of a list argument, as Groovy does.
pub fn call_closure(body: &str, arg: Option<V>, ctx: &Ctx) -> Result<V, String> {
    let mut ctx = ctx.clone();
    let expr = match (body.split_once("->"), arg) {
        (Some((names, expr)), Some(arg)) => {
            let names: Vec<&str> = names.split(',').map(str::trim).collect();
            if names.len() == 1 {
                ctx.set(names[0], arg);
            } else {
                let items = arg.items()?;
                if items.len() != names.len() {
                    return Err(format!(
                        "closure {{{body}}}: {} parameters, {} values",
                        names.len(),
                        items.len()
                    ));
                }
                for (n, v) in names.into_iter().zip(items) {
                    ctx.set(n, v);
                }
            }
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
    // Lists and maps, as an embedding task over several shards renders its manifest.
    let member = |id: &str, shard: &str| {
        V::Map(
            [("id", id), ("shard", shard)]
                .map(|(k, v)| (k.to_string(), V::str(v)))
                .into(),
        )
    };
    ctx.set(
        "meta.members",
        V::List(vec![member("s1", "00000"), member("s.2", "00001")]),
    );
    let v = eval(
        "meta.members.collect { m -> \"${m.id}.${m.shard}\" }.join(' ')",
        &ctx,
    );
    assert_eq!(v.unwrap(), V::str("s1.00000 s.2.00001"));
    let v = eval(
        "[files, ['x', 'y']].transpose().collect { f, p -> f + ':' + p }.join(',')",
        &ctx,
    );
    assert_eq!(v.unwrap(), V::str("a:x,b:y"));
    assert_eq!(eval("files.size()", &ctx).unwrap(), V::Num("2".into()));
    assert_eq!(eval("[1, 'a']", &ctx).unwrap().render(), "[1, a]");
    assert!(
        eval("[files, ['x']].transpose()", &ctx).is_err(),
        "uneven lists"
    );
    assert!(eval("meta.members.id", &ctx).is_err(), "a list has no keys");
    assert!(
        eval("files.each { f -> f }", &ctx).is_err(),
        "methods outside the subset"
    );
}
