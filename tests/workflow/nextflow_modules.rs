//! The Nextflow pipeline (nextflow/, conf/), checked where Nextflow cannot run.
//!
//! Where Nextflow and nf-test exist, the nf-test files run each module (a real case on the
//! shipped tiny models and a `-stub` case) and the pipeline (nextflow/nf-test.config); this file
//! checks that they exist and give every input. Nextflow is not installable here, nor in CI, so
//! the rest is checked without it:
//!
//! - Static checks, as text and data: every flag a module or an ext.args passes exists in the
//!   CLI; every param has a default in nextflow.config and an entry in nextflow_schema.json;
//!   each module's meta.yml (nf-core's schema) names the inputs and outputs of its main.nf, in
//!   order, with fitting types; publishDir lives in conf/modules.config (nf-core's convention),
//!   not in the modules; and the rules a first real run would trip over (GPU opt-in, container
//!   environment and mounts, no `move`, loud joins, model signature, schema validation);
//!   `--input` globs under nf-schema's format rules (modelled here), command-line strings
//!   through main.nf's helpers and the configs' closures, sample ids, modules free of params,
//!   every meta.yml under nf-core's meta-schema rules, the summary table's keys against the
//!   steps' real reports, nf-test files that snapshot or assert every output.
//! - The GPU guard of process_gpu's beforeScript, rendered and run under the environment each
//!   executor gives a task (one GPU, several, none, `all`, a stand-in nvidia-smi).
//! - A small Groovy interpreter (a subset: string literals, `$` interpolation, dotted names,
//!   `+`, `==`, `!=`, `!`, `&&`, `||`, `?:`, `? :`, lists and maps, `.endsWith(...)`,
//!   `.collect { }`, `.transpose()`, `.join(...)`, `.size()`, `def x = ...`) renders
//!   each module's `script:` and `stub:` the way Nextflow writes .command.sh, with the test
//!   profile's params and conf/modules.config's ext.args, and runs them under process.shell with
//!   the built binary. That is what proves, without Nextflow, what neither the static checks nor
//!   (absent Nextflow) nf-test do: the scripts as rendered chain TRANSLATE -> EMBED_* per shard
//!   -> PREDICT and reproduce the original's calls; 50 small samples, packed as main.nf packs
//!   them, share a handful of embedding tasks with one model load each and get the same
//!   embeddings and tables as with one task per shard; and PREDICT's gzipped viral FASTA files
//!   decompress to what standalone `virnucpro predict --sequences --chunks` writes; each stub
//!   writes the files the real step writes, in the same shape (names, report keys, table
//!   headers), and meta.yml's patterns match them; exit code 2 of the embedding steps passes
//!   only beside its report; the rendered scripts are shellcheck clean (the raw blocks are
//!   Groovy, not shell); conf/modules.config's publishDir closures publish exactly the files
//!   the README lists; the GPU label's beforeScript creates the host directories. A module
//!   needing more Groovy than the subset fails these tests instead of being half-understood.

use crate::groovy;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{fixtures, shellcheck};
use groovy::{block_after, block_at, call_closure, code_lines_with, eval, gstring, strip_comment};
use groovy::{glob_match, strip_indent, Ctx, V};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn assert_contains(text: &str, what: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{what}: missing `{n}`");
    }
}

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

// ---------------------------------------------------------------------------------------------
// Modules and configs.

/// (process, directory, subcommand)
const MODULES: [(&str, &str, &str); 4] = [
    ("TRANSLATE", "translate", "translate"),
    ("EMBED_DNA", "embed_dna", "embed-dna"),
    ("EMBED_PROTEIN", "embed_protein", "embed-protein"),
    ("PREDICT", "predict", "predict"),
];

#[derive(Clone)]
struct Module {
    name: &'static str,
    dir: &'static str,
    subcommand: &'static str,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Block {
    Script,
    Stub,
}

/// One element of an input or output declaration: `val(x)` / `path(...)`, name or raw pattern.
#[derive(Debug, Clone, PartialEq)]
struct Elem {
    path: bool,
    name: String,
}

/// One output channel: its elements, `emit:` and `optional: true`.
struct OutDecl {
    elems: Vec<Elem>,
    emit: String,
    optional: bool,
}

fn modules() -> Vec<Module> {
    let text = |dir| read(&format!("nextflow/modules/{dir}/main.nf"));
    let m = |&(name, dir, subcommand)| Module {
        name,
        dir,
        subcommand,
        text: text(dir),
    };
    MODULES.iter().map(m).collect()
}

fn module(name: &str) -> Module {
    modules().into_iter().find(|m| m.name == name).unwrap()
}

/// `val(x)`, `path(x)`, `path 'x'`, `val x` and tuples of them, in order.
fn elems(decl: &str) -> Vec<Elem> {
    let decl = decl.split(", emit:").next().unwrap().trim();
    let parts: Vec<&str> = match decl.strip_prefix("tuple ") {
        Some(t) => t.split("),").collect(),
        None => vec![decl],
    };
    let elem = |p: &str| {
        let (kind, rest) = p
            .trim()
            .split_at(if p.trim().starts_with("path") { 4 } else { 3 });
        let inner = rest.trim().trim_start_matches('(').trim();
        let name = match inner.chars().next() {
            Some(q @ ('\'' | '"')) => inner[1..].split(q).next().unwrap(),
            _ => inner.split([',', ')']).next().unwrap().trim(),
        };
        assert!(kind == "path" || kind == "val", "declaration {decl:?}");
        Elem {
            path: kind == "path",
            name: name.to_string(),
        }
    };
    parts.into_iter().map(elem).collect()
}

impl Module {
    /// The lines of a `label:` section, up to the next section.
    fn section(&self, label: &str) -> String {
        const LABELS: [&str; 6] = ["input:", "output:", "when:", "script:", "stub:", "exec:"];
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines.iter().position(|l| l.trim() == label);
        let start = start.unwrap_or_else(|| panic!("{}: no {label}", self.name)) + 1;
        let len = lines[start..]
            .iter()
            .position(|l| LABELS.contains(&l.trim()));
        lines[start..start + len.unwrap_or(lines.len() - start)].join("\n")
    }

    /// The declarations of `input:` or `output:`, comments and blank lines left out.
    fn decls(&self, label: &str) -> Vec<String> {
        let lines = self.section(label);
        let lines = lines.lines().map(|l| strip_comment(l).trim().to_string());
        lines.filter(|l| !l.is_empty()).collect()
    }

    /// Input channels, each a list of elements (a tuple, or one plain input).
    fn inputs(&self) -> Vec<Vec<Elem>> {
        self.decls("input:").iter().map(|l| elems(l)).collect()
    }

    fn outputs(&self) -> Vec<OutDecl> {
        let decl = |l: &String| OutDecl {
            elems: elems(l),
            emit: l
                .split("emit: ")
                .nth(1)
                .expect("emit:")
                .split(',')
                .next()
                .unwrap()
                .to_string(),
            optional: l.contains("optional: true"),
        };
        self.decls("output:").iter().map(decl).collect()
    }

    /// (statements before the string, the triple-quoted string's raw body) of script/stub.
    fn block(&self, block: Block) -> (String, String) {
        let sec = self.section(if block == Block::Script {
            "script:"
        } else {
            "stub:"
        });
        let parts: Vec<&str> = sec.split("\"\"\"").collect();
        assert_eq!(parts.len(), 3, "{} {block:?}: one \"\"\" string", self.name);
        (parts[0].to_string(), parts[1].to_string())
    }

    /// The bash script Nextflow would write to .command.sh for this block and context.
    fn render(&self, block: Block, ctx: &Ctx) -> String {
        let (stmts, body) = self.block(block);
        let (mut ctx, name) = (ctx.clone(), self.name);
        for stmt in stmts
            .lines()
            .map(|l| strip_comment(l).trim())
            .filter(|l| !l.is_empty())
        {
            let def = stmt.strip_prefix("def ").and_then(|d| d.split_once('='));
            let (var, expr) = def.unwrap_or_else(|| panic!("{name}: only `def x = ...`: {stmt}"));
            let v = eval(expr.trim(), &ctx).unwrap_or_else(|e| panic!("{name}: {stmt}: {e}"));
            ctx.set(var.trim(), v);
        }
        strip_indent(&gstring(&body, &ctx).unwrap_or_else(|e| panic!("{name} {block:?}: {e}")))
    }
}

/// `params { name = value }` of a config file, evaluated (`projectDir` = nextflow/).
fn config_params(rel: &str) -> BTreeMap<String, V> {
    let text = read(rel);
    let mut ctx = Ctx::default();
    ctx.set(
        "projectDir",
        V::Str(repo().join("nextflow").display().to_string()),
    );
    let mut out = BTreeMap::new();
    for line in block_after(&text, "\nparams {")
        .lines()
        .map(|l| strip_comment(l).trim())
    {
        if let Some((name, value)) = line.split_once('=') {
            let v = eval(value.trim(), &ctx).unwrap_or_else(|e| panic!("{rel}: {line}: {e}"));
            assert!(
                out.insert(name.trim().to_string(), v).is_none(),
                "{rel}: {name} twice"
            );
        }
    }
    out
}

/// The `-profile test` parameters: nextflow.config's, overridden by conf/test.config's.
fn test_params() -> BTreeMap<String, V> {
    let mut params = config_params("nextflow/nextflow.config");
    for (k, v) in config_params("conf/test.config") {
        assert!(
            params.insert(k.clone(), v).is_some(),
            "conf/test.config sets unknown param {k}"
        );
    }
    params
}

/// A context holding `params.<name>` for each parameter.
fn params_ctx(params: &BTreeMap<String, V>) -> Ctx {
    Ctx(params
        .iter()
        .map(|(k, v)| (format!("params.{k}"), v.clone()))
        .collect())
}

/// The `withName: 'A|B' { ... }` blocks of conf/modules.config: (process names, body).
fn with_name_blocks() -> Vec<(Vec<String>, String)> {
    let text = read("conf/modules.config");
    let mut out = Vec::new();
    for (at, _) in text.match_indices("withName: '") {
        let selector = text[at + 11..].split('\'').next().unwrap();
        let plain = selector
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c == '|');
        assert!(
            plain,
            "selector {selector:?}: only plain names joined by | are understood here"
        );
        let names = selector.split('|').map(String::from).collect();
        out.push((names, block_after(&text[at..], "{").to_string()));
    }
    out
}

/// The closure `{ ... }` assigned to `key` (`key = {` or `key: {`) in `block`, on one line.
fn closure_source(block: &str, key: &str) -> Option<String> {
    let at = block
        .find(&format!("{key} = {{"))
        .or_else(|| block.find(&format!("{key}: {{")))?;
    let lines = block_after(&block[at..], "{")
        .lines()
        .map(|l| strip_comment(l).trim());
    Some(lines.collect::<Vec<_>>().join(" "))
}

/// The closure `key` of process `process` in conf/modules.config (conf/test.config sets none).
fn process_closure(process: &str, key: &str) -> Option<String> {
    let blocks = with_name_blocks()
        .into_iter()
        .filter(|(names, _)| names.iter().any(|n| n == process));
    blocks
        .filter_map(|(_, body)| closure_source(&body, key))
        .next_back()
}

/// task.ext.args of a process for `params`.
fn ext_args(process: &str, params: &BTreeMap<String, V>) -> V {
    let eval = |src: String| call_closure(&src, None, &params_ctx(params));
    process_closure(process, "ext.args").map_or(V::Null, |src| eval(src).unwrap())
}

/// A module's nf-core meta.yml, as JSON.
fn meta_yml(dir: &str) -> Json {
    fn json(y: &yaml_rust2::Yaml) -> Json {
        use yaml_rust2::Yaml as Y;
        match y {
            Y::Real(r) => serde_json::from_str(r).unwrap(),
            Y::Integer(i) => Json::from(*i),
            Y::String(s) => Json::from(s.as_str()),
            Y::Boolean(b) => Json::from(*b),
            Y::Array(a) => Json::Array(a.iter().map(json).collect()),
            Y::Hash(h) => h
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), json(v)))
                .collect(),
            Y::Null => Json::Null,
            other => panic!("unexpected YAML {other:?}"),
        }
    }
    let rel = format!("nextflow/modules/{dir}/meta.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&read(&rel));
    json(&docs.unwrap_or_else(|e| panic!("{rel}: {e}"))[0])
}

