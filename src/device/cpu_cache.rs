//! The CPU's last-level cache, read from Linux's sysfs, for sizing CPU batches.
//!
//! A CPU worker is fastest when a layer's largest activation (ESM-2 3B's feed-forward one:
//! 40 KB per token in f32) stays in the cache between the GEMM that writes it, the GELU and the
//! GEMM that reads it; the original's 2048-token batches make it 82 MB, and the 3B model then
//! runs ~15% slower than with batches of two proteins (`cpu_budget` in `embed/batching.rs`).
//! Everything here is best effort: sysfs may be missing (macOS, some containers) or odd, and
//! then callers keep their default batch size.

use std::io::Read;
use std::path::Path;

/// One cache as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInfo {
    /// Size of one instance of the cache.
    pub bytes: u64,
    /// How many logical CPUs share that instance.
    pub shared_by: usize,
}

impl CacheInfo {
    /// The part of the cache one of `workers` single-threaded workers can count on: workers
    /// beyond the CPUs sharing one instance run on other instances (other CCDs or sockets).
    pub fn per_worker(&self, workers: usize) -> u64 {
        self.bytes / workers.clamp(1, self.shared_by.max(1)) as u64
    }
}

/// The last-level data cache of CPU 0, `None` when the system does not say.
pub fn last_level() -> Option<CacheInfo> {
    last_level_in(Path::new("/sys/devices/system/cpu/cpu0/cache"))
}

/// Sizes beyond this are not a cache the kernel should report (a corrupt or hostile value).
const MAX_CACHE_BYTES: u64 = 4 << 30;

/// [`last_level`] under `dir` (`.../cpu0/cache`, with `index0`, `index1`, ... entries).
pub fn last_level_in(dir: &Path) -> Option<CacheInfo> {
    let mut best: Option<(u32, CacheInfo)> = None;
    // A CPU has a handful of cache entries; the bound only keeps a strange tree cheap.
    for index in 0..32 {
        let entry = dir.join(format!("index{index}"));
        if !entry.is_dir() {
            continue;
        }
        let Some(kind) = small_file(&entry.join("type")) else {
            continue;
        };
        if kind != "Data" && kind != "Unified" {
            continue;
        }
        let level = small_file(&entry.join("level")).and_then(|l| l.parse::<u32>().ok());
        let bytes = small_file(&entry.join("size")).and_then(|s| parse_size(&s));
        let (Some(level), Some(bytes)) = (level, bytes) else {
            continue;
        };
        if bytes == 0 || bytes > MAX_CACHE_BYTES {
            continue;
        }
        let shared_by = small_file(&entry.join("shared_cpu_list"))
            .and_then(|l| count_cpus(&l))
            .unwrap_or(1);
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, CacheInfo { bytes, shared_by }));
        }
    }
    best.map(|(_, info)| info)
}

/// A sysfs attribute, trimmed; `None` when unreadable or suspiciously long.
fn small_file(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_string())
}

/// `32768K`, `1M`, `512` (bytes) as bytes.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let unit = match unit.trim() {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The number of CPUs in a list like `0-3,8-11` or `5`.
fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, index: usize, level: &str, kind: &str, size: &str, shared: &str) {
        let e = dir.join(format!("index{index}"));
        std::fs::create_dir_all(&e).unwrap();
        for (name, value) in [
            ("level", level),
            ("type", kind),
            ("size", size),
            ("shared_cpu_list", shared),
        ] {
            std::fs::write(e.join(name), format!("{value}\n")).unwrap();
        }
    }

    #[test]
    fn picks_the_highest_level_data_cache() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), 0, "1", "Data", "48K", "0");
        entry(dir.path(), 1, "1", "Instruction", "32K", "0");
        entry(dir.path(), 2, "2", "Unified", "1024K", "0");
        entry(dir.path(), 3, "3", "Unified", "32768K", "0-7,64-71");
        let info = last_level_in(dir.path()).unwrap();
        assert_eq!(
            info,
            CacheInfo {
                bytes: 32 << 20,
                shared_by: 16
            }
        );
        // Two workers share the instance; 64 workers get at most 1/16 of it each.
        assert_eq!(info.per_worker(2), 16 << 20);
        assert_eq!(info.per_worker(64), 2 << 20);
        assert_eq!(info.per_worker(0), 32 << 20);
    }

    #[test]
    fn odd_or_missing_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_level_in(dir.path()), None);
        assert_eq!(last_level_in(&dir.path().join("absent")), None);
        entry(dir.path(), 0, "1", "Data", "32K", "garbage");
        entry(dir.path(), 1, "3", "Unified", "lots", "0-1");
        entry(dir.path(), 2, "4", "Unified", "99999999999G", "0-1");
        entry(dir.path(), 3, "x", "Unified", "8M", "0-1");
        let huge = "9".repeat(10_000);
        entry(dir.path(), 4, "5", "Unified", &huge, "0-1");
        // Only the level-1 cache is readable; its unreadable CPU list counts as one CPU.
        assert_eq!(
            last_level_in(dir.path()),
            Some(CacheInfo {
                bytes: 32 << 10,
                shared_by: 1
            })
        );
    }

    #[test]
    fn sizes_and_cpu_lists() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("3X"), None);
        assert_eq!(parse_size("18446744073709551615G"), None);
        assert_eq!(count_cpus("0-3,8-11"), Some(8));
        assert_eq!(count_cpus("5"), Some(1));
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("a-b"), None);
    }
}
