//! Free space where the build goes: a cold `cargo xtask ci` writes a few GiB into the target
//! directory, and a full disk otherwise shows up only as an `LLVM ERROR: IO failure` deep inside
//! the test build. `df` answers; without it the check says nothing.

use std::path::Path;
use std::process::Command;

/// What a cold `cargo xtask ci` left in its target directory when measured (clippy, every test
/// binary, the docs and the benchmark smoke: 3.5 GiB on Linux x86_64), with some room.
pub(crate) const COLD_BUILD_BYTES: u64 = 4 << 30;

/// Free bytes on the file system holding `dir` (or its nearest existing ancestor), from `df -Pk`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let output = Command::new("df").arg("-Pk").arg(existing).output().ok()?;
    if !output.status.success() {
        return None;
    }
    parse_df(&String::from_utf8_lossy(&output.stdout))
}

/// The available kilobytes of `df -Pk`'s one data line, in bytes. POSIX fixes the columns:
/// file system, total, used, available, capacity, mount point.
fn parse_df(output: &str) -> Option<u64> {
    let line = output.lines().nth(1)?;
    let available: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    available.checked_mul(1024)
}

/// A size for people: `3.5 GiB`, `287 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let bytes = bytes as f64;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes / GIB)
    } else {
        format!("{:.0} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_posix_output_is_parsed() {
        let output = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                      /dev/vda         264091008 12582912  83886080      13% /\n";
        assert_eq!(parse_df(output), Some(83_886_080 * 1024));
    }

    #[test]
    fn df_output_without_a_data_line_is_unknown() {
        assert_eq!(parse_df("Filesystem 1024-blocks Used Available\n"), None);
        assert_eq!(parse_df("garbage"), None);
    }

    #[test]
    fn sizes_are_shown_in_gib_or_mib() {
        assert_eq!(human(287 << 20), "287 MiB");
        assert_eq!(human(3584 << 20), "3.5 GiB");
    }
}