/// A channel of meta.yml (one element, or a tuple's list of them) as [(name, properties)].
fn meta_channel(ch: &Json) -> Vec<(String, Json)> {
    let items = ch.as_array().cloned().unwrap_or_else(|| vec![ch.clone()]);
    let first = |e: &Json| {
        e.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .next()
    };
    items.iter().map(|e| first(e).unwrap()).collect()
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

#[derive(Clone)]
struct Task {
    module: Module,
    dir: PathBuf,
    ctx: Ctx,
    /// (file name in the work directory, the file it links to)
    stage: Vec<(String, PathBuf)>,
}

impl Task {
    /// `inputs`: every declared input but `meta` (whose `meta.id` is given), in order.
    fn new(
        root: &Path,
        name: &str,
        tag: &str,
        inputs: Vec<(&str, V)>,
        stage: Vec<(String, PathBuf)>,
    ) -> Task {
        let module = module(name);
        let declared = module
            .inputs()
            .concat()
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "meta");
        let given = inputs
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| !n.starts_with("meta."));
        assert_eq!(
            declared.collect::<Vec<_>>(),
            given.collect::<Vec<_>>(),
            "{name}: inputs"
        );
        let params = test_params();
        let mut ctx = params_ctx(&params);
        ctx.set("task.process", V::str(name))
            .set("task.cpus", V::Num("2".into()));
        ctx.set("task.ext.args", ext_args(name, &params));
        for (n, v) in inputs {
            ctx.set(n, v);
        }
        let dir = root.join(format!("{}_{tag}", module.dir));
        let task = Task {
            module,
            dir,
            ctx,
            stage,
        };
        task.stage_in();
        task
    }

    fn stage_in(&self) {
        fs::create_dir_all(&self.dir).unwrap();
        for (name, target) in &self.stage {
            // A name with a folder (`stageAs: 'input/*'`) is staged inside it, as Nextflow does.
            let link = self.dir.join(name);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, link).unwrap();
        }
    }

    /// The same task in a fresh work directory (`<dir>_<suffix>`).
    fn copy(&self, suffix: &str) -> Task {
        let dir = PathBuf::from(format!("{}_{suffix}", self.dir.display()));
        let task = Task {
            dir,
            ..self.clone()
        };
        task.stage_in();
        task
    }

    fn script(&self, block: Block) -> String {
        self.module.render(block, &self.ctx)
    }

    /// Runs the block as Nextflow runs .command.sh: process.shell of conf/base.config, in the
    /// work directory, `path` first on PATH.
    fn run_with(&self, block: Block, path: &Path, env: &[(&str, &str)]) -> Output {
        let base = read("conf/base.config");
        let shell = base
            .lines()
            .find_map(|l| l.trim().strip_prefix("shell  = ["))
            .unwrap();
        let shell: Vec<&str> = shell
            .trim_end_matches(']')
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        fs::write(self.dir.join(".command.sh"), self.script(block)).unwrap();
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg(".command.sh")
            .current_dir(&self.dir)
            .envs(env.iter().copied());
        let sys_path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{sys_path}", path.display()))
            .output()
            .unwrap()
    }

    /// Runs the block with the binary under test: it succeeds and writes versions.yml.
    fn run(&self, block: Block, bin: &Path) {
        let o = self.run_with(block, bin, &[]);
        let (name, err) = (self.module.name, String::from_utf8_lossy(&o.stderr));
        assert!(
            o.status.success(),
            "{name} {block:?}: {err}\n{}",
            self.script(block)
        );
        let versions = fs::read_to_string(self.dir.join("versions.yml")).unwrap();
        let want = format!(
            "\"{name}\":\n    virnucpro: {}\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(versions, want, "{name} {block:?}: versions.yml");
    }

    /// Files matching each declared output, by emit (a non-optional one must match).
    fn outputs(&self) -> BTreeMap<String, Vec<String>> {
        let files = list_files(&self.dir, &self.dir);
        let mut out = BTreeMap::new();
        for d in self.module.outputs() {
            for e in d.elems.iter().filter(|e| e.path) {
                let pattern = gstring(&e.name, &self.ctx).unwrap();
                let hits = files.iter().filter(|f| glob_match(&pattern, f)).cloned();
                let hits: Vec<String> = hits.collect();
                let name = self.module.name;
                assert!(
                    d.optional || !hits.is_empty(),
                    "{name}: no {pattern:?} in {files:?}"
                );
                out.entry(d.emit.clone())
                    .or_insert_with(Vec::new)
                    .extend(hits);
            }
        }
        out
    }
}

/// Paths under `dir` relative to `root` (links followed, as Nextflow's output globs do), the
/// hidden task files left out.
fn list_files(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        match (rel.starts_with('.'), p.is_dir()) {
            (true, _) => {}
            (false, true) => out.extend(list_files(root, &p)),
            (false, false) => out.push(rel),
        }
    }
    out.sort();
    out
}

fn param_path(params: &BTreeMap<String, V>, name: &str) -> PathBuf {
    PathBuf::from(params[name].render())
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// (name in the work directory, the file it links to)
fn staged(p: &Path) -> (String, PathBuf) {
    (file_name(p), p.to_path_buf())
}

fn translate_task(root: &Path, id: &str, fasta: &Path, config: Option<&Path>) -> Task {
    let params = test_params();
    let inputs = vec![
        ("meta.id", V::str(id)),
        ("fasta", V::file(&file_name(fasta))),
        ("chunk_size", params["chunk_size"].clone()),
        ("shard_size", params["shard_size"].clone()),
        (
            "config",
            V::Files(config.iter().map(|c| file_name(c)).collect()),
        ),
    ];
    let stage = [fasta].into_iter().chain(config).map(staged).collect();
    Task::new(root, "TRANSLATE", id, inputs, stage)
}

/// One shard as an embedding task takes it: (sample id, shard key, its FASTA).
type Shard = (String, String, PathBuf);

/// An EMBED_DNA or EMBED_PROTEIN (`name`) task on a group of shards, as main.nf's embedGroups
/// hands them over: `meta.members` the shards' sample ids and keys, the FASTA files staged each
/// in its own folder (`stageAs: '?/*'`), in the same order. The model is staged as is, read at
/// `model/subdir`.
fn embed_task(
    root: &Path,
    name: &str,
    (group, members): (&str, &[Shard]),
    model: &Path,
    subdir: &str,
) -> Task {
    let member = |(id, shard, _): &Shard| {
        let keys = [("id", id), ("shard", shard)];
        V::Map(keys.map(|(k, v)| (k.to_string(), V::str(v))).into())
    };
    let staged_fasta: Vec<(String, PathBuf)> = members
        .iter()
        .enumerate()
        .map(|(i, (_, _, f))| (format!("{}/{}", i + 1, file_name(f)), f.clone()))
        .collect();
    let inputs = vec![
        ("meta.id", V::str(group)),
        (
            "meta.members",
            V::List(members.iter().map(member).collect()),
        ),
        (
            "fasta",
            V::Files(staged_fasta.iter().map(|(n, _)| n.clone()).collect()),
        ),
        ("model", V::file(&file_name(model))),
        ("model_subdir", V::str(subdir)),
        ("model_sig", V::str("0123456789abcdef0123456789abcdef")),
        ("config", V::Files(vec![])),
    ];
    let stage = staged_fasta.into_iter().chain([staged(model)]).collect();
    Task::new(root, name, group, inputs, stage)
}

/// A PREDICT task on one sample: every shard's embeddings, the sample's input FASTA (staged
/// under input/, as the module's `stageAs` says) and TRANSLATE's chunked.fa.
struct PredictInputs<'a> {
    dna: &'a [PathBuf],
    protein: &'a [PathBuf],
    fasta: &'a Path,
    chunks: &'a Path,
}

fn predict_task(root: &Path, id: &str, given: &PredictInputs, mlp: &Path) -> Task {
    let names = |l: &[PathBuf]| V::Files(l.iter().map(|p| file_name(p)).collect());
    let fasta = format!("input/{}", file_name(given.fasta));
    let inputs = vec![
        ("meta.id", V::str(id)),
        ("dna", names(given.dna)),
        ("protein", names(given.protein)),
        ("fasta", V::file(&fasta)),
        ("chunks", V::file(&file_name(given.chunks))),
        ("classifier", V::file(&file_name(mlp))),
        ("config", V::Files(vec![])),
    ];
    let stage = given
        .dna
        .iter()
        .chain(given.protein)
        .map(|p| staged(p))
        .chain([(fasta, given.fasta.to_path_buf()), staged(given.chunks)])
        .chain([staged(mlp)])
        .collect();
    Task::new(root, "PREDICT", id, inputs, stage)
}

/// The module scripts, in the workflow's order, on one sample: TRANSLATE, then EMBED_DNA and
/// EMBED_PROTEIN per shard (paired by shard key), then PREDICT on every shard sorted by key (as
/// main.nf passes them) with the sample's FASTA and TRANSLATE's chunked.fa. Each task runs in
/// its own work directory with links to the previous tasks' outputs, as Nextflow stages them,
/// and is checked against its declared outputs.
/// Returns every task, in order.
fn run_sample(root: &Path, bin: &Path, id: &str, fasta: &Path) -> Vec<Task> {
    let params = test_params();
    let t = translate_task(root, id, fasta, None);
    t.run(Block::Script, bin);
    let shards = &t.outputs()["shards"];
    let by_key = |ext: &str| -> BTreeMap<String, PathBuf> {
        let files = shards.iter().filter(|f| f.ends_with(ext));
        files
            .map(|f| {
                (
                    f.rsplit('/').next().unwrap()[..5].to_string(),
                    t.dir.join(f),
                )
            })
            .collect()
    };
    let (nuc, prot) = (by_key(".fa"), by_key(".faa"));
    assert_eq!(
        nuc.keys().collect::<Vec<_>>(),
        prot.keys().collect::<Vec<_>>(),
        "{id}: pairs"
    );
    let mut tasks = vec![t.clone()];
    let (mut dna, mut protein) = (Vec::new(), Vec::new());
    for (k, n) in &nuc {
        for (name, input, model, list) in [
            ("EMBED_DNA", n, "dnabert", &mut dna),
            ("EMBED_PROTEIN", &prot[k], "esm", &mut protein),
        ] {
            let model = param_path(&params, model);
            let shard = [(id.to_string(), k.clone(), input.clone())];
            let task = embed_task(root, name, (&format!("{id}_{k}"), &shard), &model, "");
            task.run(Block::Script, bin);
            let out = task.outputs();
            assert!(
                out["failed"].is_empty(),
                "{name} {id}/{k}: failed: {:?}",
                out["failed"]
            );
            assert_eq!(out["embeddings"].len(), 1, "{name} {id}/{k}");
            list.push(task.dir.join(&out["embeddings"][0]));
            tasks.push(task);
        }
    }
    let chunks = &t.outputs()["chunks"];
    assert_eq!(
        chunks.len(),
        1,
        "{id}: one chunked.fa whatever the shard count"
    );
    let given = PredictInputs {
        dna: &dna,
        protein: &protein,
        fasta,
        chunks: &t.dir.join(&chunks[0]),
    };
    let p = predict_task(root, id, &given, &param_path(&params, "classifier"));
    let names: Vec<String> = dna.iter().map(|p| file_name(p)).collect();
    let all_dna = format!("--dna {} ", names.join(" "));
    let script = p.script(Block::Script);
    assert!(script.contains(&all_dna), "every DNA shard on one --dna");
    for flag in [
        format!("--sequences input/{} ", file_name(fasta)),
        "--chunks chunked.fa ".to_string(),
    ] {
        assert!(script.contains(&flag), "{id}: {flag}in {script}");
    }
    p.run(Block::Script, bin);
    p.outputs();
    tasks.push(p);
    tasks
}

/// A sample whose only sequence is too short for an ORF, through every module.
fn tiny_sample(root: &Path, bin: &Path) -> Vec<Task> {
    let input = root.join("tiny.fa");
    fs::write(&input, ">too_short\nAC\n").unwrap();
    run_sample(root, bin, "tiny", &input)
}

// ---------------------------------------------------------------------------------------------
// The scripts, run.

