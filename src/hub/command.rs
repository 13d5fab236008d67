//! `virnucpro models fetch` and `virnucpro models list` (the command line's arguments arrive as
//! a [`FetchRequest`] and a [`ListRequest`]).

use anyhow::{bail, Result};

use super::cache;
use super::classifier::{self, Remote};
use super::download::fetch_repo;
use super::{HubEnv, ModelKind, RepoId, DEFAULT_DNABERT, DEFAULT_ESM};
use crate::io::output_lock::OutputLock;
use crate::runtime::progress::human_bytes;
use crate::subcommand::{Finished, Subcommand};

/// What `models fetch` is asked for: Hub ids (`org/name[@revision]`) and classifiers (`500`,
/// `300`, URLs); none at all means the published models.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    pub esm: Option<String>,
    pub dnabert: Option<String>,
    pub classifiers: Vec<String>,
    /// The revision of the Hub repositories named without one.
    pub revision: Option<String>,
    /// No progress lines.
    pub quiet: bool,
}

fn id_of(given: &str, revision: Option<&str>, flag: &str) -> Result<RepoId> {
    let Some(mut id) = RepoId::parse_explained(given).map_err(|e| anyhow::anyhow!("{flag} {e}"))?
    else {
        bail!(
            "{flag} {} is not a Hub id (org/name or org/name@revision)",
            super::shown(given)
        );
    };
    if let Some(r) = revision {
        if given.contains('@') {
            bail!("{flag} {given} already names a revision; drop --revision {r}");
        }
        id = RepoId::parse_explained(&format!("{}@{r}", id.repo))
            .map_err(|e| anyhow::anyhow!("--revision: {e}"))?
            .expect("an id with a revision");
    }
    Ok(id)
}

/// What a fetch will download, every name checked: the Hub repositories and the classifiers.
struct Plan {
    env: HubEnv,
    repos: Vec<(RepoId, ModelKind)>,
    remotes: Vec<Remote>,
}

impl FetchRequest {
    /// With no model flag: ESM-2 3B, DNABERT-S and both classifiers. With some: only those.
    fn plan(&self) -> Result<Plan> {
        let env = HubEnv::from_env()?;
        if env.offline {
            bail!("HF_HUB_OFFLINE is set: `models fetch` needs the network (unset it, or see what is cached with `virnucpro models list`)");
        }
        let none = self.esm.is_none() && self.dnabert.is_none() && self.classifiers.is_empty();
        let mut repos = Vec::new();
        if let Some(e) = self.esm.as_deref().or(none.then_some(DEFAULT_ESM)) {
            repos.push((id_of(e, self.revision.as_deref(), "--esm")?, ModelKind::Esm));
        }
        if let Some(d) = self.dnabert.as_deref().or(none.then_some(DEFAULT_DNABERT)) {
            repos.push((
                id_of(d, self.revision.as_deref(), "--dnabert")?,
                ModelKind::Dnabert,
            ));
        }
        let classifiers: Vec<String> = if none {
            classifier::PUBLISHED
                .iter()
                .map(|p| p.0.to_string())
                .collect()
        } else {
            self.classifiers.clone()
        };
        let mut remotes = Vec::new();
        for c in &classifiers {
            match Remote::parse(c)? {
                Some(r) => remotes.push(r),
                None => bail!("--classifier {c}: give 500, 300 or an http(s):// URL"),
            }
        }
        Ok(Plan {
            env,
            repos,
            remotes,
        })
    }
}

impl Subcommand for FetchRequest {
    /// Nothing ahead: every name (Hub ids, revisions, classifiers) and the Hub settings are
    /// checked by [`fetch`]'s plan, its first step, before any request or file (checking them
    /// here too would read the token file twice).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// None: each file of the cache is locked as it is written ([`super::cache`]), so two
    /// fetches of one model share the work instead of refusing each other.
    fn claim(&self) -> Result<Option<OutputLock>> {
        Ok(None)
    }

