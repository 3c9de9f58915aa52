//! Container images (`containerConfiguration.containerUri`): an OCI image is found in a local
//! image layout (`oci:PATH[:REF]`), a tar of one (`oci-archive:PATH[:REF]`) or a registry
//! (`[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`), its layers are unpacked in order into a root
//! filesystem the session's sandbox runs from, and its config says what to start.
//!
//! Layers are untrusted input: every blob's digest is checked, entries outside the root, or
//! reached through a symbolic link, are refused (the `tar` crate's `unpack_in` resolves each
//! entry's parent and refuses one outside the root), whiteouts are applied inside the root only,
//! device nodes are skipped and set-id bits dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;

/// The largest unpacked image.
const MAX_UNPACKED_BYTES: u64 = 4 * 1024 * 1024 * 1024;
const MAX_ENTRIES: usize = 500_000;
/// The largest manifest, index or config document.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// What the image says to run, kept beside its root filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Entrypoint followed by Cmd.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Layout { path: PathBuf, reference: Option<String> },
    Archive { path: PathBuf, reference: Option<String> },
    Registry(crate::registry::Reference),
}

impl ImageSource {
    pub fn parse(uri: &str) -> Result<Self, String> {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            // PATH[:REF]; a path is absolute, so the last `:` after its last `/` starts the ref.
            match rest.rsplit_once(':') {
                Some((path, reference)) if !reference.contains('/') && !reference.is_empty() => {
                    (PathBuf::from(path), Some(reference.to_string()))
                }
                _ => (PathBuf::from(rest), None),
            }
        };
        if let Some(rest) = uri.strip_prefix("oci:") {
            let (path, reference) = split(rest);
            return Ok(ImageSource::Layout { path, reference });
        }
        if let Some(rest) = uri.strip_prefix("oci-archive:") {
            let (path, reference) = split(rest);
            return Ok(ImageSource::Archive { path, reference });
        }
        crate::registry::Reference::parse(uri).map(ImageSource::Registry)
    }
}

/// A content descriptor (OCI image spec).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// Somewhere blobs can be read from, by digest.
pub trait BlobSource {
    /// The blob's bytes, checked against its digest.
    fn blob(&mut self, digest: &str, max: usize) -> Result<Vec<u8>, String>;
    /// The blob as a stream (layers), checked against its digest once read to the end.
    fn open_blob(&mut self, digest: &str) -> Result<Box<dyn Read + '_>, String>;
}

/// The hex part of a `sha256:` digest, refusing anything else (it names files).
pub fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unsupported digest `{digest}` (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("malformed digest `{digest}`"));
    }
    Ok(hex)
}

pub fn check_digest(digest: &str, data: &[u8]) -> Result<(), String> {
    let expected = sha256_hex(digest)?;
    let actual = hex::encode(sha2::Sha256::digest(data));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(format!("blob {digest} does not match its digest (got sha256:{actual})"));
    }
    Ok(())
}

