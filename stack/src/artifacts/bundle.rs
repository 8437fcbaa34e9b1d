//! What a local kubelet needs to run an image without a container engine: the layers
//! unpacked into a root filesystem, and an OCI runtime `config.json` (for `runc run`)
//! built from the image config, the container's overrides and its resource limits.

use oci_spec::OciSpecError;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder, get_default_maskedpaths, get_default_mounts, get_default_readonly_paths,
};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::oci::{Blob, LAYER_TYPE};

/// The CFS period the CPU quota is a share of (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Errors of unpacking layers and building the runtime config.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the root filesystem could not be written or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer cannot be applied.
    #[error("layer {digest}: {msg}")]
    Layer {
        /// The layer's digest.
        digest: String,
        /// What is wrong with it.
        msg: String,
    },
    /// The runtime config cannot be built.
    #[error("runtime config: {0}")]
    Spec(String),
}

impl From<OciSpecError> for BundleError {
    fn from(e: OciSpecError) -> BundleError {
        BundleError::Spec(e.to_string())
    }
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A layer entry's path relative to the root, or `None` for one that climbs out of
/// it (`..`) or is the root itself.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Removes a file, a link or a whole directory; a missing one is fine.
fn remove(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies gzip'd tar layers, bottom first, onto `rootfs` (created when missing),
/// as an overlay filesystem would show them: `.wh.<name>` deletes `<name>` of the
/// layers below, `.wh..wh..opq` empties its directory of what the layers below put
/// there, and a later entry replaces an earlier one of the same path.
pub fn unpack<'a>(
    layers: impl IntoIterator<Item = &'a Blob>,
    rootfs: &Path,
) -> Result<(), BundleError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(rootfs).map_err(io(rootfs))?;
    for blob in layers {
        let bad = |msg: String| BundleError::Layer {
            digest: blob.digest.clone(),
            msg,
        };
        if blob.media_type != LAYER_TYPE {
            return Err(bad(format!(
                "`{}`: only gzip'd tar layers can be unpacked",
                blob.media_type
            )));
        }
        let archive = || tar::Archive::new(flate2::read::GzDecoder::new(blob.data.as_slice()));
        // Whiteouts hide the layers below, never this layer's own entries: apply
        // them all first, then extract.
        let mut ar = archive();
        for e in ar.entries().map_err(|e| bad(e.to_string()))? {
            let e = e.map_err(|e| bad(e.to_string()))?;
            let path = e.path().map_err(|e| bad(e.to_string()))?.into_owned();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with(WHITEOUT) {
                continue;
            }
            let Some(rel) = inside(&path) else {
                return Err(bad(format!("{}: outside the root", path.display())));
            };
            let dir = rootfs.join(rel.parent().unwrap_or(Path::new("")));
            if name == OPAQUE {
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for child in rd {
                    let child = child.map_err(io(&dir))?.path();
                    remove(&child).map_err(io(&child))?;
                }
            } else {
                let target = dir.join(&name[WHITEOUT.len()..]);
                remove(&target).map_err(io(&target))?;
            }
        }
        let mut ar = archive();
        ar.set_preserve_permissions(true);
        ar.set_overwrite(true);
        for e in ar.entries().map_err(|e| bad(e.to_string()))? {
            let mut e = e.map_err(|e| bad(e.to_string()))?;
            let path = e.path().map_err(|e| bad(e.to_string()))?.into_owned();
            let whiteout = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(WHITEOUT));
            let Some(rel) = inside(&path) else {
                continue; // "./" itself
            };
            if whiteout {
                continue;
            }
            // A directory over a file or a file over a directory: the new entry wins.
            let dest = rootfs.join(&rel);
            let is_dir = e.header().entry_type().is_dir();
            if let Ok(m) = std::fs::symlink_metadata(&dest)
                && (m.is_dir() != is_dir || m.file_type().is_symlink())
            {
                remove(&dest).map_err(io(&dest))?;
            }
            e.unpack_in(rootfs)
                .map_err(|err| bad(format!("{}: {err}", rel.display())))?;
        }
    }
    Ok(())
}

