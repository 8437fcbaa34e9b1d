//! State: what the stack owns (ids, last-applied properties, outputs), behind the
//! [`StateStore`] trait. [`LocalStore`] keeps one JSON file per stack and target,
//! written atomically, and an exclusive lock file naming its holder.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::EngineError;
use super::events::{Event, Events};

/// The state of one stack on one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Stack name.
    pub stack: String,
    /// Target (`local` or `aws`).
    pub target: String,
    /// Owned resources by logical name.
    pub resources: BTreeMap<String, ResourceState>,
}

/// One owned resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceState {
    /// Resource kind.
    pub kind: String,
    /// The provider's id (name, ARN or AWS-assigned id).
    pub id: String,
    /// The properties last applied (or last observed, after `refresh`).
    pub props: Value,
    /// Outputs (ARN, endpoint, ...).
    pub outputs: Map<String, Value>,
    /// Logical names this resource depends on (for ordered deletion).
    pub deps: Vec<String>,
}

/// Something that holds the lock until dropped.
pub trait LockGuard: Send + Sync {}

/// Where state lives. A remote backend (S3 with a conditional-write lock) implements
/// the same trait.
pub trait StateStore: Send + Sync {
    /// Takes the exclusive lock for `command`; fails at once naming the holder.
    fn lock(&self, command: &str) -> Result<Box<dyn LockGuard>, EngineError>;
    /// Loads the state (empty if there is none yet).
    fn load(&self) -> Result<State, EngineError>;
    /// Saves the state atomically.
    fn save(&self, state: &State) -> Result<(), EngineError>;
    /// A human description of where the state is.
    fn describe(&self) -> String;
}

/// State in `<dir>/<stack>.<target>.json`, lock in `<dir>/<stack>.<target>.lock`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    stack: String,
    target: String,
    events: Events,
}

impl LocalStore {
    /// A store under `dir` (usually `.stack`).
    pub fn new(dir: impl Into<PathBuf>, stack: &str, target: &str) -> Self {
        LocalStore {
            dir: dir.into(),
            stack: stack.into(),
            target: target.into(),
            events: Events::none(),
        }
    }
    /// Reports notes (a stale lock taken over) on `events`.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }
    /// The state file path.
    pub fn path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json", self.stack, self.target))
    }
    /// The lock file path.
    pub fn lock_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.{}.lock", self.stack, self.target))
    }
    fn err(&self, p: &Path, e: impl std::fmt::Display) -> EngineError {
        EngineError::State {
            path: p.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// The content of a lock file.
#[derive(Debug, Serialize, Deserialize)]
struct LockInfo {
    pid: u32,
    host: String,
    command: String,
    since_unix: u64,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "`stack {}` (pid {} on {}, since unix time {})",
            self.command, self.pid, self.host, self.since_unix
        )
    }
}

fn hostname() -> String {
    fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn pid_alive(pid: u32) -> bool {
    // On Linux a live process has /proc/<pid>; elsewhere assume alive (never steal).
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

struct FileLock(PathBuf);
impl LockGuard for FileLock {}
impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl StateStore for LocalStore {
    fn lock(&self, command: &str) -> Result<Box<dyn LockGuard>, EngineError> {
        let path = self.lock_path();
        fs::create_dir_all(&self.dir).map_err(|e| self.err(&self.dir, e))?;
        let info = LockInfo {
            pid: std::process::id(),
            host: hostname(),
            command: command.into(),
            since_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let body = serde_json::to_vec(&info).map_err(|e| self.err(&path, e))?;
                    f.write_all(&body)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| self.err(&path, e))?;
                    return Ok(Box::new(FileLock(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    match serde_json::from_str::<LockInfo>(&text) {
                        // A lock left by a dead process on this host is stale: take it over.
                        Ok(h) if h.host == info.host && !pid_alive(h.pid) => {
                            self.events.emit(Event::Note {
                                message: format!("removing stale lock of {}", h.describe()),
                            });
                            let _ = fs::remove_file(&path);
                        }
                        Ok(h) => {
                            return Err(EngineError::Locked {
                                holder: h.describe(),
                                path: path.display().to_string(),
                            });
                        }
                        Err(_) => {
                            return Err(EngineError::Locked {
                                holder: format!("an unreadable lock ({text:?})"),
                                path: path.display().to_string(),
                            });
                        }
                    }
                }
                Err(e) => return Err(self.err(&path, e)),
            }
        }
        Err(self.err(&path, "could not take the lock"))
    }

    fn load(&self) -> Result<State, EngineError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| self.err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                stack: self.stack.clone(),
                target: self.target.clone(),
                resources: BTreeMap::new(),
            }),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    fn save(&self, state: &State) -> Result<(), EngineError> {
        let path = self.path();
        fs::create_dir_all(&self.dir).map_err(|e| self.err(&self.dir, e))?;
        let tmp = self
            .dir
            .join(format!(".{}.{}.json.tmp", self.stack, self.target));
        let body = serde_json::to_vec_pretty(state).map_err(|e| self.err(&path, e))?;
        let mut f = fs::File::create(&tmp).map_err(|e| self.err(&tmp, e))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| self.err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| self.err(&path, e))
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_naming_holder() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path(), "s", "local");
        let g = s.lock("up").unwrap();
        let e = s.lock("diff").err().unwrap().to_string();
        assert!(
            e.contains("`stack up`") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(g);
        s.lock("diff").unwrap();
    }

    #[test]
    fn save_then_load_roundtrips() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path(), "s", "local");
        let mut st = s.load().unwrap();
        st.resources.insert(
            "r".into(),
            ResourceState {
                kind: "k".into(),
                id: "i".into(),
                props: serde_json::json!({"a": 1}),
                outputs: Map::new(),
                deps: vec![],
            },
        );
        s.save(&st).unwrap();
        assert_eq!(s.load().unwrap(), st);
    }
}