/// Reads through to the end, then fails if the bytes did not hash to the digest.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    expected: String,
    digest: String,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, digest: &str) -> Result<Self, String> {
        Ok(VerifyingReader {
            inner,
            hasher: sha2::Sha256::new(),
            expected: sha256_hex(digest)?.to_ascii_lowercase(),
            digest: digest.to_string(),
        })
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            let actual = hex::encode(self.hasher.clone().finalize());
            if actual != self.expected {
                return Err(std::io::Error::other(format!(
                    "layer {} does not match its digest (got sha256:{actual})",
                    self.digest
                )));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Blobs of an OCI image layout directory.
pub struct LayoutBlobs {
    pub root: PathBuf,
}

impl BlobSource for LayoutBlobs {
    fn blob(&mut self, digest: &str, max: usize) -> Result<Vec<u8>, String> {
        let path = self.root.join("blobs/sha256").join(sha256_hex(digest)?);
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if data.len() > max {
            return Err(format!("blob {digest} is larger than {max} bytes"));
        }
        check_digest(digest, &data)?;
        Ok(data)
    }

    fn open_blob(&mut self, digest: &str) -> Result<Box<dyn Read + '_>, String> {
        let path = self.root.join("blobs/sha256").join(sha256_hex(digest)?);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Box::new(VerifyingReader::new(std::io::BufReader::new(file), digest)?))
    }
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The host's architecture in OCI's names.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// From an index, the manifest for this host (linux and its architecture), or the only one.
pub fn pick_manifest(index: &Value, reference: Option<&str>) -> Result<Descriptor, String> {
    let manifests: Vec<Descriptor> = serde_json::from_value(index.get("manifests").cloned().unwrap_or_default())
        .map_err(|e| format!("the image index is malformed: {e}"))?;
    let named: Vec<&Descriptor> = match reference {
        Some(reference) => manifests
            .iter()
            .filter(|m| m.annotations.get(REF_ANNOTATION).map(String::as_str) == Some(reference))
            .collect(),
        None => manifests.iter().collect(),
    };
    if named.is_empty() {
        return Err(match reference {
            Some(reference) => format!("the image has no manifest named `{reference}`"),
            None => "the image index lists no manifests".into(),
        });
    }
    let matches_host = |m: &&Descriptor| {
        m.platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == host_architecture())
    };
    named
        .iter()
        .copied()
        .find(matches_host)
        .cloned()
        .ok_or_else(|| format!("the image has no linux/{} manifest", host_architecture()))
}

/// Resolves `descriptor` to an image manifest, descending through nested indexes.
pub fn resolve_manifest(blobs: &mut dyn BlobSource, mut descriptor: Descriptor) -> Result<Value, String> {
    for _ in 0..4 {
        let data = blobs.blob(&descriptor.digest, MAX_DOCUMENT_BYTES)?;
        let document: Value =
            serde_json::from_slice(&data).map_err(|e| format!("manifest {}: {e}", descriptor.digest))?;
        let media_type = document
            .get("mediaType")
            .and_then(Value::as_str)
            .or(descriptor.media_type.as_deref())
            .unwrap_or_default()
            .to_string();
        if INDEX_TYPES.contains(&media_type.as_str()) || document.get("manifests").is_some() {
            descriptor = pick_manifest(&document, None)?;
            continue;
        }
        return Ok(document);
    }
    Err("image indexes nest too deeply".into())
}