/// A gzipped output, decompressed.
fn gunzip(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// `virnucpro predict --sequences ... --chunks ...` run standalone on a PREDICT task's inputs
/// (the files staged in its work directory, its ext.args) into `<work>/standalone`: what the
/// module's gzipped viral FASTA files must decompress to.
fn standalone_predict(task: &Task) -> PathBuf {
    let input = |name: &str| task.ctx.get(name).unwrap();
    let mut args = vec!["predict".to_string()];
    args.extend(
        input("task.ext.args")
            .render()
            .split_whitespace()
            .map(String::from),
    );
    for (flag, name) in [
        ("--classifier", "classifier"),
        ("--dna", "dna"),
        ("--protein", "protein"),
        ("--sequences", "fasta"),
        ("--chunks", "chunks"),
    ] {
        args.push(flag.to_string());
        match input(name) {
            V::Files(files) => args.extend(files),
            other => panic!("{name}: {other:?}"),
        }
    }
    args.extend(["--outdir".to_string(), "standalone".to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_virnucpro"))
        .args(&args)
        .current_dir(&task.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "virnucpro {args:?}: {err}");
    task.dir.join("standalone")
}

/// The ids of a FASTA's records (the header up to the first space).
fn fasta_ids(text: &str) -> Vec<String> {
    let headers = text.lines().filter_map(|l| l.strip_prefix('>'));
    headers
        .map(|h| h.split(' ').next().unwrap().to_string())
        .collect()
}

/// The first column of a tab-separated table's rows whose column `col` is `value`, header
/// left out.
fn ids_where(table: &Path, col: usize, value: &str) -> Vec<String> {
    let text = fs::read_to_string(table).unwrap();
    let rows = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>());
    rows.filter(|r| r[col] == value)
        .map(|r| r[0].to_string())
        .collect()
}

/// PREDICT's viral_sequences.fa.gz and viral_chunks.fa.gz decompress to exactly what
/// `virnucpro predict --sequences --chunks` writes standalone on the same inputs, and hold the
/// sequences sequence_summary.tsv calls virus and the chunks the highest-score table calls
/// True, in that order. Returns (viral sequences, viral chunks).
fn check_viral_fasta(task: &Task) -> (usize, usize) {
    let out = task.outputs();
    let standalone = standalone_predict(task);
    let mut counts = Vec::new();
    for (emit, plain, table, col, value) in [
        (
            "viral_sequences",
            "viral_sequences.fa",
            "sequence_summary.tsv",
            6,
            "virus",
        ),
        (
            "viral_chunks",
            "viral_chunks.fa",
            "prediction_results_highestscore.csv",
            1,
            "True",
        ),
    ] {
        assert_eq!(out[emit], vec![format!("{plain}.gz")], "{emit}");
        let text = gunzip(&task.dir.join(&out[emit][0]));
        let want = fs::read_to_string(standalone.join(plain)).unwrap();
        assert_eq!(text, want, "{emit}: the module's vs standalone predict's");
        let ids = fasta_ids(&text);
        assert_eq!(ids, ids_where(&task.dir.join(table), col, value), "{emit}");
        assert!(
            !task.dir.join(plain).exists(),
            "{plain}: gzipped in place, not left beside its .gz"
        );
        counts.push(ids.len());
    }
    let summary = fs::read_to_string(task.dir.join("sequence_summary.tsv")).unwrap();
    assert_eq!(
        summary.lines().next().unwrap().split('\t').nth(6),
        Some("prediction"),
        "sequence_summary.tsv: the call's column"
    );
    (counts[0], counts[1])
}

/// The test profile's samples through the module scripts reproduce the original's calls, and
/// PREDICT's gzipped viral FASTA files hold what standalone predict writes.
#[test]
fn module_scripts_run_the_test_profile_and_reproduce_the_original() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    let params = test_params();
    assert_eq!(
        params["device"],
        V::str("cpu"),
        "the test profile is CPU only"
    );
    let golden = fixtures().join(format!("e2e/chunk{}", params["chunk_size"].render()));
    let sheet = param_path(&params, "input");
    let samples: Vec<String> = fs::read_to_string(&sheet)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(samples[0], "sample,fasta");
    assert!(
        samples.len() > 2,
        "the test samplesheet exercises several samples"
    );
    for line in &samples[1..] {
        let (id, fasta) = line.split_once(',').unwrap();
        let tasks = run_sample(root.path(), &bin, id, &sheet.parent().unwrap().join(fasta));
        assert!(
            tasks.len() > 1 + 2 * 2,
            "{id}: shard_size gives several shards"
        );
        let predict = tasks.last().unwrap();
        let (sequences, chunks) = check_viral_fasta(predict);
        assert!(
            sequences > 0 && chunks > 0,
            "{id}: the test profile calls some sequence viral, so the copies are checked on records"
        );
        let out = &predict.dir;
        for table in [
            "prediction_results_highestscore.csv",
            "prediction_results.txt",
        ] {
            // prediction_results.txt: ids and labels (the scores are compared elsewhere).
            let rows = |dir: &Path| -> Vec<String> {
                let text = fs::read_to_string(dir.join(table)).unwrap();
                text.lines()
                    .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join("\t"))
                    .collect()
            };
            assert_eq!(
                rows(out),
                rows(&golden),
                "{id}: {table} differs from the original's"
            );
        }
    }
}

/// The shape of a step's outputs: per emit, the file names, and per file the JSON keys of a
/// report, the first line of a table (its header) or of versions.yml, whether a FASTA file is
/// one, or nothing for a binary one. A FASTA's first line is a record's header, data and not
/// shape: the tiny sample's chunked.fa holds its one chunk, the stub's (which cannot know the
/// sample's ids) nothing.
fn output_shape(task: &Task) -> BTreeMap<String, Vec<(String, String)>> {
    let mut shape = BTreeMap::new();
    for (emit, files) in task.outputs() {
        let entries = files.into_iter().map(|f| {
            let text = fs::read_to_string(task.dir.join(&f)).unwrap_or_default();
            let what = match f.rsplit('.').next().unwrap() {
                "json" => format!(
                    "{:?}",
                    serde_json::from_str::<Json>(&text)
                        .map(|j| j.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
                ),
                "txt" | "csv" | "tsv" | "yml" => format!("{:?}", text.lines().next()),
                "fa" | "faa" if text.is_empty() || text.starts_with('>') => "FASTA".to_string(),
                "fa" | "faa" => format!("not FASTA: {:?}", text.lines().next()),
                _ => String::new(),
            };
            (f, what)
        });
        shape.insert(emit, entries.collect());
    }
    shape
}

/// A sample without ORFs goes through every module to empty tables, so one such sample never
/// fails a run over many. Each stub, given the same inputs, writes what the real step writes
/// for it: the same files (so downstream steps and the published layout are the same),
/// reports with the same keys, text files with the same first line. Each output's name
/// matches its meta.yml pattern.
#[test]
fn stubs_write_what_the_real_steps_write() {
    let root = tempfile::tempdir().unwrap();
    let bin = bin_dir(root.path());
    let tasks = tiny_sample(root.path(), &bin);
    assert_eq!(tasks.len(), 4, "one empty shard pair");
    let highest = fs::read_to_string(tasks[3].dir.join("prediction_results_highestscore.csv"));
    assert_eq!(highest.unwrap(), "Modified_ID\tIs_Virus\n");
    // Nothing viral: the copies are empty, as standalone predict writes them.
    assert_eq!(check_viral_fasta(&tasks[3]), (0, 0));
    for real in &tasks {
        let name = &real.module.name;
        let stub = real.copy("stub");
        stub.run(Block::Stub, &bin);
        assert_eq!(
            output_shape(&stub),
            output_shape(real),
            "{name}: the stub's outputs vs the real step's"
        );
        // Gzip output is binary to output_shape: compared by bytes (the stub's gzip of nothing
        // is the real task's `gzip -n` of an empty copy, byte for byte).
        for (emit, files) in real.outputs() {
            for f in files.iter().filter(|f| f.ends_with(".gz")) {
                let bytes = |t: &Task| fs::read(t.dir.join(f)).unwrap();
                assert_eq!(bytes(&stub), bytes(real), "{name} {emit}: {f}");
            }
        }
        let meta = meta_yml(real.module.dir);
        for (emit, files) in real.outputs() {
            let channel = meta_channel(&meta["output"][&emit][0]);
            let patterns: Vec<&str> = channel
                .iter()
                .filter_map(|(_, p)| p["pattern"].as_str())
                .collect();
            for f in files {
                let f = file_name(Path::new(&f));
                assert!(
                    patterns.iter().any(|p| glob_match(p, &f)),
                    "{name} meta.yml: {emit}: {f} vs {patterns:?}"
                );
            }
        }
    }
}

/// A sample whose only record is empty: translate skips it, so chunked.fa is empty too, and
/// PREDICT still copies nothing into empty gzip files instead of failing on the empty FASTA.
#[test]
fn a_sample_without_chunks_gets_empty_viral_fasta_files() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("empty.fa");
    fs::write(&input, ">empty\n").unwrap();
    let tasks = run_sample(root.path(), &bin_dir(root.path()), "empty", &input);
    let chunks = &tasks[0].outputs()["chunks"][0];
    assert_eq!(fs::read_to_string(tasks[0].dir.join(chunks)).unwrap(), "");
    assert_eq!(check_viral_fasta(tasks.last().unwrap()), (0, 0));
}