    fn execute(&self) -> Result<Finished> {
        fetch(self)?;
        Ok(Finished::COMPLETE)
    }
}

/// Download what `a` asks for into the cache, a line per model on stdout.
pub fn fetch(a: &FetchRequest) -> Result<()> {
    let Plan {
        env,
        repos,
        remotes,
    } = a.plan()?;
    let quiet = a.quiet;
    for (id, kind) in repos {
        let f = fetch_repo(&env, &id, kind, quiet)?;
        println!(
            "{}\t{id}\t{}\t{}",
            kind.name(),
            f.snapshot.display(),
            if f.downloaded > 0 {
                format!("downloaded {}", human_bytes(f.downloaded))
            } else {
                "already cached".into()
            }
        );
    }
    for r in remotes {
        // A cached file is hashed once against its pin here, not again by fetch.
        let (path, how) = match r.cached(&env)? {
            Some(path) => (path, "already cached"),
            None => (r.fetch(&env, quiet)?, "downloaded"),
        };
        println!("classifier\t{}\t{}\t{how}", r.key, path.display());
    }
    Ok(())
}

/// `virnucpro models list`: a table, or JSON.
pub struct ListRequest {
    pub json: bool,
}

impl Subcommand for ListRequest {
    /// Nothing ahead: the listing reads the cache bounded and reports each problem as a line
    /// of its own rather than failing.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// None: it only reads.
    fn claim(&self) -> Result<Option<OutputLock>> {
        Ok(None)
    }

    fn execute(&self) -> Result<Finished> {
        print!("{}", list(self.json)?);
        Ok(Finished::COMPLETE)
    }
}

/// What is cached: Hub models (every `models--*` folder, ours or Python's) and classifiers.
pub fn list(json: bool) -> Result<String> {
    let env = HubEnv::from_env()?;
    let repos = cache::list(&env.hub_cache);
    let classifiers = classifier::list(&env);
    if json {
        let c: Vec<serde_json::Value> = classifiers
            .iter()
            .map(|c| {
                serde_json::json!({"name": c.key, "path": c.path, "bytes": c.bytes, "sha256": c.sha256, "url": c.url, "problem": c.problem})
            })
            .collect();
        let v = serde_json::json!({
            "hub_cache": env.hub_cache,
            "models": repos,
            "classifiers": c,
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut out = format!("Hugging Face cache: {}\n", env.hub_cache.display());
    if repos.is_empty() {
        out.push_str("  (no models; fetch them with `virnucpro models fetch`)\n");
    }
    for r in &repos {
        let refs = r
            .refs
            .iter()
            .map(|(name, c)| format!("{name}={}", &c[..c.len().min(12)]))
            .collect::<Vec<_>>()
            .join(", ");
        let partial = if r.partial_bytes > 0 {
            format!(
                " (+{} partial, resumes on fetch)",
                human_bytes(r.partial_bytes)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<40} {:>10}{partial}  {}  {}\n",
            r.repo,
            human_bytes(r.bytes),
            if refs.is_empty() { "-".into() } else { refs },
            super::shown_path(&r.path)
        ));
        for p in &r.problems {
            out.push_str(&format!("    unreadable: {p}\n"));
        }
    }
    out.push_str(&format!(
        "Classifiers: {}\n",
        env.own_cache().join("classifiers").display()
    ));
    if classifiers.is_empty() {
        out.push_str("  (none; `virnucpro models fetch --classifier 500` fetches one)\n");
    }
    for c in &classifiers {
        out.push_str(&format!(
            "  {:<40} {:>10}  sha256 {}  {}\n",
            c.key,
            human_bytes(c.bytes),
            if c.sha256.is_empty() { "?" } else { &c.sha256 },
            super::shown_path(&c.path)
        ));
        if let Some(p) = &c.problem {
            out.push_str(&format!("    unreadable: {p}\n"));
        }
    }
    Ok(out)
}
