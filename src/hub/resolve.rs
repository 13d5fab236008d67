//! A model flag's value to a path the loaders read: an existing path stays as it is; a Hub id
//! (`org/name[@revision]`) becomes its snapshot in the cache; a classifier `500`/`300`/URL
//! becomes its cached file. What is not cached is downloaded only when the user allowed the
//! network (`--download`, or `models fetch`), never under `HF_HUB_OFFLINE=1`; otherwise the
//! error says which command fetches it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::cache::RepoCache;
use super::classifier::Remote;
use super::{download, HubEnv, ModelKind, RepoId};

/// The snapshot of `id` in the cache, if it holds a config and weights the loaders find.
pub fn cached_snapshot(env: &HubEnv, id: &RepoId) -> Option<PathBuf> {
    let cache = RepoCache::new(&env.hub_cache, id);
    let snap = cache.snapshot(&cache.commit_of(&id.revision)?);
    (snap.join("config.json").is_file() && crate::weights::find_in_dir(&snap, "model").is_ok())
        .then_some(snap)
}

/// `--esm`/`--dnabert`/`--model`: a path, or a Hub id resolved from the cache (fetched first
/// when `download`).
pub fn model(given: &Path, kind: ModelKind, download: bool, quiet: bool) -> Result<PathBuf> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let parsed = match given.to_str() {
        Some(s) => {
            RepoId::parse_explained(s).map_err(|e| anyhow::anyhow!("{} model {e}", kind.name()))?
        }
        None => None,
    };
    let Some(id) = parsed else {
        // Not an id: the loaders' own "does not exist" error names the path.
        return Ok(given.to_path_buf());
    };
    let env = HubEnv::from_env()?;
    if let Some(snap) = cached_snapshot(&env, &id) {
        tracing::debug!("{} {id}: {}", kind.name(), snap.display());
        return Ok(snap);
    }
    let fetch = format!("virnucpro models fetch {} {id}", kind.flag());
    if env.offline {
        bail!(
            "{} {id} is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set: run `{fetch}` \
             where there is network (with the same HF_HOME), or give a local path",
            kind.name(),
            env.hub_cache.display()
        );
    }
    if !download {
        bail!(
            "{} {id} is neither an existing path nor in the Hugging Face cache {}: fetch it with \
             `{fetch}` (or add --download)",
            kind.name(),
            env.hub_cache.display()
        );
    }
    let fetched = download::fetch_repo(&env, &id, kind, quiet)?;
    Ok(fetched.snapshot)
}

/// `--classifier`: a path, `500`/`300` (the published classifiers) or a URL, the last two from
/// our cache (fetched first when `download`).
pub fn classifier(given: &Path, download: bool, quiet: bool) -> Result<PathBuf> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let Some(spec) = given.to_str() else {
        return Ok(given.to_path_buf());
    };
    let Some(remote) = Remote::parse(spec)? else {
        return Ok(given.to_path_buf());
    };
    let env = HubEnv::from_env()?;
    if let Some(cached) = remote.cached(&env)? {
        return Ok(cached);
    }
    let fetch = format!("virnucpro models fetch --classifier {spec}");
    if env.offline {
        bail!(
            "classifier {spec} is not cached in {} and HF_HUB_OFFLINE is set: run `{fetch}` where \
             there is network (with the same HF_HOME), or give a local file",
            env.own_cache().display()
        );
    }
    if !download {
        bail!(
            "classifier {spec} is not cached in {}: fetch it with `{fetch}` (or add --download)",
            env.own_cache().display()
        );
    }
    remote.fetch(&env, quiet)
}

/// The classifier `run` uses when none is given: the published one for its chunk size.
pub fn default_classifier(chunk_size: u64) -> Result<PathBuf> {
    match chunk_size {
        300 | 500 => Ok(PathBuf::from(chunk_size.to_string())),
        c => bail!(
            "--chunk-size {c}: the published classifiers are for 300 and 500; give --classifier"
        ),
    }
}