/// What a container changes of its image's defaults, and its limits (as a Pod spec
/// says them).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's entrypoint (and then its `Cmd` too), like a Pod's `command`.
    pub command: Option<Vec<String>>,
    /// Replaces the image's `Cmd`, like a Pod's `args`.
    pub args: Option<Vec<String>>,
    /// Added to the image's environment; wins on the same name.
    pub env: BTreeMap<String, String>,
    /// Working directory instead of the image's.
    pub cwd: Option<String>,
    /// `uid:gid` instead of the image's user.
    pub user: Option<(u32, u32)>,
    /// CPU limit in millicores (1000 = one CPU).
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// The container's hostname.
    pub hostname: Option<String>,
}

/// The CFS quota for `millis` millicores over [`CPU_PERIOD_US`] (at least the
/// kernel's minimum of 1 ms).
pub fn cpu_quota(millis: u64) -> i64 {
    let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
    i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)
}

/// Resolves an image's `User` (`uid[:gid]` or a name in the root's `/etc/passwd`,
/// empty meaning root) to numbers.
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), BundleError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let from_passwd = |name: &str| -> Option<(u32, u32)> {
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, passwd_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => from_passwd(u).ok_or_else(|| {
            BundleError::Spec(format!("user `{u}` is not in the image's /etc/passwd"))
        })?,
    };
    let gid = if g.is_empty() {
        passwd_gid
    } else {
        g.parse()
            .map_err(|_| BundleError::Spec(format!("group `{g}`: only numeric groups")))?
    };
    Ok((uid, gid))
}

/// The OCI runtime config for running `image` from `rootfs` (as unpacked by
/// [`unpack`]): the process of the image config with `o`'s overrides, the host's
/// network (no network namespace: the process listens on the host's loopback, where
/// the local kubelet reaches it), a writable root, `/proc`, `/dev`, `/sys` and a
/// `/tmp` tmpfs, and the CPU and memory limits as cgroup limits.
pub fn runtime_spec(
    image: &ImageConfiguration,
    rootfs: &Path,
    o: &RunOptions,
) -> Result<Spec, BundleError> {
    let ic = image.config().clone().unwrap_or_default();
    let argv: Vec<String> = match &o.command {
        Some(cmd) => cmd.iter().chain(o.args.iter().flatten()).cloned().collect(),
        None => {
            let rest = o.args.as_ref().or(ic.cmd().as_ref());
            ic.entrypoint()
                .iter()
                .flatten()
                .chain(rest.into_iter().flatten())
                .cloned()
                .collect()
        }
    };
    if argv.is_empty() {
        return Err(BundleError::Spec(
            "nothing to run: no command, args, entrypoint or Cmd".into(),
        ));
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    for kv in ic.env().iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.insert(k.into(), v.into());
    }
    env.extend(o.env.clone());
    let (uid, gid) = match o.user {
        Some(u) => u,
        None => resolve_user(ic.user().as_deref().unwrap_or(""), rootfs)?,
    };
    let cwd = o
        .cwd
        .clone()
        .or_else(|| ic.working_dir().clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(argv)
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(cwd)
        .no_new_privileges(true)
        .build()?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![]);
    if let Some(m) = o.cpu_millis {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpu_quota(m))
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }
    if let Some(bytes) = o.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).build()?);
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?;
    let mut mounts = get_default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "mode=1777".to_string(),
            ])
            .build()?,
    );
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux);
    if let Some(h) = &o.hostname {
        spec = spec.hostname(h.clone());
    }
    Ok(spec.build()?)
}

