//! The last-known-good cache: one file per (service, env, label) in the cache directory.
//!
//! File format: one header line of JSON (`{"confhub_cache":1,"sha256":"…","len":N}`)
//! followed by the [`ConfigResponse`] JSON. The checksum covers the body, so a torn or
//! bit-flipped file is detected and never trusted. Files are written to a temporary file
//! in the same directory, fsynced, then renamed over the old one (and the directory is
//! fsynced), so a reader sees either the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::wire::ConfigResponse;

const FORMAT: u32 = 1;
/// Cache files larger than this are refused as corrupt.
const MAX_CACHE_FILE: u64 = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    confhub_cache: u32,
    sha256: String,
    len: usize,
}

/// The cache file for a (service, env, label) in `dir`.
pub(crate) fn file_path(dir: &Path, service: &str, env: &str, label: Option<&str>) -> PathBuf {
    let mut name = format!("{}--{}", escape(service), escape(env));
    if let Some(label) = label {
        name.push_str("--");
        name.push_str(&escape(label));
    }
    name.push_str(".json");
    dir.join(name)
}

/// Names are `[A-Za-z0-9._+@-]` already; anything else (a label's `/`) becomes `%XX`,
/// so distinct labels never share a file. A leading `.` is escaped too.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'+' | b'@')
            || (b == b'.' && i > 0)
            || (b == b'-' && bytes.get(i + 1) != Some(&b'-'));
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Write `config` atomically to `path`.
pub(crate) fn store(path: &Path, config: &ConfigResponse) -> Result<(), Error> {
    let fail = |message: String| Error::Cache {
        path: path.to_path_buf(),
        message,
    };
    let dir = path
        .parent()
        .ok_or_else(|| fail("has no parent directory".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating the directory: {e}")))?;
    let body = serde_json::to_vec(config).map_err(|e| fail(format!("serializing: {e}")))?;
    let header = Header {
        confhub_cache: FORMAT,
        sha256: hex::encode(Sha256::digest(&body)),
        len: body.len(),
    };
    let mut bytes = serde_json::to_vec(&header).map_err(|e| fail(format!("serializing: {e}")))?;
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);

    let mut tmp = tempfile::Builder::new()
        .prefix(".confhub-cache-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail(format!("creating a temporary file: {e}")))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| fail(format!("writing: {e}")))?;
    tmp.persist(path)
        .map_err(|e| fail(format!("renaming into place: {}", e.error)))?;
    sync_dir(dir);
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "fsync of the cache directory failed");
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

/// Read and verify the cache file at `path`. `Ok(None)` when there is none.
pub(crate) fn load(
    path: &Path,
    service: &str,
    env: &str,
    label: Option<&str>,
) -> Result<Option<ConfigResponse>, Error> {
    let Some(bytes) = read_bounded(path)? else {
        return Ok(None);
    };
    let config = verified_body(&bytes).map_err(|m| corrupt(path, m))?;
    if config.service != service || config.env != env {
        return Err(corrupt(
            path,
            format!(
                "holds {}/{}, not {service}/{env}",
                config.service, config.env
            ),
        ));
    }
    if let Some(label) = label {
        if config.label != label {
            return Err(corrupt(
                path,
                format!("holds label {}, not {label}", config.label),
            ));
        }
    }
    Ok(Some(config))
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        message: format!("corrupt, ignored: {message}"),
    }
}

/// The bytes of the file at `path`, if there is one, refused past [`MAX_CACHE_FILE`].
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let reading = |e: std::io::Error| Error::Cache {
        path: path.to_path_buf(),
        message: format!("reading: {e}"),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(reading(e)),
    };
    if meta.len() > MAX_CACHE_FILE {
        return Err(corrupt(path, format!("{} bytes is too large", meta.len())));
    }
    std::fs::read(path).map(Some).map_err(reading)
}

/// The config in a cache file's `bytes`: header line (format, length, checksum), then
/// the body it describes.
fn verified_body(bytes: &[u8]) -> Result<ConfigResponse, String> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| "no header line".to_string())?;
    let (head, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let header: Header = serde_json::from_slice(head).map_err(|e| format!("bad header: {e}"))?;
    if header.confhub_cache != FORMAT {
        return Err(format!("unknown format version {}", header.confhub_cache));
    }
    if header.len != body.len() {
        return Err(format!(
            "body is {} bytes, header says {}",
            body.len(),
            header.len
        ));
    }
    if hex::encode(Sha256::digest(body)) != header.sha256 {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sample() -> ConfigResponse {
        ConfigResponse {
            service: "orders".into(),
            env: "prod".into(),
            label: "main".into(),
            version: "abc".into(),
            digest: "d1".into(),
            values: json!({"db": {"pool": 60}}),
            sources: vec!["orders-prod.yml".into()],
            rollout: None,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "orders", "prod", None);
        assert!(load(&path, "orders", "prod", None).unwrap().is_none());
        store(&path, &sample()).unwrap();
        assert_eq!(load(&path, "orders", "prod", None).unwrap(), Some(sample()));
        assert_eq!(
            load(&path, "orders", "prod", Some("main")).unwrap(),
            Some(sample())
        );
        // overwrite in place, no temporary files left behind
        let mut newer = sample();
        newer.digest = "d2".into();
        store(&path, &newer).unwrap();
        assert_eq!(load(&path, "orders", "prod", None).unwrap(), Some(newer));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), "orders", "prod", None);
        store(&path, &sample()).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let i = flipped.len() - 5;
        flipped[i] ^= 0x01;
        let truncated = good[..good.len() - 3].to_vec();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("flipped", flipped),
            ("truncated", truncated),
            ("garbage", b"not json at all".to_vec()),
            ("empty", Vec::new()),
            ("plain json", serde_json::to_vec(&sample()).unwrap()),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
            let err = load(&path, "orders", "prod", None).unwrap_err();
            assert!(err.to_string().contains("corrupt"), "{what}: {err}");
        }
        std::fs::write(&path, good).unwrap();
        let err = load(&path, "orders", "prod", Some("v2")).unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
    }

    #[test]
    fn labels_get_distinct_files() {
        let dir = Path::new("/c");
        let a = file_path(dir, "orders", "prod", Some("feature/x"));
        let b = file_path(dir, "orders", "prod", Some("feature_x"));
        let c = file_path(dir, "orders", "prod", None);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, Path::new("/c/orders--prod--feature%2Fx.json"));
        // `--` is the separator, so it is escaped inside names
        assert_ne!(
            file_path(dir, "a--b", "c", None),
            file_path(dir, "a", "b--c", None)
        );
        assert_eq!(
            file_path(dir, "orders", "prod,eu", None),
            Path::new("/c/orders--prod%2Ceu.json")
        );
    }
}
