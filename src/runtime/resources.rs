//! What a run used of the machine, for reports, and how much memory it may use, for the
//! checks that refuse work too large to fit.

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory this process may use: the physical memory, its cgroup's limit or its
/// address-space limit (`ulimit -v`, `prlimit --as`), whichever is least; None when none of
/// them can be read (not Linux).
pub fn memory_limit_bytes() -> Option<u64> {
    [meminfo_total(), cgroup_memory_max(), address_space_limit()]
        .into_iter()
        .flatten()
        .min()
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// cgroup v2 `memory.max` of this process's cgroup ("max" = none).
fn cgroup_memory_max() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = std::path::Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.max");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The soft address-space limit (`ulimit -v`, `prlimit --as`), from `/proc/self/limits`.
fn address_space_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_bytes().unwrap() > 1 << 20);
        }
    }

    #[test]
    fn the_memory_limit_is_at_most_physical_memory() {
        if let Some(total) = super::meminfo_total() {
            assert!(super::memory_limit_bytes().unwrap() <= total);
        }
    }
}