/// Unpacks the image `manifest` names into `rootfs` and returns its config.
pub fn unpack_image(blobs: &mut dyn BlobSource, manifest: &Value, rootfs: &Path) -> Result<ImageConfig, String> {
    let config: Descriptor = serde_json::from_value(manifest.get("config").cloned().unwrap_or_default())
        .map_err(|e| format!("the image manifest has no config: {e}"))?;
    let layers: Vec<Descriptor> = serde_json::from_value(manifest.get("layers").cloned().unwrap_or_default())
        .map_err(|e| format!("the image manifest's layers are malformed: {e}"))?;
    let config: Value = serde_json::from_slice(&blobs.blob(&config.digest, MAX_DOCUMENT_BYTES)?)
        .map_err(|e| format!("the image config is not JSON: {e}"))?;
    std::fs::create_dir_all(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let mut budget = Budget::default();
    for (index, layer) in layers.iter().enumerate() {
        let media_type = layer.media_type.as_deref().unwrap_or_default();
        if media_type.contains("zstd") {
            return Err(format!(
                "layer {index}: zstd-compressed layers are not supported; use gzip"
            ));
        }
        let stream = blobs.open_blob(&layer.digest)?;
        unpack_layer(stream, rootfs, &mut budget).map_err(|e| format!("layer {index} ({}): {e}", layer.digest))?;
    }
    Ok(image_config(&config))
}

fn image_config(config: &Value) -> ImageConfig {
    let section = config.get("config").cloned().unwrap_or_default();
    let strings = |name: &str| -> Vec<String> {
        section
            .get(name)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut argv = strings("Entrypoint");
    argv.extend(strings("Cmd"));
    let env = strings("Env")
        .into_iter()
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let working_dir = section
        .get("WorkingDir")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    ImageConfig { argv, env, working_dir }
}

#[derive(Default)]
struct Budget {
    bytes: u64,
    entries: usize,
}

/// A layer entry's path, relative and free of `..`; `None` for the root itself.
fn relative_path(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("entry `{}` leaves the image root", path.display()));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether `path` under `root` is reached without following a symbolic link.
fn no_symlink_ancestor(root: &Path, relative: &Path) -> bool {
    let mut current = root.to_path_buf();
    let parents: Vec<_> = relative.parent().map(|p| p.components().collect()).unwrap_or_default();
    for component in parents {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            _ => {}
        }
    }
    true
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

fn unpack_layer(stream: Box<dyn Read + '_>, rootfs: &Path, budget: &mut Budget) -> Result<(), String> {
    let mut reader = std::io::BufReader::new(stream);
    let gzip = {
        use std::io::BufRead;
        let head = reader.fill_buf().map_err(|e| e.to_string())?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        budget.entries += 1;
        budget.bytes += entry.header().size().unwrap_or(0);
        if budget.entries > MAX_ENTRIES || budget.bytes > MAX_UNPACKED_BYTES {
            return Err(format!(
                "the image unpacks to more than {MAX_ENTRIES} entries or {MAX_UNPACKED_BYTES} bytes"
            ));
        }
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Some(relative) = relative_path(&path)? else {
            continue;
        };
        if !no_symlink_ancestor(rootfs, &relative) {
            return Err(format!("entry `{}` goes through a symbolic link", path.display()));
        }
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Whiteouts (OCI layer spec): `.wh..wh..opq` empties its directory, `.wh.NAME`
        // deletes NAME from the layers below.
        if name == ".wh..wh..opq" {
            let dir = rootfs.join(relative.parent().unwrap_or(Path::new("")));
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.flatten() {
                    remove_any(&child.path());
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&rootfs.join(relative.with_file_name(hidden)));
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue; // device nodes cannot exist in a sandbox, and /dev is the sandbox's own
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("hard link `{}` names no target", path.display()))?;
            let target =
                relative_path(&target)?.ok_or_else(|| format!("hard link `{}` to the root", path.display()))?;
            if !no_symlink_ancestor(rootfs, &target) || !no_symlink_ancestor(rootfs, &relative) {
                return Err(format!("hard link `{}` goes through a symbolic link", path.display()));
            }
        }
        // An existing entry of another kind is replaced, as a later layer's file replaces it.
        let destination = rootfs.join(&relative);
        if let Ok(meta) = std::fs::symlink_metadata(&destination)
            && (meta.is_dir() != kind.is_dir() || meta.file_type().is_symlink())
        {
            remove_any(&destination);
        }
        let unpacked = entry
            .unpack_in(rootfs)
            .map_err(|e| format!("`{}`: {e}", path.display()))?;
        if !unpacked {
            return Err(format!("entry `{}` leaves the image root", path.display()));
        }
        drop_set_id_bits(&destination);
    }
    Ok(())
}

fn drop_set_id_bits(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_symlink()
        && meta.permissions().mode() & 0o6000 != 0
    {
        let _ = std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(meta.permissions().mode() & 0o1777),
        );
    }
}