/// Writes `spec` as `<bundle>/config.json`, the file `runc run --bundle` reads.
pub fn write_config(bundle: &Path, spec: &Spec) -> Result<(), BundleError> {
    std::fs::create_dir_all(bundle).map_err(|source| BundleError::Io {
        path: bundle.display().to_string(),
        source,
    })?;
    spec.save(bundle.join("config.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::oci::{self, LayerFile};

    /// A gzip'd tar layer of raw entries, whiteout markers included (which
    /// [`oci::layer`] never writes).
    fn raw_layer(entries: &[(&str, &[u8])]) -> Blob {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let data = gz.finish().unwrap();
        Blob {
            media_type: LAYER_TYPE.into(),
            digest: oci::digest(&data),
            data,
        }
    }

    #[test]
    fn unpack_applies_layers_in_order_with_whiteouts() {
        let base = oci::layer(&[
            LayerFile {
                dest: "/etc/keep".into(),
                data: b"base".to_vec(),
                mode: 0o644,
            },
            LayerFile {
                dest: "/etc/gone".into(),
                data: b"x".to_vec(),
                mode: 0o644,
            },
            LayerFile {
                dest: "/opt/old/a".into(),
                data: b"a".to_vec(),
                mode: 0o644,
            },
            LayerFile {
                dest: "/var/dir/f".into(),
                data: b"f".to_vec(),
                mode: 0o755,
            },
        ])
        .unwrap()
        .blob;
        let top = raw_layer(&[
            ("etc/.wh.gone", b""),
            ("etc/keep", b"top"),
            ("opt/old/.wh..wh..opq", b""),
            ("opt/old/b", b"b"),
            ("var/.wh.dir", b""),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        unpack([&base, &top], &root).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        assert_eq!(read("etc/keep").as_deref(), Some("top"), "later layer wins");
        assert!(!root.join("etc/gone").exists(), "file whiteout");
        assert!(!root.join("var/dir").exists(), "directory whiteout");
        assert!(root.join("var").is_dir());
        assert!(
            !root.join("opt/old/a").exists(),
            "opaque dir hides lower entries"
        );
        assert_eq!(read("opt/old/b").as_deref(), Some("b"), "but keeps its own");
        for marker in ["etc/.wh.gone", "opt/old/.wh..wh..opq", "var/.wh.dir"] {
            assert!(!root.join(marker).exists(), "{marker} is not a file");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("var"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn unpack_refuses_paths_out_of_the_root() {
        // tar::Builder refuses `..` itself; write the name into the header by hand.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..14].copy_from_slice(b"../.wh.escape\0");
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend([0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let data = gz.finish().unwrap();
        let blob = Blob {
            media_type: LAYER_TYPE.into(),
            digest: oci::digest(&data),
            data,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack([&blob], &dir.path().join("rootfs")).unwrap_err();
        assert!(err.to_string().contains("outside the root"), "{err}");
    }

    fn image_config() -> ImageConfiguration {
        let img = oci::Image::new(
            vec![],
            &oci::ImageConfig {
                entrypoint: vec!["/app/server".into(), "--bind".into()],
                env: BTreeMap::from([("A".to_string(), "1".to_string())]),
                port: Some(8080),
                user: oci::NONROOT.into(),
                architecture: oci::host_arch().into(),
            },
        );
        serde_json::from_slice(&img.config.data).unwrap()
    }

    #[test]
    fn runtime_spec_carries_process_host_network_and_limits() {
        let o = RunOptions {
            args: Some(vec!["127.0.0.1:8080".into()]),
            env: BTreeMap::from([("B".to_string(), "2".to_string())]),
            cpu_millis: Some(250),
            memory_bytes: Some(64 << 20),
            ..Default::default()
        };
        let spec = runtime_spec(&image_config(), Path::new("/b/rootfs"), &o).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v["process"]["args"],
            serde_json::json!(["/app/server", "--bind", "127.0.0.1:8080"])
        );
        let env: Vec<&str> = v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        assert!(env.contains(&"A=1") && env.contains(&"B=2"), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert_eq!(v["process"]["user"]["uid"], 65532);
        assert_eq!(v["process"]["user"]["gid"], 65532);
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["root"]["path"], "/b/rootfs");
        assert_eq!(v["root"]["readonly"], false);
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert!(!ns.contains(&"network"), "host network: {ns:?}");
        assert!(ns.contains(&"mount") && ns.contains(&"pid"));
        let mounts: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        for m in ["/proc", "/dev", "/sys", "/tmp"] {
            assert!(mounts.contains(&m), "{m} in {mounts:?}");
        }
        let r = &v["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 25_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["memory"]["limit"], 64 << 20);
    }

    #[test]
    fn runtime_spec_command_replaces_entrypoint_and_user_overrides() {
        let o = RunOptions {
            command: Some(vec!["/bin/echo".into()]),
            args: Some(vec!["hi".into()]),
            user: Some((0, 0)),
            cwd: Some("/tmp".into()),
            ..Default::default()
        };
        let spec = runtime_spec(&image_config(), Path::new("rootfs"), &o).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_deref(),
            Some(&["/bin/echo".to_string(), "hi".into()][..])
        );
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(r.cpu().is_none() && r.memory().is_none(), "no limits asked");
        assert_eq!(cpu_quota(2000), 200_000);
        assert_eq!(cpu_quota(1), 1000, "kernel minimum");
    }
}
