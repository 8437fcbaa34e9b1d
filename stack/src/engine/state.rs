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
    /// Bumped by every save: a save whose run read an older serial than the file now
    /// holds is refused (another run wrote in between, e.g. after `stack unlock`).
    #[serde(default)]
    pub serial: u64,
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
    /// Saves the state atomically, with the next serial; refused if another run saved
    /// since this one loaded.
    fn save(&self, state: &State) -> Result<(), EngineError>;
    /// Removes the lock whatever holds it; the holder's description, if there was one.
    fn unlock(&self) -> Result<Option<String>, EngineError>;
    /// Who holds the lock now, and whether that process is known to be gone.
    fn holder(&self) -> Result<Option<(String, bool)>, EngineError>;
    /// A human description of where the state is.
    fn describe(&self) -> String;
}

/// State in `<dir>/<stack>.<target>.json`, lock in `<dir>/<stack>.<target>.lock`, and
/// the state as it was before this run's first save in `<...>.json.backup`.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    stack: String,
    target: String,
    events: Events,
    /// The serial this run last read or wrote.
    serial: std::sync::Mutex<Option<u64>>,
}

impl LocalStore {
    /// A store under `dir` (usually `.stack`).
    pub fn new(dir: impl Into<PathBuf>, stack: &str, target: &str) -> Self {
        LocalStore {
            dir: dir.into(),
            stack: stack.into(),
            target: target.into(),
            events: Events::none(),
            serial: std::sync::Mutex::new(None),
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
    /// The previous state, kept by the first save of each run.
    pub fn backup_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json.backup", self.stack, self.target))
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
        let state = self.read()?.unwrap_or_else(|| State {
            version: 1,
            serial: 0,
            stack: self.stack.clone(),
            target: self.target.clone(),
            resources: BTreeMap::new(),
        });
        *self.serial.lock().expect("serial lock") = Some(state.serial);
        Ok(state)
    }

    fn save(&self, state: &State) -> Result<(), EngineError> {
        let path = self.path();
        fs::create_dir_all(&self.dir).map_err(|e| self.err(&self.dir, e))?;
        let mut known = self.serial.lock().expect("serial lock");
        let on_disk = self.read()?;
        let disk_serial = on_disk.as_ref().map_or(0, |s| s.serial);
        let expected = known.unwrap_or(state.serial);
        if disk_serial > expected {
            return Err(self.err(
                &path,
                format!(
                    "another run saved this state since this one read it (serial {disk_serial}, \
                     read {expected}); nothing was overwritten: run the command again"
                ),
            ));
        }
        // The first save of a run keeps the state as the run found it.
        if known.is_none_or(|k| k == state.serial) && on_disk.is_some() {
            fs::copy(&path, self.backup_path()).map_err(|e| self.err(&self.backup_path(), e))?;
        }
        let state = State {
            serial: disk_serial.max(expected) + 1,
            ..state.clone()
        };
        let tmp = self
            .dir
            .join(format!(".{}.{}.json.tmp", self.stack, self.target));
        let body = serde_json::to_vec_pretty(&state).map_err(|e| self.err(&path, e))?;
        let mut f = fs::File::create(&tmp).map_err(|e| self.err(&tmp, e))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| self.err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| self.err(&path, e))?;
        *known = Some(state.serial);
        Ok(())
    }

    fn unlock(&self) -> Result<Option<String>, EngineError> {
        let holder = self.holder()?;
        match fs::remove_file(self.lock_path()) {
            Ok(()) => Ok(holder
                .map(|(h, _)| h)
                .or_else(|| Some("an unreadable lock".into()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&self.lock_path(), e)),
        }
    }

    fn holder(&self) -> Result<Option<(String, bool)>, EngineError> {
        let path = self.lock_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(match serde_json::from_str::<LockInfo>(&text) {
                Ok(h) => {
                    let gone = h.host == hostname() && !pid_alive(h.pid);
                    (h.describe(), gone)
                }
                Err(_) => (format!("an unreadable lock ({text:?})"), false),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

impl LocalStore {
    /// The state file as it is on disk, if there is one.
    fn read(&self) -> Result<Option<State>, EngineError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| self.err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&path, e)),
        }
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
    fn saves_bump_the_serial_and_keep_the_run_s_starting_state_as_backup() {
        let d = tempfile::tempdir().unwrap();
        let first = LocalStore::new(d.path(), "s", "local");
        let mut st = first.load().unwrap();
        st.resources.insert("a".into(), resource("a"));
        first.save(&st).unwrap();
        first.save(&st).unwrap();
        assert_eq!(first.read().unwrap().unwrap().serial, 2);
        // No state before this run: nothing to back up yet.
        assert!(!first.backup_path().exists());

        // The next run: its first save keeps what it found (serial 2, one resource).
        let second = LocalStore::new(d.path(), "s", "local");
        let mut st = second.load().unwrap();
        assert_eq!(st.serial, 2);
        st.resources.insert("b".into(), resource("b"));
        second.save(&st).unwrap();
        st.resources.insert("c".into(), resource("c"));
        second.save(&st).unwrap();
        let backup: State =
            serde_json::from_slice(&fs::read(second.backup_path()).unwrap()).unwrap();
        assert_eq!(backup.serial, 2);
        assert_eq!(backup.resources.len(), 1);
        assert_eq!(second.read().unwrap().unwrap().serial, 4);
    }

    #[test]
    fn a_save_over_another_run_s_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = LocalStore::new(d.path(), "s", "local");
        let b = LocalStore::new(d.path(), "s", "local");
        let mut sa = a.load().unwrap();
        let sb = b.load().unwrap();
        b.save(&sb).unwrap();
        sa.resources.insert("a".into(), resource("a"));
        let e = a.save(&sa).unwrap_err().to_string();
        assert!(e.contains("another run saved this state"), "{e}");
        // Nothing of `a` was written.
        assert!(a.read().unwrap().unwrap().resources.is_empty());
    }

    #[test]
    fn unlock_removes_any_holder_and_names_it() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path(), "s", "local");
        assert_eq!(s.unlock().unwrap(), None);
        let g = s.lock("up").unwrap();
        let (holder, gone) = s.holder().unwrap().unwrap();
        assert!(holder.contains("`stack up`"), "{holder}");
        assert!(!gone, "this process is alive");
        let removed = s.unlock().unwrap().unwrap();
        assert!(removed.contains("`stack up`"), "{removed}");
        assert!(s.holder().unwrap().is_none());
        s.lock("diff").unwrap();
        drop(g);
    }

    fn resource(id: &str) -> ResourceState {
        ResourceState {
            kind: "k".into(),
            id: id.into(),
            props: Value::Null,
            outputs: Map::new(),
            deps: Vec::new(),
        }
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
        // What was saved, with the next serial.
        st.serial += 1;
        assert_eq!(s.load().unwrap(), st);
    }
}