/// Unpacks a layout from `source` to `rootfs` (blocking).
pub fn unpack_local(source: &ImageSource, work: &Path, rootfs: &Path) -> Result<ImageConfig, String> {
    let (layout, reference) = match source {
        ImageSource::Layout { path, reference } => (path.clone(), reference.clone()),
        ImageSource::Archive { path, reference } => {
            let dir = work.join("layout");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut archive = tar::Archive::new(std::io::BufReader::new(file));
            for entry in archive.entries().map_err(|e| e.to_string())? {
                let mut entry = entry.map_err(|e| e.to_string())?;
                if !entry.unpack_in(&dir).map_err(|e| e.to_string())? {
                    return Err("the image archive has entries outside its root".into());
                }
            }
            (dir, reference.clone())
        }
        ImageSource::Registry(_) => return Err("not a local image".into()),
    };
    let index_path = layout.join("index.json");
    let index: Value = serde_json::from_slice(
        &std::fs::read(&index_path).map_err(|e| format!("{} is not an OCI image layout: {e}", layout.display()))?,
    )
    .map_err(|e| format!("{}: {e}", index_path.display()))?;
    let descriptor = pick_manifest(&index, reference.as_deref())?;
    let mut blobs = LayoutBlobs { root: layout };
    let manifest = resolve_manifest(&mut blobs, descriptor)?;
    unpack_image(&mut blobs, &manifest, rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(if kind.is_dir() { 0o755 } else { 0o4755 });
            // Raw names: the builder's own path checks would refuse the hostile ones.
            let name = path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(link) = link {
                header.set_link_name(link).expect("link");
            }
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn unpack(bytes: Vec<u8>, root: &Path) -> Result<(), String> {
        unpack_layer(Box::new(std::io::Cursor::new(bytes)), root, &mut Budget::default())
    }

    #[test]
    fn layers_stack_with_whiteouts_and_lose_set_id_bits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        use tar::EntryType::{Directory, Regular};
        unpack(
            layer(&[
                ("app/", Directory, b"", None),
                ("app/keep", Regular, b"1", None),
                ("app/gone", Regular, b"2", None),
                ("data/", Directory, b"", None),
                ("data/old", Regular, b"3", None),
            ]),
            &root,
        )
        .expect("first layer");
        unpack(
            layer(&[
                ("app/.wh.gone", Regular, b"", None),
                ("data/.wh..wh..opq", Regular, b"", None),
                ("data/new", Regular, b"4", None),
            ]),
            &root,
        )
        .expect("second layer");
        assert!(root.join("app/keep").exists() && !root.join("app/gone").exists());
        assert!(!root.join("data/old").exists() && root.join("data/new").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("app/keep"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "the setuid bit is dropped");
    }

    #[test]
    fn hostile_layers_are_refused() {
        use tar::EntryType::{Link, Regular, Symlink};
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("parent", layer(&[("../escape", Regular, b"x", None)])),
            (
                "through a symlink",
                layer(&[
                    ("out", Symlink, b"", Some("/")),
                    ("out/etc/passwd", Regular, b"x", None),
                ]),
            ),
            (
                "whiteout through a symlink",
                layer(&[("out", Symlink, b"", Some("/tmp")), ("out/.wh.x", Regular, b"", None)]),
            ),
            ("hard link out", layer(&[("link", Link, b"", Some("../../etc/passwd"))])),
        ];
        for (name, bytes) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let outside = dir.path().join("escape");
            let root = dir.path().join("a/rootfs");
            std::fs::create_dir_all(&root).expect("mkdir");
            assert!(unpack(bytes, &root).is_err(), "{name} must be refused");
            assert!(!outside.exists(), "{name} wrote outside the root");
        }
    }

    #[test]
    fn image_sources_parse() {
        assert_eq!(
            ImageSource::parse("oci:/srv/images/agent:v1"),
            Ok(ImageSource::Layout {
                path: "/srv/images/agent".into(),
                reference: Some("v1".into())
            })
        );
        assert_eq!(
            ImageSource::parse("oci-archive:/tmp/agent.tar"),
            Ok(ImageSource::Archive {
                path: "/tmp/agent.tar".into(),
                reference: None
            })
        );
        assert!(matches!(
            ImageSource::parse("localhost:5000/agent:1"),
            Ok(ImageSource::Registry(_))
        ));
    }
}
