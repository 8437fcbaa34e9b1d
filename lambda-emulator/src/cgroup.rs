//! The CPU and memory an execution environment gets, as Lambda gives them: memory as
//! a hard limit, CPU in proportion to memory (1 vCPU per 1,769 MB), enforced with Linux
//! cgroups (v1 or v2). Without them a local Lambda would get the whole machine and look
//! faster than it is next to pods held to their limits.

use std::io;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
/// The parent of every group this crate makes, so they are easy to find and clean.
pub const PARENT: &str = "sentiment-stack";
const PERIOD_US: u64 = 100_000;
/// Lambda's documented ratio: a function with 1,769 MB has the equivalent of one vCPU.
pub const MB_PER_VCPU: u64 = 1769;

/// What one environment may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
}

impl Limits {
    /// The limits of a Lambda function with `memory_mb` of memory.
    pub fn lambda(memory_mb: u32) -> Self {
        let memory_mb = u64::from(memory_mb);
        Limits {
            cpu_millis: (memory_mb * 1000).div_ceil(MB_PER_VCPU),
            memory_bytes: memory_mb * 1024 * 1024,
        }
    }

    fn quota_us(&self) -> u64 {
        (self.cpu_millis * PERIOD_US / 1000).max(1000)
    }
}

/// A group holding one process; removed when dropped (after its process has exited).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Makes `sentiment-stack/<name>` with `limits` (v2 when the unified hierarchy is
    /// mounted alone, else the v1 `cpu` and `memory` controllers).
    pub fn create(name: &str, limits: Limits) -> io::Result<Cgroup> {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            Self::create_v2(root, name, limits)
        } else {
            Self::create_v1(root, name, limits)
        }
    }

    fn create_v1(root: &Path, name: &str, limits: Limits) -> io::Result<Cgroup> {
        let cpu = root.join("cpu").join(PARENT).join(name);
        let memory = root.join("memory").join(PARENT).join(name);
        let group = Cgroup {
            dirs: vec![cpu.clone(), memory.clone()],
        };
        for dir in &group.dirs {
            std::fs::create_dir_all(dir).map_err(|e| named(dir, e))?;
        }
        write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(
            &cpu.join("cpu.cfs_quota_us"),
            &limits.quota_us().to_string(),
        )?;
        write(
            &memory.join("memory.limit_in_bytes"),
            &limits.memory_bytes.to_string(),
        )?;
        Ok(group)
    }

    fn create_v2(root: &Path, name: &str, limits: Limits) -> io::Result<Cgroup> {
        let parent = root.join(PARENT);
        std::fs::create_dir_all(&parent).map_err(|e| named(&parent, e))?;
        // Children of `parent` may only use the controllers it hands down.
        write(&root.join("cgroup.subtree_control"), "+cpu +memory")?;
        write(&parent.join("cgroup.subtree_control"), "+cpu +memory")?;
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| named(&dir, e))?;
        let group = Cgroup {
            dirs: vec![dir.clone()],
        };
        write(
            &dir.join("cpu.max"),
            &format!("{} {PERIOD_US}", limits.quota_us()),
        )?;
        write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        Ok(group)
    }

    /// Moves `pid` into the group.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A group can only go once its process is reaped; one killed a moment ago
        // (an emulator shutting down) takes a few milliseconds.
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| named(path, e))
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_cpu_follows_memory() {
        assert_eq!(Limits::lambda(1769).cpu_millis, 1000);
        assert_eq!(Limits::lambda(128).cpu_millis, 73);
        assert_eq!(Limits::lambda(3538).cpu_millis, 2000);
        assert_eq!(Limits::lambda(2048).memory_bytes, 2048 * 1024 * 1024);
        // A sliver of CPU still gets a quota the kernel accepts (1 ms per period).
        assert_eq!(Limits::lambda(1).quota_us(), 1000);
    }
}