/// The scripts and stubs as rendered: shellcheck clean.
#[test]
fn rendered_module_scripts_are_shellcheck_clean() {
    let root = tempfile::tempdir().unwrap();
    let mut scripts = Vec::new();
    for task in tiny_sample(root.path(), &bin_dir(root.path())) {
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

/// A stand-in `virnucpro` that writes the embedding outputs of its --manifest and exits with
/// $FAKE_RC; with FAKE_NO_REPORT set it writes no report (what a usage error or a crash
/// leaves).
const FAKE_VIRNUCPRO: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "virnucpro 0.1.0"; exit 0; fi
prev=""
for a in "$@"; do
  if [ "$prev" = --manifest ]; then
    while IFS="$(printf '\t')" read -r input output report; do
      : > "$output"
      if [ "${FAKE_RC:-0}" = 2 ]; then printf 'id\tstep\treason\nx_chunk_1F1\tembed\tfake\n' > "$output.failed.tsv"; fi
      [ -n "${FAKE_NO_REPORT:-}" ] || echo "{\"input\": \"$input\"}" > "$report"
    done < "$a"
  fi
  prev=$a
done
exit "${FAKE_RC:-0}"
"#;

/// Exit code 2 (finished, some records failed) passes, with the failed list as an output, but
/// only beside the step's report; any other failure, the usage error 64 included, fails the
/// task with its own exit code, under process.shell's `-e`.
#[test]
fn embed_exit_code_2_is_a_success_and_others_fail() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let fake = root.path().join("fake-bin");
    fs::create_dir_all(&fake).unwrap();
    fs::write(fake.join("virnucpro"), FAKE_VIRNUCPRO).unwrap();
    fs::set_permissions(fake.join("virnucpro"), fs::Permissions::from_mode(0o755)).unwrap();
    let tasks = tiny_sample(root.path(), &bin_dir(root.path()));
    for task in tasks.iter().filter(|t| t.module.name.starts_with("EMBED_")) {
        let name = &task.module.name;
        for (rc, report, ok) in [
            ("0", true, true),
            ("2", true, true),
            ("2", false, false),
            ("1", true, false),
            ("3", true, false),
            ("64", false, false),
        ] {
            let t = task.copy(&format!("rc{rc}_{report}"));
            let env = [
                ("FAKE_RC", rc),
                ("FAKE_NO_REPORT", if report { "" } else { "1" }),
            ];
            let o = t.run_with(Block::Script, &fake, &env);
            let stderr = String::from_utf8_lossy(&o.stderr);
            if ok {
                assert!(o.status.success(), "{name} rc {rc}: {stderr}");
                let failed = t.outputs()["failed"].len();
                assert_eq!(
                    failed,
                    usize::from(rc == "2"),
                    "{name} rc {rc}: the failed list is an output"
                );
            } else {
                let code = o.status.code().map(|c| c.to_string());
                assert_eq!(
                    code.as_deref(),
                    Some(rc),
                    "{name} rc {rc}, report {report}: {stderr}"
                );
            }
            assert_eq!(
                t.dir.join("versions.yml").exists(),
                ok,
                "{name} rc {rc}: stops at a failure"
            );
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
    let task = translate_task(root.path(), "c", &fasta, Some(&toml));
    let script = task.script(Block::Script);
    assert!(
        script.contains("virnucpro --config virnucpro.toml translate"),
        "{script}"
    );
    task.run(Block::Script, &bin_dir(root.path()));
    task.outputs();
}

/// A Hugging Face cache snapshot (files are links into ../../blobs) is staged as its
/// repository directory and read through snapshots/<rev>: the module's script, run with the
/// binary on such a layout of the tiny DNABERT-S, embeds the shard.
#[test]
fn a_hub_cache_snapshot_model_is_read_through_its_repository_directory() {
    let root = tempfile::tempdir().unwrap();
    let repo_dir = root.path().join("hub/models--zhihan1996--DNABERT-S");
    let snapshot = repo_dir.join("snapshots/0123abcd");
    fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    let files = fs::read_dir(param_path(&test_params(), "dnabert")).unwrap();
    for (i, e) in files.map(Result::unwrap).enumerate() {
        fs::copy(e.path(), repo_dir.join(format!("blobs/blob{i:02}"))).unwrap();
        let link = format!("../../blobs/blob{i:02}");
        std::os::unix::fs::symlink(link, snapshot.join(e.file_name())).unwrap();
    }
    let shard = root.path().join("00000.identified_nucleotide.fa");
    fs::write(&shard, format!(">orf1\n{}\n", "ACGTTGCAAG".repeat(30))).unwrap();
    let subdir = "snapshots/0123abcd";
    let shards = [("hub".to_string(), "00000".to_string(), shard)];
    let task = embed_task(
        root.path(),
        "EMBED_DNA",
        ("hub_00000", &shards),
        &repo_dir,
        subdir,
    );
    let script = task.script(Block::Script);
    assert!(
        script.contains("--model models--zhihan1996--DNABERT-S/snapshots/0123abcd "),
        "{script}"
    );
    task.run(Block::Script, &bin_dir(root.path()));
    let out = task.outputs();
    assert!(
        out["embeddings"].len() == 1 && out["failed"].is_empty(),
        "{out:?}"
    );
}

/// What conf/modules.config publishes, by process: `PROCESS FILE [+save_embeddings] -> PATH`
/// under results/s1/, or `-` for not published. The README's layout.
const PUBLISHED: &str = "
TRANSLATE translate/translate.json -> translate/translate.json
TRANSLATE translate/shards/00000.identified_nucleotide.fa -> -
TRANSLATE translate/chunked.fa -> -
TRANSLATE versions.yml -> -
EMBED_DNA s1/embeddings/s1.00000.dna.json -> embeddings/s1.00000.dna.json
EMBED_DNA s1/embeddings/s1.00000.dna.safetensors.failed.tsv -> embeddings/s1.00000.dna.safetensors.failed.tsv
EMBED_DNA s1/embeddings/s1.00000.dna.safetensors -> -
EMBED_PROTEIN s1/embeddings/s1.00000.protein.safetensors +save_embeddings -> embeddings/s1.00000.protein.safetensors
EMBED_PROTEIN versions.yml +save_embeddings -> -
PREDICT prediction_results_highestscore.csv -> prediction_results_highestscore.csv
PREDICT predict.json -> predict.json
PREDICT viral_sequences.fa.gz -> viral_sequences.fa.gz
PREDICT viral_chunks.fa.gz -> viral_chunks.fa.gz
PREDICT versions.yml -> -
";

/// publishDir is set per process in conf/modules.config (nf-core's convention: `path`, `mode`,
/// `saveAs`), not in the modules; its closures, evaluated, publish what PUBLISHED lists
/// (versions.yml never: main.nf gathers it into pipeline_info/); the README's table of outputs
/// names every file PREDICT publishes.
#[test]
fn outputs_are_published_by_conf_modules_config() {
    for m in modules() {
        let found = code_lines_with(&m.text, "publishDir");
        assert!(
            found.is_empty(),
            "{}: publishDir belongs in conf/modules.config",
            m.name
        );
    }
    let readme = read("README.md");
    let nextflow = &readme[readme.find("## Running with Nextflow").unwrap()..];
    let table = &nextflow[nextflow.find("| output | content |").unwrap()..];
    let outputs_table = &table[..table.find("\n\n").unwrap()];
    for line in PUBLISHED.lines().filter(|l| !l.is_empty()) {
        let (given, want) = line.split_once(" -> ").unwrap();
        let words: Vec<&str> = given.split(' ').collect();
        let mut params = test_params();
        params.insert("outdir".into(), V::str("results"));
        params.insert(
            "save_embeddings".into(),
            V::Bool(words.get(2) == Some(&"+save_embeddings")),
        );
        let mut ctx = params_ctx(&params);
        ctx.set("meta.id", V::str("s1"));
        let closure =
            |key| process_closure(words[0], key).unwrap_or_else(|| panic!("{line}: {key}"));
        let dir = call_closure(&closure("path"), None, &ctx).unwrap().render();
        let got = match call_closure(&closure("saveAs"), Some(V::str(words[1])), &ctx).unwrap() {
            V::Null => "-".to_string(),
            // Under the sample's folder, whether the path or the file's name says which.
            name => format!("{dir}/{}", name.render())
                .strip_prefix("results/s1/")
                .unwrap_or_else(|| {
                    panic!("{line}: {dir}/{} is not under results/s1/", name.render())
                })
                .to_string(),
        };
        assert_eq!(got, want, "{line}");
        // PREDICT's files are the sample's results: each is in the README's table of them.
        if words[0] == "PREDICT" && want != "-" {
            assert!(
                outputs_table.contains(&format!("{want}` |"))
                    || outputs_table.contains(&format!("{want}`, ")),
                "README.md, Running with Nextflow: {want} is not in the table of outputs"
            );
        }
    }
    // FETCH_MODELS publishes into the model store (--refresh_models), not into --outdir.
    let config = read("conf/modules.config");
    let config = config[..config.find("withName: 'FETCH_MODELS'").unwrap()].to_string();
    let modes = code_lines_with(&config, "mode:");
    assert_eq!(
        modes.len(),
        code_lines_with(&config, "publishDir = [").len()
    );
    assert!(
        modes
            .iter()
            .all(|l| l.contains("mode: params.publish_dir_mode")),
        "{modes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Static checks.

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

/// Whether `virnucpro <args> --help` lists `flag` (not as the start of a longer flag).
fn help_has(args: &[&str], flag: &str) -> bool {
    let o = crate::common::run(&[args, &["--help"]].concat(), None);
    let help = String::from_utf8_lossy(&o.stdout);
    help.match_indices(flag).any(|(at, _)| {
        !help[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Every flag a module script or an ext.args setting passes is one the subcommand accepts.
#[test]
fn flags_in_modules_and_configs_exist_in_the_cli() {
    for m in modules() {
        let (stmts, body) = m.block(Block::Script);
        let command = format!("virnucpro ${{cfg}} {} ", m.subcommand);
        assert!(body.contains(&command), "{}: runs `{command}`", m.name);
        let stub = m.block(Block::Stub).1;
        for flag in flags(&body).union(&flags(&stub)) {
            let args: &[&str] = if flag == "--version" {
                &[]
            } else {
                &[m.subcommand]
            };
            assert!(
                help_has(args, flag),
                "{}: `{flag}` is not in `virnucpro {args:?} --help`",
                m.name
            );
        }
        // Flags built in Groovy (the optional --config) are global options.
        for flag in flags(&stmts) {
            assert!(
                help_has(&[], &flag),
                "{}: {flag} is not a global option",
                m.name
            );
        }
    }
    let mut seen = 0;
    for (names, body) in with_name_blocks() {
        // FETCH_MODELS has no ext.args (its flags are checked in
        // fetch_models_downloads_ids_once_into_a_store).
        for name in names.into_iter().filter(|n| n != "FETCH_MODELS") {
            let sub = module(&name).subcommand;
            for flag in flags(&closure_source(&body, "ext.args").unwrap_or_default()) {
                assert!(
                    help_has(&[sub], &flag),
                    "{name} ext.args: `{flag}` is not in `virnucpro {sub}`"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "ext.args flags were found ({seen})");
}

/// Each module's meta.yml follows nf-core's meta-schema (required keys, element types and
/// descriptions) and describes its main.nf: the same input channels in order (tuples as
/// lists), the same output emits, each with the same elements (names of vals, raw path
/// patterns), paths typed file/directory and vals not, optional outputs marked optional.
#[test]
fn meta_yml_matches_each_module() {
    const VALS: [&str; 5] = ["string", "integer", "float", "boolean", "list"];
    for m in modules() {
        let meta = meta_yml(m.dir);
        let what = format!("nextflow/modules/{}/meta.yml", m.dir);
        assert_eq!(meta["name"], m.dir, "{what}: name");
        assert!(
            meta["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{what}"
        );
        let keywords = meta["keywords"].as_array().unwrap();
        let unique: BTreeSet<&str> = keywords.iter().map(|k| k.as_str().unwrap()).collect();
        assert!(
            unique.len() >= 3 && unique.len() == keywords.len(),
            "{what}: 3+ unique keywords"
        );
        for tool in meta["tools"].as_array().unwrap() {
            let (name, t) = tool.as_object().unwrap().iter().next().unwrap();
            let linked = ["homepage", "documentation", "tool_dev_url", "doi"]
                .iter()
                .any(|k| t[k].is_string());
            assert!(
                t["description"].is_string() && linked,
                "{what}: tool {name}: description, link"
            );
        }
        assert!(
            !meta["authors"].as_array().unwrap().is_empty(),
            "{what}: authors"
        );

        let check = |decl: &[Elem], channel: &Json, optional: bool, ctx: &str| {
            let elems = meta_channel(channel);
            let names: Vec<&str> = elems.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = decl.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, want, "{what}: {ctx}: elements vs main.nf");
            assert_eq!(
                channel.is_array(),
                decl.len() > 1,
                "{what}: {ctx}: a tuple is a list"
            );
            for ((name, p), e) in elems.iter().zip(decl) {
                let ty = p["type"].as_str().unwrap_or_default();
                let fits = match (e.path, e.name.as_str()) {
                    (true, _) => ty == "file" || ty == "directory",
                    (false, "meta") => ty == "map",
                    (false, _) => VALS.contains(&ty),
                };
                assert!(
                    fits && p["description"].is_string(),
                    "{what}: {ctx}: {name}: type {ty}, description"
                );
                let pattern = p["pattern"].is_string() || ty == "directory" || e.name == "model";
                assert!(pattern || !e.path, "{what}: {ctx}: {name}: pattern");
                assert!(
                    !optional || !e.path || p["optional"] == true,
                    "{what}: {ctx}: {name}: optional"
                );
            }
        };
        let inputs = m.inputs();
        let meta_inputs = meta["input"].as_array().unwrap();
        assert_eq!(meta_inputs.len(), inputs.len(), "{what}: input channels");
        for (i, (decl, ch)) in inputs.iter().zip(meta_inputs).enumerate() {
            check(decl, ch, false, &format!("input {i}"));
        }
        let outputs = m.outputs();
        let meta_outputs = meta["output"].as_object().unwrap();
        let emits: BTreeSet<&String> = outputs.iter().map(|o| &o.emit).collect();
        assert_eq!(
            meta_outputs.keys().collect::<BTreeSet<_>>(),
            emits,
            "{what}: output emits"
        );
        for o in &outputs {
            let ch = meta_outputs[&o.emit].as_array().unwrap();
            assert_eq!(ch.len(), 1, "{what}: {}: one channel", o.emit);
            check(&o.elems, &ch[0], o.optional, &format!("output {}", o.emit));
        }
    }
}

/// The text rules of tests/nextflow_rules.txt hold.
#[test]
fn text_rules_hold() {
    let rules = read("tests/nextflow_rules.txt");
    let mut checked = 0;
    for rule in rules
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (path, text) = rule
            .split_once(": ")
            .unwrap_or_else(|| panic!("rule {rule:?}"));
        for m in MODULES
            .iter()
            .filter(|m| path.contains('*') || m.1 == MODULES[0].1)
        {
            let path = path.replace('*', m.1);
            assert!(
                read(&path).contains(text),
                "{path} lacks `{text}` (tests/nextflow_rules.txt)"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} rules");
}

/// main.nf includes each module from a file that defines it; braces balance in every Groovy
/// file (a cheap syntax check, strings, comments and scripts skipped).
#[test]
fn main_nf_includes_the_modules_and_braces_balance() {
    let main = read("nextflow/main.nf");
    let mut included = BTreeSet::new();
    for line in main.lines().filter(|l| l.starts_with("include {")) {
        let name = line["include {".len()..line.find('}').unwrap()].trim();
        let from = line.split('\'').nth(1).unwrap();
        if !from.starts_with("plugin/") {
            let file = format!("nextflow/{}.nf", from.trim_start_matches("./"));
            assert!(
                read(&file).contains(&format!("process {name} {{")),
                "{file} defines {name}"
            );
            included.insert(name);
        }
    }
    // The four steps, and the model download step (checked in
    // fetch_models_downloads_ids_once_into_a_store).
    let mut want: BTreeSet<&str> = MODULES.iter().map(|m| m.0).collect();
    want.insert("FETCH_MODELS");
    assert_eq!(included, want);
    for rel in GROOVY_FILES {
        // Triple-quoted scripts hold shell braces: left out before counting.
        let text = format!("{{{}}}", read(rel));
        let code: String = text.split("\"\"\"").step_by(2).collect();
        assert_eq!(
            block_at(&code, 0).len(),
            code.len() - 2,
            "{rel}: braces do not balance"
        );
    }
}

/// The schema's precisions are the ones `--precision` takes, every one of them: a value the
/// schema refuses could not be passed, one the CLI refuses would fail each embedding task.
#[test]
fn schema_precisions_are_the_clis() {
    use virnucpro::device::Precision;
    let schema: Json = serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    let listed: BTreeSet<String> = schema["$defs"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|group| group["properties"].get("precision"))
        .expect("a precision param")["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // Every variant (a new one stops the build here until it is listed below).
    let _every = |p: Precision| match p {
        Precision::Auto | Precision::F32 | Precision::F16 | Precision::Bf16 | Precision::Int8 => {}
    };
    let cli: BTreeSet<String> = [
        Precision::Auto,
        Precision::F32,
        Precision::F16,
        Precision::Bf16,
        Precision::Int8,
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    assert_eq!(listed, cli);
    for p in &listed {
        assert_eq!(p.parse::<Precision>().unwrap().to_string(), *p);
    }
}

/// Every parameter has a default in nextflow.config and an entry in nextflow_schema.json (and
/// the other way round), with the same default; every `params.x` used anywhere exists.
#[test]
fn params_are_documented_in_the_schema() {
    let params = config_params("nextflow/nextflow.config");
    let schema: Json = serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
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
    let refs: BTreeSet<&str> = schema["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["$ref"].as_str().unwrap())
        .collect();
    let groups: BTreeSet<String> = defs.keys().map(|k| format!("#/$defs/{k}")).collect();
    assert_eq!(
        refs,
        groups.iter().map(String::as_str).collect(),
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
        params.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>()
    );
    for (name, v) in &params {
        let (prop, ty) = (
            &documented[name],
            // A type list (["string", "integer"]: --classifier 500 arrives as a number): its first.
            documented[name]["type"]
                .as_str()
                .or_else(|| documented[name]["type"][0].as_str())
                .unwrap(),
        );
        let ok = match v {
            V::Null => prop.get("default").is_none(),
            V::Bool(b) => ty == "boolean" && prop["default"] == *b,
            V::Num(n) => {
                (ty == "integer" || ty == "number") && prop["default"].as_f64() == n.parse().ok()
            }
            V::Str(s) => ty == "string" && prop["default"] == s.as_str(),
            V::Files(_) | V::List(_) | V::Map(_) => false,
        };
        assert!(ok, "{name}: {v:?} in nextflow.config, {prop} in the schema");
    }
    for rel in GROOVY_FILES {
        let text = read(rel);
        for (at, _) in text.match_indices("params.") {
            if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                params.contains_key(&name),
                "{rel}: params.{name} is not in nextflow.config"
            );
        }
    }
}

/// nf-test files for environments with Nextflow: per module a `-stub` and a real test that
/// give every declared input, and a pipeline test with the test profile.
#[test]
fn nf_test_files_cover_every_module_and_the_pipeline() {
    assert!(repo().join("nextflow/nf-test.config").is_file());
    for m in modules() {
        let rel = format!("nextflow/modules/{}/tests/main.nf.test", m.dir);
        let t = read(&rel);
        let want = [
            &format!("process \"{}\"", m.name),
            "script \"../main.nf\"",
            "tag \"modules\"",
        ];
        assert_contains(&t, &rel, &want);
        let tests: Vec<&str> = t.split("\n    test(\"").skip(1).collect();
        let stubs = tests
            .iter()
            .filter(|t| t.contains("options \"-stub\""))
            .count();
        assert!(
            stubs >= 1 && tests.len() > stubs,
            "{rel}: stub and real tests"
        );
        let declared = m.inputs().len();
        let emits: Vec<String> = m.outputs().into_iter().map(|o| o.emit).collect();
        for (i, test) in tests.iter().enumerate() {
            // What the first real run must produce: every output snapshotted or asserted.
            assert!(
                test.contains("snapshot(") && test.contains(").match()"),
                "{rel} test {i}: a snapshot"
            );
            if !test.contains("snapshot(process.out).match()") {
                for emit in &emits {
                    assert!(
                        test.contains(&format!("process.out.{emit}")),
                        "{rel} test {i}: output {emit} is neither snapshotted nor asserted"
                    );
                }
            }
            let given = (0..=declared)
                .filter(|k| test.contains(&format!("input[{k}]")))
                .count();
            assert_eq!(given, declared, "{rel} test {i}: input[0..{declared}]");
            assert!(
                test.contains("{ assert process.success }"),
                "{rel} test {i}"
            );
        }
    }
    let rel = "nextflow/tests/main.nf.test";
    let want = [
        "nextflow_pipeline",
        "script \"../main.nf\"",
        "profile \"test\"",
        "options \"-stub\"",
        // A glob as --input, numbers and switches on the command line, a refused sample id.
        "input  = \"${projectDir}/../tests/fixtures/e2e/*.fa\"",
        "options \"-stub --chunk_size 500 --shard_size 8 --save_embeddings false\"",
        "input  = \"${projectDir}/tests/samplesheet_dotdot.csv\"",
        "pipeline_info/virnucpro_summary.tsv",
        "pipeline_info/virnucpro_summary_mqc.tsv",
        "pipeline_info/failed_records.tsv",
        // PREDICT's viral copies, published per sample: checked against its tables.
        "/e2e/viral_sequences.fa.gz\") == rows(",
        "/e2e/viral_chunks.fa.gz\") == rows(",
    ];
    let text = read(rel);
    assert_contains(&text, rel, &want);
    assert!(repo()
        .join("nextflow/tests/samplesheet_dotdot.csv")
        .is_file());
    // Each run that succeeds snapshots every published file.
    for test in text.split("\n    test(\"").skip(1) {
        if test.contains("{ assert workflow.success }") {
            assert!(
                test.contains("snapshot(") && test.contains("published"),
                "{test}"
            );
        }
    }
    let readme = read("README.md");
    assert!(
        readme.contains("nf-test test --update-snapshot"),
        "README: how to write the snapshots"
    );
}

// ---------------------------------------------------------------------------------------------
// What a first real run would trip over: GPUs on CPU hosts, GPU isolation in containers, host
// directories, publish modes, vanishing shards and samples, the schema.

/// The body of `withLabel: 'process_gpu' { ... }` in conf/base.config.
fn gpu_label_block() -> String {
    block_after(&read("conf/base.config"), "withLabel: 'process_gpu'").to_string()
}

/// The body of profile `name` in nextflow/nextflow.config.
fn profile_block(name: &str) -> String {
    block_after(
        &read("nextflow/nextflow.config"),
        &format!("\n    {name} {{"),
    )
    .to_string()
}

/// GPUs are asked for only when the run opts in (-profile gpu or local_gpu): by default, and
/// with the test profile, no accelerator, no `--gpus all`, no `--nv`, so a CPU-only host (no
/// NVIDIA container toolkit, or CUDA_VISIBLE_DEVICES="" under Nextflow >= 26.10) runs the
/// tasks. Container engines keep the task's GPU assignment (CUDA_VISIBLE_DEVICES whitelisted).
#[test]
fn gpus_are_opt_in() {
    assert_eq!(
        config_params("nextflow/nextflow.config")["use_gpu"],
        V::Bool(false)
    );
    assert_eq!(
        test_params()["use_gpu"],
        V::Bool(false),
        "-profile test runs on any host"
    );
    let gpu = gpu_label_block();
    for needle in ["--gpus", "--nv", "accelerator"] {
        let lines = code_lines_with(&gpu, needle);
        let gated = |l: &&str| l.contains("\"${params.use_gpu}\" == 'true'");
        assert!(
            !lines.is_empty() && lines.iter().all(gated),
            "process_gpu: {needle}: {lines:?}"
        );
    }
    // The lease picks among all of the node's GPUs itself: no per-task accelerator with it.
    assert!(code_lines_with(&gpu, "accelerator")[0].contains("\"${params.gpu_lease}\" != 'true'"));
    // Nowhere else does a GPU option hide (the label is the only place that asks for GPUs).
    for rel in GROOVY_FILES {
        let text = read(rel).replace(&gpu, "");
        for needle in ["--gpus", "'--nv'", "accelerator ", "accelerator="] {
            assert!(
                code_lines_with(&text, needle).is_empty(),
                "{rel}: `{needle}` outside process_gpu"
            );
        }
    }
    for profile in ["gpu", "local_gpu"] {
        let block = profile_block(profile);
        let on = code_lines_with(&block, "params.use_gpu");
        assert!(
            on.iter().any(|l| l.ends_with("= true")),
            "-profile {profile} turns GPUs on"
        );
    }
    for profile in ["docker", "singularity", "apptainer", "slurm", "test"] {
        let block = profile_block(profile);
        assert!(
            !block.contains("use_gpu ="),
            "-profile {profile} must not turn GPUs on"
        );
        // SLURM asks for GPUs (--gres) only with the opt-in too.
        for l in code_lines_with(&block, "slurm_gpu_") {
            assert!(
                l.contains("\"${params.use_gpu}\" == 'true' ?"),
                "-profile {profile}: {l}"
            );
        }
        if profile != "slurm" && profile != "test" {
            let env = code_lines_with(&block, &format!("{profile}.envWhitelist")).join("\n");
            assert!(
                env.contains("CUDA_VISIBLE_DEVICES"),
                "-profile {profile}: {env}"
            );
        }
    }
}

/// --checkpoint_dir, --kernel_cache and the GPU lock directory are host directories the tasks
/// write to: all
/// are created before the task (the rendered beforeScript, run here) and mounted at the same
/// path into docker and singularity/apptainer containers, each only when in use; relative
/// paths are refused (the schema's pattern; main.nf's check is a text rule).
#[test]
fn host_directories_are_created_and_mounted_into_containers() {
    let gpu = gpu_label_block();
    let options = block_after(&gpu, "containerOptions = {");
    for (when, dir) in [
        ("params.checkpoint_dir ?", "checkpoint_dir"),
        ("\"${params.gpu_lease}\" == 'true' ?", "gpu_lock_dir"),
        ("params.kernel_cache ?", "kernel_cache"),
    ] {
        for m in [
            format!("-v ${{params.{dir}}}:${{params.{dir}}}"),
            format!("-B ${{params.{dir}}}"),
        ] {
            let lines = code_lines_with(options, &m);
            assert!(
                !lines.is_empty() && lines.iter().all(|l| l.contains(when)),
                "{m} only when {when}"
            );
        }
    }
    // The beforeScript's commands (its double-quoted strings), rendered and run: both
    // directories appear, the lock directory private to the user.
    let root = tempfile::tempdir().unwrap();
    let (ck, locks, kernels) = (
        root.path().join("shared/checkpoints"),
        root.path().join("locks"),
        root.path().join("shared/kernels"),
    );
    let mut ctx = Ctx::default();
    ctx.set("params.checkpoint_dir", V::Str(ck.display().to_string()));
    ctx.set("params.gpu_lock_dir", V::Str(locks.display().to_string()));
    ctx.set("params.kernel_cache", V::Str(kernels.display().to_string()));
    ctx.set("params.gpu_lease", V::Bool(true));
    ctx.set("params.use_gpu", V::Bool(true));
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &before_script(&ctx)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&locks).unwrap().permissions().mode() & 0o777;
    assert!(
        ck.is_dir() && kernels.is_dir() && mode == 0o700,
        "checkpoint dir created, lock dir private when new"
    );
    // The beforeScript is the label's alone (profiles would replace it).
    assert!(!profile_block("local_gpu").contains("beforeScript"));
    // The checkpoint directory reaches the binary (conf/modules.config).
    let mut params = test_params();
    params.insert("checkpoint_dir".into(), V::Str(ck.display().to_string()));
    params.insert("kernel_cache".into(), V::Str(kernels.display().to_string()));
    let args = ext_args("EMBED_PROTEIN", &params).render();
    assert!(
        args.contains(&format!("--checkpoint-dir {}", ck.display()))
            && args.contains(&format!("--kernel-cache {}", kernels.display())),
        "{args}"
    );
    let schema: Json = serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    for name in ["checkpoint_dir", "gpu_lock_dir", "kernel_cache"] {
        assert_eq!(
            schema["$defs"]["compute_options"]["properties"][name]["pattern"], "^/",
            "{name}"
        );
    }
}

/// process_gpu's beforeScript for the params in `ctx`, as Nextflow renders it: the list's
/// elements (one per line, each `cond ? cmd : null`) evaluated, the nulls left out, joined
/// with ` && `.
fn before_script(ctx: &Ctx) -> String {
    let gpu = gpu_label_block();
    let block = block_after(&gpu, "beforeScript = {");
    let tail = "].findAll { c -> c }.join(' && ')";
    assert!(block.contains(tail), "beforeScript: a list joined by &&");
    let mut commands = Vec::new();
    for line in block.lines().map(|l| strip_comment(l).trim()) {
        let elem = line.trim_start_matches('[');
        let elem = elem
            .strip_suffix(tail)
            .or(elem.strip_suffix(','))
            .unwrap_or(elem);
        if elem.is_empty() {
            continue;
        }
        match eval(elem, ctx).unwrap_or_else(|e| panic!("beforeScript: {elem}: {e}")) {
            V::Null => {}
            v => commands.push(v.render()),
        }
    }
    commands.join(" && ")
}

/// The `if (cond) {` in `text` is followed by an `error` line; returns that line.
fn refused(text: &str, cond: &str) -> String {
    let at = text
        .find(cond)
        .unwrap_or_else(|| panic!("main.nf: no `{cond}`"));
    let next = text[at..].lines().nth(1).unwrap().to_string();
    assert!(
        next.trim().starts_with("error "),
        "main.nf: `{cond}` is followed by an error"
    );
    next
}

/// Mistakes that would lose results or fail late stop the run at its start or loudly: `move`
/// (later steps and -resume read the published files' originals), a shard embedded by one
/// step and not the other (every join fails on mismatch and duplicates), a sample short of
/// shards (groupTuple keeps its remainder and the count is checked), an Apptainer run without
/// a pullable image; and nf-schema validates the parameters first of all.
#[test]
fn mistakes_stop_the_run_loudly() {
    let main = read("nextflow/main.nf");
    let schema: Json = serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap();
    let modes = schema["$defs"]["input_output_options"]["properties"]["publish_dir_mode"]["enum"]
        .to_string();
    assert!(
        !modes.contains("\"move\"") && modes.contains("\"copy\""),
        "{modes}"
    );
    refused(&main, "if (params.publish_dir_mode == 'move') {");
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
            "{j}"
        );
    }
    let groups = main.matches(".groupTuple(").count();
    assert!(groups >= 1 && main.matches(".groupTuple(remainder: true)").count() == groups);
    refused(
        &main[main.find(".groupTuple(").unwrap()..],
        "if (keys.size() != meta.shards) {",
    );
    let apptainer = "if (workflow.containerEngine in ['singularity', 'apptainer'] && !params.container_sif && !params.container.contains('/')) {";
    refused(&main, apptainer);
    // The default image is a local name: the check applies to it.
    assert!(!config_params("nextflow/nextflow.config")["container"]
        .render()
        .contains('/'));
    let first = block_after(&main, "workflow {")
        .lines()
        .map(strip_comment)
        .find(|l| !l.trim().is_empty());
    assert_eq!(
        first.map(str::trim),
        Some("validateParameters()"),
        "first thing the workflow does"
    );
}

/// FETCH_MODELS: one task per model given as a Hub id / 500 / 300 / URL, stored once (storeDir
/// in conf/modules.config) at the path `virnucpro models fetch` leaves it, wired before the
/// GPU steps; with --hf_home nothing is fetched.
#[test]
fn fetch_models_downloads_ids_once_into_a_store() {
    let m = read("nextflow/modules/fetch_models/main.nf");
    for needle in [
        "process FETCH_MODELS {",
        "task.ext.when == null || task.ext.when",
        "tuple val(kind), val(id), val(home), val(stored)",
        "export HF_HOME=\"\\$PWD/${home}\"",
        "path(\"${stored}\"), emit: model",
        "virnucpro models fetch ${args} --${kind} '${id}'",
        "stub:",
    ] {
        assert!(m.contains(needle), "fetch_models/main.nf: {needle}");
    }
    // The flags it passes exist on `models fetch`.
    for flag in ["--dnabert", "--esm", "--classifier", "--revision"] {
        assert!(help_has(&["models", "fetch"], flag), "models fetch {flag}");
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
        // The store path is the cache layout of `virnucpro models fetch` (src/hub), under a
        // folder per revision.
        "\"hub/models--${given.split('@')[0].replace('/', '--')}\"",
        "[kind, given, storeHome(kind, given), \"${storeHome(kind, given)}/${storePath(kind, given)}\".toString()]",
        "\"virnucpro/classifiers/${key}\"",
    ] {
        assert!(main.contains(needle), "main.nf: {needle}");
    }
    // The embedding steps come after: they take the model channels built from the fetch.
    assert!(main.find("FETCH_MODELS(").unwrap() < main.find("EMBED_DNA(").unwrap());
}

// ---------------------------------------------------------------------------------------------
// Round two (issue #27): globs, command-line types, GPUs per executor, sample ids, module
// reuse, the run's summary, the meta.yml schema, nf-test coverage.

fn schema() -> Json {
    serde_json::from_str(&read("nextflow/nextflow_schema.json")).unwrap()
}

/// nf-schema 2.x's `format` check of a string parameter (its FormatFilePathEvaluator and
/// FormatFilePathPatternEvaluator), for local paths: Nextflow's `file()` turns a value with a
/// glob character (`*?[]{}`) into the list of its matches, which `file-path` refuses outright
/// ("is not a file, but a file path pattern"); `file-path-pattern` takes `files()` of it and
/// refuses no match or a directory among them, a plain path included.
fn nf_schema_format_accepts(format: &str, value: &str) -> Result<(), String> {
    let is_glob = value.contains(['*', '?', '[', ']', '{', '}']);
    let matches = || -> Vec<PathBuf> {
        if !is_glob {
            return vec![PathBuf::from(value)];
        }
        let (dir, pattern) = value.rsplit_once('/').unwrap_or((".", value));
        assert!(
            !dir.contains(['*', '?', '[', '{']),
            "one level of glob here"
        );
        let mut hits: Vec<PathBuf> = fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        hits.retain(|p| glob_match(pattern, &file_name(p)));
        hits
    };
    match format {
        "file-path" if is_glob => Err(format!("'{value}' is not a file, but a file path pattern")),
        "file-path" if Path::new(value).is_dir() => Err(format!("'{value}' is a directory")),
        "file-path" => Ok(()),
        "file-path-pattern" => {
            let hits = matches();
            if hits.is_empty() {
                return Err(format!(
                    "No files were found using the glob pattern '{value}'"
                ));
            }
            match hits.iter().find(|p| p.is_dir()) {
                Some(d) => Err(format!("'{}' is not a file, but a directory", d.display())),
                None => Ok(()),
            }
        }
        other => panic!("format {other} is not modelled here"),
    }
}

/// `--input 'contigs/*.fa'` passes the schema's validation (its format accepts a glob that
/// matches files, and a samplesheet path), as it would not under `file-path`; main.nf reads a
/// non-CSV input as a glob and the README says so.
#[test]
fn input_accepts_a_glob_under_nf_schemas_format_rules() {
    let input = &schema()["$defs"]["input_output_options"]["properties"]["input"];
    let format = input["format"].as_str().unwrap_or("");
    let root = tempfile::tempdir().unwrap();
    let contigs = root.path().join("contigs");
    fs::create_dir_all(&contigs).unwrap();
    for f in ["a.fa", "b.fa"] {
        fs::write(contigs.join(f), ">x\nACGT\n").unwrap();
    }
    let sheet = root.path().join("samplesheet.csv");
    fs::write(&sheet, "sample,fasta\na,contigs/a.fa\n").unwrap();
    let glob = format!("{}/*.fa", contigs.display());
    // The model refuses what nf-schema refuses.
    assert!(nf_schema_format_accepts("file-path", &glob).is_err());
    assert!(
        nf_schema_format_accepts("file-path-pattern", &format!("{}/*.fq", contigs.display()))
            .is_err()
    );
    // The schema's format, or none, accepts both forms of --input.
    for value in [glob.as_str(), sheet.to_str().unwrap()] {
        if !format.is_empty() {
            assert_eq!(
                nf_schema_format_accepts(format, value),
                Ok(()),
                "--input {value} (format {format})"
            );
        }
    }
    let main = read("nextflow/main.nf");
    assert!(
        main.contains("channel.fromPath(input, checkIfExists: true)"),
        "main.nf reads globs"
    );
    let readme = read("README.md");
    assert_contains(
        &readme,
        "README.md",
        &["`--input 'contigs/*.fa'`", "`file-path-pattern`"],
    );
    assert!(input["description"].as_str().unwrap().contains("glob"));
}

/// The schema's parameters of a type: (name, type).
fn schema_params() -> Vec<(String, String)> {
    let schema = schema();
    let mut out = Vec::new();
    for group in schema["$defs"].as_object().unwrap().values() {
        for (name, p) in group["properties"].as_object().unwrap() {
            let ty = p["type"].as_str().or(p["type"][0].as_str()).unwrap();
            out.push((name.clone(), ty.to_string()));
        }
    }
    out
}

/// Under the strict syntax a command-line value is a string: main.nf reads every integer,
/// number or boolean parameter through intParam/boolParam (or only prints it), and the
/// configs test switches as `"${params.x}" == 'true'` and cast numbers. Evaluated: the
/// configs' closures give the same result for `false`/`true` and `'false'`/`'true'`.
#[test]
fn numbers_and_switches_from_the_command_line_are_read_as_such() {
    let typed: Vec<(String, String)> = schema_params()
        .into_iter()
        .filter(|(_, t)| t != "string")
        .collect();
    let main = read("nextflow/main.nf");
    for (name, ty) in &typed {
        let helper = if ty == "boolean" {
            "boolParam"
        } else {
            "intParam"
        };
        for (at, _) in main.match_indices(&format!("params.{name}")) {
            let before = &main[..at];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let line = &main[line_start..main[at..].find('\n').map_or(main.len(), |i| at + i)];
            // Printed in a message (`${params.x}`) is fine; anything else goes through the helper.
            assert!(
                before.ends_with("${"),
                "main.nf reads params.{name} directly ({ty}): use {helper}('{name}'): {line}"
            );
        }
    }
    for (name, ty) in &typed {
        if ty == "boolean" && main.contains(&format!("'{name}'")) {
            assert!(main.contains(&format!("boolParam('{name}')")), "{name}");
        }
    }
    assert_contains(
        &main,
        "main.nf",
        &[
            "def intParam(String name) {",
            "def boolParam(String name) {",
            "error \"--${name} ${v}: expected a whole number\"",
            "error \"--${name} ${v}: expected true or false\"",
        ],
    );
    // Configs: switches compared as strings, numbers cast.
    for rel in [
        "conf/base.config",
        "conf/modules.config",
        "nextflow/nextflow.config",
    ] {
        let text = read(rel);
        for (name, ty) in &typed {
            let lines = code_lines_with(&text, &format!("params.{name}"));
            // Block comments (` * ...`) are prose.
            for l in lines
                .into_iter()
                .filter(|l| !l.trim_start().starts_with('*'))
            {
                let assigned = l.trim().starts_with(&format!("params.{name} "));
                let ok = match ty.as_str() {
                    "boolean" => {
                        assigned
                            || l.contains(&format!("\"${{params.{name}}}\" == 'true'"))
                            || l.contains(&format!("\"${{params.{name}}}\" != 'true'"))
                    }
                    _ => {
                        l.contains(&format!("params.{name} as Integer"))
                            || l.contains(&format!("${{params.{name}}}"))
                            || l.contains(&format!("params.{name} != null"))
                            || l.contains(&format!("params.{name} ?"))
                    }
                };
                assert!(
                    ok,
                    "{rel}: params.{name} ({ty}) read as given: {}",
                    l.trim()
                );
            }
        }
    }
    // The closures, evaluated with either form.
    let gpu = gpu_label_block();
    let accel = closure_source(&gpu, "accelerator").unwrap();
    for (on, lease, want) in [
        ("true", "false", "1"),
        ("false", "false", "null"),
        ("true", "true", "null"),
    ] {
        for as_string in [false, true] {
            let v = |s: &str| {
                if as_string {
                    V::str(s)
                } else {
                    V::Bool(s == "true")
                }
            };
            let mut ctx = Ctx::default();
            ctx.set("params.use_gpu", v(on))
                .set("params.gpu_lease", v(lease));
            let got = call_closure(&accel, None, &ctx).unwrap().render();
            assert_eq!(
                got, want,
                "accelerator, use_gpu {on}, gpu_lease {lease}, strings {as_string}"
            );
        }
    }
    for (save, as_string) in [("false", true), ("false", false), ("true", true)] {
        let mut params = test_params();
        params.insert("outdir".into(), V::str("results"));
        let v = if as_string {
            V::str(save)
        } else {
            V::Bool(save == "true")
        };
        params.insert("save_embeddings".into(), v);
        let mut ctx = params_ctx(&params);
        ctx.set("meta.id", V::str("s1"));
        let save_as = process_closure("EMBED_DNA", "saveAs").unwrap();
        let got = call_closure(&save_as, Some(V::str("s1.00000.dna.safetensors")), &ctx).unwrap();
        assert_eq!(
            got != V::Null,
            save == "true",
            "--save_embeddings {save} (string: {as_string})"
        );
    }
}

/// The manifest, the plugin and the README agree on the supported Nextflow versions: nf-schema
/// >= 2.7.2 (casts command-line values when validating under the strict syntax), which needs
/// Nextflow >= 25.10.
#[test]
fn supported_nextflow_versions_are_pinned_and_stated() {
    let config = read("nextflow/nextflow.config");
    let plugin = config
        .split("id 'nf-schema@")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap();
    let v: Vec<u32> = plugin.split('.').map(|x| x.parse().unwrap()).collect();
    assert!(
        v[0] == 2 && (v[1], v[2]) >= (7, 2),
        "nf-schema {plugin}: 2.x from 2.7.2"
    );
    assert!(config.contains("nextflowVersion = '!>=25.10.0'"));
    let readme = read("README.md");
    assert_contains(
        &readme,
        "README.md",
        &[
            "**Nextflow ≥ 25.10.**",
            "strict syntax",
            "nf-schema ≥ 2.7.2",
        ],
    );
    assert!(
        !readme.contains("Nextflow ≥ 24.04"),
        "README.md: old version floor"
    );
}

/// Sample ids: the samplesheet schema (nf-schema's samplesheetToList) and main.nf's check of
/// glob-made ids hold the same rule, which refuses `.`, `..` and `pipeline_info` and says why.
#[test]
fn sample_ids_that_would_publish_outside_outdir_are_refused() {
    let sheet: Json = serde_json::from_str(&read("nextflow/assets/schema_input.json")).unwrap();
    assert_eq!(
        sheet["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(sheet["type"], "array");
    assert_eq!(sheet["uniqueEntries"], serde_json::json!(["sample"]));
    let props = &sheet["items"]["properties"];
    assert_eq!(
        sheet["items"]["required"],
        serde_json::json!(["sample", "fasta"])
    );
    assert_eq!(props["sample"]["meta"], serde_json::json!(["id"]));
    let pattern = props["sample"]["pattern"].as_str().unwrap();
    let reserved: Vec<&str> = props["sample"]["not"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(reserved, [".", "..", "pipeline_info"]);
    // The schema's rule, applied as nf-schema would (pattern, then `not`).
    let re = regex_lite(pattern);
    let ok = |id: &str| re(id) && !reserved.contains(&id);
    for id in ["gut1", "soil_2.b", "a-b"] {
        assert!(ok(id), "{id}");
    }
    for id in [".", "..", "pipeline_info", "a/b", "a b", ""] {
        assert!(!ok(id), "{id}");
    }
    let message = props["sample"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("'..'") && message.contains("<outdir>/<sample>/"),
        "{message}"
    );
    // main.nf: the same characters and the same reserved names, for globs too.
    let main = read("nextflow/main.nf");
    assert!(pattern == "^[A-Za-z0-9_.-]+$" && main.contains("!(id ==~ /[A-Za-z0-9_.-]+/)"));
    assert!(main.contains("return ['.', '..', 'pipeline_info']"));
    let check = block_after(&main, "def checkSamples(List samples, String input) {");
    assert!(
        check.contains("reservedSampleIds()")
            && check.contains("would publish into or above --outdir")
    );
    // The shipped samplesheet passes.
    let test_sheet = read("nextflow/assets/samplesheet_test.csv");
    assert_eq!(test_sheet.lines().next(), Some("sample,fasta"));
    for row in test_sheet.lines().skip(1) {
        assert!(ok(row.split(',').next().unwrap()), "{row}");
    }
}

/// `^[chars]+$` with a character class of ranges and literals: the one shape used here.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let class = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix("]+$"))
        .unwrap_or_else(|| panic!("pattern {pattern}"))
        .to_string();
    let b = class.as_bytes().to_vec();
    move |s: &str| {
        !s.is_empty()
            && s.bytes().all(|c| {
                let mut i = 0;
                while i < b.len() {
                    if i + 2 < b.len() && b[i + 1] == b'-' {
                        if (b[i]..=b[i + 2]).contains(&c) {
                            return true;
                        }
                        i += 3;
                    } else {
                        if b[i] == c {
                            return true;
                        }
                        i += 1;
                    }
                }
                false
            })
    }
}

/// Modules read no pipeline parameter (nf-core: a module is reusable as it is): the image is
/// chosen in conf/modules.config and replaced by --container_sif in the singularity and
/// apptainer profiles.
#[test]
fn modules_read_no_params_and_the_image_is_configured() {
    let mut dirs: Vec<&str> = MODULES.iter().map(|m| m.1).collect();
    dirs.push("fetch_models");
    for dir in dirs {
        let text = read(&format!("nextflow/modules/{dir}/main.nf"));
        assert!(
            code_lines_with(&text, "params.").is_empty(),
            "{dir}: reads params"
        );
        assert!(
            code_lines_with(&text, "container ").is_empty(),
            "{dir}: names an image"
        );
    }
    let modules = read("conf/modules.config");
    let top = block_after(&modules, "\nprocess {");
    let generic = &top[..top.find("withName").unwrap()];
    assert!(code_lines_with(generic, "container = params.container").len() == 1);
    for profile in ["singularity", "apptainer"] {
        let block = profile_block(profile);
        assert!(
            block.contains("process.container      = params.container_sif ?: params.container"),
            "{profile}"
        );
    }
    assert!(!profile_block("docker").contains("container_sif"));
}

/// GPU combinations that cannot give each task exactly one GPU of its own are refused: Docker
/// under SLURM and `-profile gpu` on the local executor before Nextflow 26.10, at the start
/// (main.nf); and, with -profile gpu, a task that may see several GPUs stops before using one
/// (process_gpu's beforeScript, rendered and run here under the environments each executor
/// gives a task).
#[test]
fn a_gpu_task_that_may_see_several_gpus_stops() {
    let main = read("nextflow/main.nf");
    let docker = refused(&main, "if (boolParam('use_gpu') && 'slurm' in profiles && workflow.containerEngine == 'docker') {");
    assert!(
        docker.contains("cgroup") && docker.contains("apptainer"),
        "{docker}"
    );
    let local = refused(&main, "!nextflow.version.matches('>=26.10.0')) {");
    assert!(local.contains("local_gpu"), "{local}");
    let mut ctx = Ctx::default();
    for k in ["gpu_lock_dir", "checkpoint_dir", "kernel_cache"] {
        ctx.set(&format!("params.{k}"), V::Null);
    }
    ctx.set("params.gpu_lease", V::Bool(false));
    ctx.set("params.use_gpu", V::Bool(false));
    assert_eq!(before_script(&ctx), "", "no GPU, no guard");
    ctx.set("params.gpu_lease", V::Bool(true))
        .set("params.use_gpu", V::Bool(true));
    assert!(
        !before_script(&ctx).contains("virnucpro_gpus"),
        "the lease picks one GPU itself"
    );
    ctx.set("params.gpu_lease", V::Bool(false));
    let guard = before_script(&ctx);
    let root = tempfile::tempdir().unwrap();
    let smi = |n: usize| {
        let dir = root.path().join(format!("smi{n}"));
        fs::create_dir_all(&dir).unwrap();
        let lines: String = (0..n)
            .map(|i| format!("echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n"))
            .collect();
        let path = dir.join("nvidia-smi");
        fs::write(&path, format!("#!/bin/sh\n{lines}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    };
    let none = root.path().join("none");
    fs::create_dir_all(&none).unwrap();
    let (one, two) = (smi(1), smi(2));
    // (what, CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES, nvidia-smi's GPUs, runs)
    let cases: [(&str, Option<&str>, Option<&str>, &Path, bool); 8] = [
        (
            "local >= 26.10 / SLURM: one GPU",
            Some("2"),
            None,
            &two,
            true,
        ),
        ("SLURM --gres=gpu:2", Some("0,1"), None, &two, false),
        (
            "AWS Batch / Kubernetes: one GPU",
            None,
            Some("GPU-0"),
            &two,
            true,
        ),
        ("two GPUs exposed", None, Some("GPU-0,GPU-1"), &two, false),
        ("local, nothing assigned, two GPUs", None, None, &two, false),
        (
            "local, the image's NVIDIA_VISIBLE_DEVICES=all, two GPUs",
            None,
            Some("all"),
            &two,
            false,
        ),
        (
            "a VM with its one GPU (Google Batch)",
            None,
            Some("all"),
            &one,
            true,
        ),
        ("no GPU at all", None, None, &none, true),
    ];
    for (what, cuda, nvidia, smi_dir, runs) in cases {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &guard])
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env_remove("NVIDIA_VISIBLE_DEVICES")
            .env("PATH", format!("{}:/usr/bin:/bin", smi_dir.display()));
        if let Some(c) = cuda {
            cmd.env("CUDA_VISIBLE_DEVICES", c);
        }
        if let Some(n) = nvidia {
            cmd.env("NVIDIA_VISIBLE_DEVICES", n);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), runs, "{what}: {err}");
        if !runs {
            assert!(
                err.contains("exactly one of its own") && err.contains("local_gpu"),
                "{what}: {err}"
            );
        }
    }
    let readme = read("README.md");
    assert_contains(
        &readme,
        "README.md",
        &[
            "### GPUs per executor",
            "| AWS Batch |",
            "| Google Batch |",
            "| SLURM with `docker` |",
            "`CUDA_VISIBLE_DEVICES` unset at launch",
        ],
    );
}

/// `name.key` reads of a report in a Groovy body: the keys, in order.
fn report_keys(body: &str, name: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (at, _) in body.match_indices(&format!("{name}.")) {
        if body[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let key: String = body[at + name.len() + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        keys.push(key);
    }
    keys
}

/// The run's summary table reads the steps' reports in the binary's own terms: every key
/// main.nf's summaryRow reads from translate.json, the embedding reports and predict.json is
/// one the real steps write (run here through the module scripts, as are their stubs); the
/// MultiQC file carries MultiQC's custom-content header; the failed records are gathered with
/// their sample and shard; the README lists the files.
#[test]
fn the_summary_table_reads_what_the_steps_write() {
    let main = read("nextflow/main.nf");
    let row = block_after(&main, "def summaryRow(");
    let root = tempfile::tempdir().unwrap();
    let tasks = tiny_sample(root.path(), &bin_dir(root.path()));
    let json = |task: &Task, emit: &str| -> Json {
        let f = &task.outputs()[emit][0];
        serde_json::from_str(&fs::read_to_string(task.dir.join(f)).unwrap()).unwrap()
    };
    let by = |name: &str| tasks.iter().find(|t| t.module.name == name).unwrap();
    for (var, reports) in [
        ("translate", vec![json(by("TRANSLATE"), "report")]),
        (
            "e",
            vec![
                json(by("EMBED_DNA"), "report"),
                json(by("EMBED_PROTEIN"), "report"),
            ],
        ),
        ("predict", vec![json(by("PREDICT"), "report")]),
    ] {
        let keys = report_keys(row, var);
        assert!(!keys.is_empty(), "summaryRow reads {var}");
        for report in &reports {
            for k in &keys {
                assert!(
                    report.get(k).is_some(),
                    "summaryRow: {var}.{k} is not in the step's report {report}"
                );
            }
        }
    }
    // The embedding reports' `failed` is what the summary counts.
    assert!(row.contains("failed_records  : embeds.collect { e -> e.failed as Long }.sum(0)"));
    for column in [
        "sample",
        "sequences",
        "viral_sequences",
        "viral_chunks",
        "orfs",
        "failed_records",
        "dna_model",
        "protein_model",
        "classifier",
        "virnucpro",
    ] {
        assert!(
            row.contains(&format!("        {column} ")),
            "summary column {column}"
        );
    }
    let table = block_after(&main, "def summaryTable(");
    for header in [
        "# id: 'virnucpro_summary'",
        "# section_name: ",
        "# description: ",
        "# format: 'tsv'",
        "# plot_type: 'table'",
        "# pconfig:",
    ] {
        assert!(
            table.contains(&format!("\"{header}")),
            "MultiQC header {header}"
        );
    }
    assert_contains(
        &main,
        "main.nf",
        &[
            "['virnucpro_summary.tsv', summaryTable(all, false)]",
            "['virnucpro_summary_mqc.tsv', summaryTable(all, true)]",
        ],
    );
    let failed = block_after(&main, "def failedRows(");
    assert!(
        failed.contains("\"sample\\tshard\\t${lines[0]}\""),
        "{failed}"
    );
    let readme = read("README.md");
    assert_contains(
        &readme,
        "README.md",
        &[
            "`results/pipeline_info/virnucpro_summary.tsv`",
            "`results/pipeline_info/virnucpro_summary_mqc.tsv`",
            "`results/pipeline_info/failed_records.tsv`",
        ],
    );
}

/// nf-core's modules/meta-schema.json (draft 2020-12), the rules it states, applied to every
/// module's meta.yml: required keys and their types, keywords (3+, unique, not `example`),
/// tools (a description and one of homepage/documentation/tool_dev_url/doi; URL, DOI,
/// licence and bio.tools patterns), `input` a list of channels, `output` and `topics` maps of
/// channels, every channel element a map of one name to properties with a `type` from the
/// schema's enum and a `description`, unique enums, ontologies as URLs.
#[test]
fn every_meta_yml_is_valid_under_nf_cores_meta_schema() {
    const TYPES: [&str; 9] = [
        "map",
        "file",
        "directory",
        "string",
        "integer",
        "float",
        "boolean",
        "list",
        "eval",
    ];
    let url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let mut dirs: Vec<&str> = MODULES.iter().map(|m| m.1).collect();
    dirs.push("fetch_models");
    for dir in dirs {
        let what = format!("nextflow/modules/{dir}/meta.yml");
        let meta = meta_yml(dir);
        for key in [
            "name",
            "description",
            "keywords",
            "authors",
            "output",
            "tools",
        ] {
            assert!(meta.get(key).is_some(), "{what}: required {key}");
        }
        assert!(
            meta["name"].is_string() && meta["description"].is_string(),
            "{what}"
        );
        let keywords: Vec<&str> = meta["keywords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().expect("keyword string"))
            .collect();
        let unique: BTreeSet<&&str> = keywords.iter().collect();
        assert!(
            keywords.len() >= 3 && unique.len() == keywords.len() && !keywords.contains(&"example"),
            "{what}: keywords"
        );
        for key in ["authors", "maintainers"] {
            if let Some(list) = meta.get(key) {
                assert!(
                    list.as_array().unwrap().iter().all(Json::is_string),
                    "{what}: {key}"
                );
            }
        }
        for tool in meta["tools"].as_array().expect("tools: a list") {
            for (name, t) in tool.as_object().expect("tool: a map") {
                let ctx = format!("{what}: tool {name}");
                assert!(t["description"].is_string(), "{ctx}: description");
                let links = ["homepage", "documentation", "tool_dev_url", "doi"];
                assert!(links.iter().any(|k| t.get(*k).is_some()), "{ctx}: a link");
                for k in ["homepage", "tool_dev_url", "documentation"] {
                    if let Some(v) = t.get(k) {
                        assert!(url(v.as_str().unwrap()), "{ctx}: {k}");
                    }
                }
                if let Some(doi) = t.get("doi") {
                    let d = doi.as_str().unwrap();
                    assert!(
                        d == "no DOI available" || d.starts_with("10."),
                        "{ctx}: doi"
                    );
                }
                if let Some(lic) = t.get("licence") {
                    let l = lic.as_array().expect("licence: a list");
                    let u: BTreeSet<&str> = l.iter().map(|x| x.as_str().unwrap()).collect();
                    assert!(!l.is_empty() && u.len() == l.len(), "{ctx}: licence");
                }
                if let Some(id) = t.get("identifier") {
                    let i = id.as_str().unwrap();
                    assert!(
                        i.is_empty() || i.starts_with("biotools:"),
                        "{ctx}: identifier"
                    );
                }
            }
        }
        let element = |e: &Json, ctx: &str| {
            let map = e
                .as_object()
                .unwrap_or_else(|| panic!("{ctx}: an element is a map"));
            for (name, p) in map {
                let ty = p["type"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{ctx}: {name}: type"));
                assert!(TYPES.contains(&ty), "{ctx}: {name}: type {ty}");
                assert!(p["description"].is_string(), "{ctx}: {name}: description");
                if let Some(en) = p.get("enum") {
                    let en = en.as_array().unwrap();
                    let u: BTreeSet<String> = en.iter().map(|v| v.to_string()).collect();
                    assert_eq!(u.len(), en.len(), "{ctx}: {name}: enum unique");
                }
                if let Some(pat) = p.get("pattern") {
                    assert!(pat.is_string(), "{ctx}: {name}: pattern");
                }
                for o in p
                    .get("ontologies")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    for v in o.as_object().unwrap().values() {
                        assert!(url(v.as_str().unwrap()), "{ctx}: {name}: ontology {v}");
                    }
                }
            }
        };
        let channels = |list: &Json, ctx: &str| {
            for ch in list
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: a list of channels"))
            {
                match ch.as_array() {
                    Some(tuple) => tuple.iter().for_each(|e| element(e, ctx)),
                    None => element(ch, ctx),
                }
            }
        };
        if let Some(input) = meta.get("input") {
            channels(input, &format!("{what}: input"));
        }
        for key in ["output", "topics"] {
            if let Some(map) = meta.get(key) {
                let map = map
                    .as_object()
                    .unwrap_or_else(|| panic!("{what}: {key} is a map of channels"));
                for (name, list) in map {
                    channels(list, &format!("{what}: {key} {name}"));
                }
            }
        }
        // A module that puts versions on the topic says so.
        let main = read(&format!("nextflow/modules/{dir}/main.nf"));
        assert_eq!(
            main.contains("topic: versions"),
            meta.get("topics")
                .is_some_and(|t| t.get("versions").is_some()),
            "{what}: topics"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Many small samples: embedding tasks shared, models loaded once per task.

/// main.nf's embedGroups, restated (Nextflow cannot run here; the rules file pins its text):
/// shards in (sample id, shard key) order, added to the current group while its size (the
/// protein shard's bytes) stays within `target`; a shard as large or larger, or every shard
/// when `target` is 0, starts a group of its own. Returns the groups as indices into `shards`.
fn embed_groups(shards: &[(Shard, PathBuf)], target: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.sort_by(|&a, &b| {
        (&shards[a].0 .0, &shards[a].0 .1).cmp(&(&shards[b].0 .0, &shards[b].0 .1))
    });
    let (mut groups, mut size): (Vec<Vec<usize>>, u64) = (Vec::new(), 0);
    for i in order {
        let weight = fs::metadata(&shards[i].1).unwrap().len();
        if groups.is_empty() || target == 0 || size + weight > target {
            groups.push(Vec::new());
            size = 0;
        }
        groups.last_mut().unwrap().push(i);
        size += weight;
    }
    groups
}

/// An embedding task's file for one member, found as main.nf's memberFiles finds it: by the
/// name `<sample>.<shard><suffix>` among the task's outputs of that kind.
fn member_file(task: &Task, emit: &str, (id, shard): (&str, &str), suffix: &str) -> PathBuf {
    let outputs = &task.outputs()[emit];
    let want = format!("{id}.{shard}{suffix}");
    let hits: Vec<&String> = outputs
        .iter()
        .filter(|f| file_name(Path::new(f)) == want)
        .collect();
    assert_eq!(hits.len(), 1, "{}: {want} in {outputs:?}", task.module.name);
    task.dir.join(hits[0])
}

fn report(path: &Path) -> Json {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// 50 small samples (a virome's worth of tiny assemblies): packed as main.nf packs them, their
/// shards go to a handful of EMBED_DNA/EMBED_PROTEIN tasks instead of one task per shard. Each
/// task's one `--manifest` process loads its model once: the reports' `model_loads` add up to
/// the number of tasks, not of samples, and say the loading seconds apart from the embedding
/// seconds. Every shard's embeddings come out byte for byte as a task of their own writes them,
/// holding that shard's ids only, and PREDICT, given the files split back by name, writes every
/// sample's tables exactly as with one task per shard.
#[test]
fn many_small_samples_share_embedding_tasks_and_their_model_loads() {
    let root = tempfile::tempdir().unwrap();
    let (root, bin, params) = (root.path(), bin_dir(root.path()), test_params());
    let source = fs::read_to_string(fixtures().join("e2e/input.fa")).unwrap();
    let records: Vec<&str> = source.split('>').filter(|r| !r.is_empty()).collect();
    fs::create_dir_all(root.join("inputs")).unwrap();
    // Samples of 1 to 6 of the fixture's sequences: several shards for some (the test
    // profile's shard_size).
    let mut shards: Vec<(Shard, PathBuf)> = Vec::new();
    let mut translated = BTreeMap::new();
    for j in 0..50 {
        let id = format!("s{j:02}");
        let fasta = root.join(format!("inputs/{id}.fa"));
        let picked = (0..1 + j % 6).map(|r| records[(j + 3 * r) % records.len()]);
        fs::write(&fasta, picked.map(|r| format!(">{r}")).collect::<String>()).unwrap();
        let t = translate_task(root, &id, &fasta, None);
        t.run(Block::Script, &bin);
        for f in t.outputs()["shards"].iter().filter(|f| f.ends_with(".fa")) {
            let nuc = t.dir.join(f);
            let key = file_name(&nuc)[..5].to_string();
            let prot = t
                .dir
                .join(f.replace("identified_nucleotide.fa", "identified_protein.faa"));
            shards.push(((id.clone(), key, nuc), prot));
        }
        translated.insert(id, (fasta, t.dir.join(&t.outputs()["chunks"][0])));
    }
    assert!(
        shards.len() > 50,
        "some samples have several shards: {}",
        shards.len()
    );
    let total: u64 = shards
        .iter()
        .map(|(_, p)| fs::metadata(p).unwrap().len())
        .sum();
    let groups = embed_groups(&shards, total / 5 + 1);
    assert!(
        (3..=8).contains(&groups.len()),
        "{} shards of 50 samples in {} embedding tasks",
        shards.len(),
        groups.len()
    );
    assert_eq!(
        embed_groups(&shards, 0).len(),
        shards.len(),
        "target 0: one task per shard"
    );

    // Both ways: one task per shard (`alone`), and the groups. Per arm, per shard: the files.
    let mut files: BTreeMap<(&str, String, String), (PathBuf, PathBuf)> = BTreeMap::new();
    let mut loads = BTreeMap::new();
    let alone: Vec<Vec<usize>> = (0..shards.len()).map(|i| vec![i]).collect();
    for (arm, arm_groups) in [("alone", &alone), ("grouped", &groups)] {
        let arm_root = root.join(arm);
        fs::create_dir_all(&arm_root).unwrap();
        for (g, members) in arm_groups.iter().enumerate() {
            let group: Vec<Shard> = members.iter().map(|&i| shards[i].0.clone()).collect();
            for (name, kind, model) in [
                ("EMBED_DNA", "dna", "dnabert"),
                ("EMBED_PROTEIN", "protein", "esm"),
            ] {
                let mut group = group.clone();
                if kind == "protein" {
                    for (s, &i) in group.iter_mut().zip(members) {
                        s.2 = shards[i].1.clone();
                    }
                }
                let tag = format!("embed_{}_of_{}", g + 1, arm_groups.len());
                let task = embed_task(
                    &arm_root,
                    name,
                    (&tag, &group),
                    &param_path(&params, model),
                    "",
                );
                task.run(Block::Script, &bin);
                assert!(task.outputs()["failed"].is_empty(), "{arm} {name} {tag}");
                let mut task_loads = 0;
                for (id, key, _) in &group {
                    let st = member_file(
                        &task,
                        "embeddings",
                        (id, key),
                        &format!(".{kind}.safetensors"),
                    );
                    let json = member_file(&task, "report", (id, key), &format!(".{kind}.json"));
                    let r = report(&json);
                    task_loads += r["model_loads"].as_u64().unwrap();
                    let entry = loads
                        .entry((arm, kind))
                        .or_insert((0u64, 0.0f64, 0.0f64, 0usize));
                    entry.1 += r["model_load_seconds"].as_f64().unwrap();
                    entry.2 += r["compute_seconds"].as_f64().unwrap();
                    files.insert((arm, kind.to_string(), format!("{id}.{key}")), (st, json));
                }
                // The CPU's workers share one model: one load per task, whatever its size.
                assert_eq!(task_loads, 1, "{arm} {name} {tag}: loads");
                loads.get_mut(&(arm, kind)).unwrap().0 += task_loads;
                loads.get_mut(&(arm, kind)).unwrap().3 += 1;
            }
        }
    }
    for ((arm, kind), (n, load_s, compute_s, tasks)) in &loads {
        eprintln!("{arm} {kind}: {tasks} tasks, {n} model loads in {load_s:.3} s, embedding {compute_s:.3} s");
        assert_eq!(*n as usize, *tasks, "{arm} {kind}: one load per task");
    }
    assert_eq!(loads[&("grouped", "protein")].0 as usize, groups.len());
    assert_eq!(loads[&("alone", "protein")].0 as usize, shards.len());

    // Each shard's embeddings: the same bytes, whichever task made them.
    for ((_, kind, stem), (st, _)) in files.iter().filter(|((arm, _, _), _)| *arm == "grouped") {
        let single = &files[&("alone", kind.clone(), stem.clone())].0;
        assert_eq!(
            fs::read(st).unwrap(),
            fs::read(single).unwrap(),
            "{kind} {stem}"
        );
    }

    // PREDICT per sample from the files split back, both ways: the same tables.
    for (id, (fasta, chunks)) in &translated {
        let mut tables = Vec::new();
        for arm in ["alone", "grouped"] {
            let of = |kind: &str| -> Vec<PathBuf> {
                let mine = files.iter().filter(|((a, k, stem), _)| {
                    *a == arm && k == kind && stem.starts_with(&format!("{id}."))
                });
                mine.map(|(_, (st, _))| st.clone()).collect()
            };
            let (dna, protein) = (of("dna"), of("protein"));
            assert!(!dna.is_empty() && dna.len() == protein.len(), "{arm} {id}");
            let given = PredictInputs {
                dna: &dna,
                protein: &protein,
                fasta,
                chunks,
            };
            let p = predict_task(
                &root.join(arm),
                id,
                &given,
                &param_path(&params, "classifier"),
            );
            p.run(Block::Script, &bin);
            let read_table = |t: &str| fs::read_to_string(p.dir.join(t)).unwrap();
            tables.push(
                [
                    "prediction_results.txt",
                    "prediction_results_highestscore.csv",
                    "sequence_summary.tsv",
                ]
                .map(read_table),
            );
        }
        assert_eq!(
            tables[0], tables[1],
            "{id}: PREDICT's tables, one task per shard vs grouped"
        );
    }
}

/// The test profile's two samples, packed by the rule above with its --embed_group_tokens:
/// three tasks per embedding step, one holding shards of both samples (what the pipeline's
/// nf-test counts: 2 TRANSLATE + 3 + 3 + 2 PREDICT tasks, 3 model loads per step).
#[test]
fn the_test_profile_packs_its_shards_into_three_tasks_across_samples() {
    let root = tempfile::tempdir().unwrap();
    let (root, bin, params) = (root.path(), bin_dir(root.path()), test_params());
    let sheet = param_path(&params, "input");
    let mut shards = Vec::new();
    for line in fs::read_to_string(&sheet).unwrap().lines().skip(1) {
        let (id, fasta) = line.split_once(',').unwrap();
        let t = translate_task(root, id, &sheet.parent().unwrap().join(fasta), None);
        t.run(Block::Script, &bin);
        for f in t.outputs()["shards"].iter().filter(|f| f.ends_with(".faa")) {
            let prot = t.dir.join(f);
            let key = file_name(&prot)[..5].to_string();
            shards.push(((id.to_string(), key, PathBuf::new()), prot));
        }
    }
    let target: u64 = params["embed_group_tokens"].render().parse().unwrap();
    let groups = embed_groups(&shards, target);
    let samples = |g: &Vec<usize>| {
        g.iter()
            .map(|&i| shards[i].0 .0.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!((shards.len(), groups.len()), (6, 3), "{groups:?}");
    assert_eq!(
        groups.iter().filter(|g| samples(g).len() == 2).count(),
        1,
        "{groups:?}"
    );
    let nf_test = read("nextflow/tests/main.nf.test");
    assert!(nf_test.contains("{ assert workflow.trace.succeeded().size() == 10 }"));
    assert!(nf_test.contains("{ assert modelLoads(outputDir, 'protein') == 3 }"));
}
