//! Off-host copies in S3-compatible object storage (the `object_store` crate).
//!
//! Layout: `<prefix>/<backup id>/dump` (custom format) or
//! `<prefix>/<backup id>/dump/<file>` (directory format), and
//! `<prefix>/<backup id>/manifest.json`, uploaded last so a listed manifest
//! means a complete copy. Every file is uploaded in parts, then read back and
//! its SHA-256 compared with the manifest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{BackupConfig, ObjectStoreConfig};
use super::error::BackupError;
use super::manifest::{MANIFEST_NAME, Manifest};
use super::partial::PartialDir;
use super::retention;
use super::stream::{ByteMeter, Hashed};
use crate::progress::Progress;

/// Parts uploaded at the same time.
const CONCURRENT_PARTS: usize = 4;

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    pub backup: String,
    pub bucket: String,
    /// Key prefix of the copy (`<prefix>/<id>`).
    pub key: String,
    pub bytes: u64,
    pub files: usize,
}

fn store_config(config: &BackupConfig) -> Result<&ObjectStoreConfig, BackupError> {
    config.object_store.as_ref().ok_or(BackupError::Config {
        key: "backup.object_store",
        problem: "is not set, so there is no object store to use".into(),
    })
}

/// Opens the bucket. Values from the config win over `AWS_*` variables.
pub fn open(store: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>, BackupError> {
    let mut builder =
        AmazonS3Builder::from_env().with_bucket_name(&store.bucket).with_allow_http(store.allow_http);
    if let Some(endpoint) = &store.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &store.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &store.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &store.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &store.session_token {
        builder = builder.with_token(token);
    }
    let built = builder.build().map_err(|e| BackupError::Config {
        key: "backup.object_store",
        problem: format!("cannot open bucket {}: {}", store.bucket, redact(store, &e.to_string())),
    })?;
    Ok(Arc::new(built))
}

fn redact(store: &ObjectStoreConfig, text: &str) -> String {
    store.redactor().redact(text)
}

fn backup_key(store: &ObjectStoreConfig, id: &str) -> String {
    let prefix = store.prefix.trim_matches('/');
    if prefix.is_empty() { id.to_owned() } else { format!("{prefix}/{id}") }
}

fn os_err(store: &ObjectStoreConfig, op: &'static str, key: &str, e: object_store::Error) -> BackupError {
    BackupError::ObjectStore {
        op,
        key: format!("{}/{key}", store.bucket),
        error: redact(store, &e.to_string()),
    }
}

/// Object key of a dump file (relative name as in the manifest).
fn file_key(base: &str, manifest: &Manifest, name: &str) -> String {
    if name.is_empty() {
        format!("{base}/{}", manifest.dump)
    } else {
        format!("{base}/{}/{name}", manifest.dump)
    }
}

/// Uploads the backup in `backup_dir`, verifying every file after upload.
pub async fn upload(
    backup_dir: &Path,
    config: &BackupConfig,
    progress: &Progress,
) -> Result<UploadReport, BackupError> {
    let store_cfg = store_config(config)?;
    let store = open(store_cfg)?;
    let manifest = Manifest::read(backup_dir)?;
    let base = backup_key(store_cfg, &manifest.id);
    progress.emit("upload", format!("uploading backup {} to {}/{base}", manifest.id, store_cfg.bucket));
    let mut meter = ByteMeter::new(progress, "upload", "uploaded", manifest.bytes);
    for entry in &manifest.files {
        let key = file_key(&base, &manifest, &entry.name);
        let path = manifest.file_path(backup_dir, entry);
        let (bytes, sha256) = put_file(&store, store_cfg, &path, &key, &mut meter).await?;
        // What we read while uploading must be what the manifest says…
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::ChecksumMismatch {
                file: path,
                expected: entry.sha256.clone(),
                actual: sha256,
                expected_bytes: entry.bytes,
                actual_bytes: bytes,
            });
        }
    }
    meter.finish();
    // …and what the store holds must be too: read every file back.
    let mut check = ByteMeter::new(progress, "upload-verify", "read back", manifest.bytes);
    for entry in &manifest.files {
        let key = file_key(&base, &manifest, &entry.name);
        let (bytes, sha256) = get_hashed(&store, store_cfg, &key, None, &mut check).await?;
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::ChecksumMismatch {
                file: PathBuf::from(format!("s3://{}/{key}", store_cfg.bucket)),
                expected: entry.sha256.clone(),
                actual: sha256,
                expected_bytes: entry.bytes,
                actual_bytes: bytes,
            });
        }
    }
    check.finish();
    let manifest_key = format!("{base}/{MANIFEST_NAME}");
    let json = manifest.to_json();
    store
        .put(&Key::from(manifest_key.as_str()), PutPayload::from(json.clone().into_bytes()))
        .await
        .map_err(|e| os_err(store_cfg, "put", &manifest_key, e))?;
    let back = store
        .get(&Key::from(manifest_key.as_str()))
        .await
        .map_err(|e| os_err(store_cfg, "get", &manifest_key, e))?
        .bytes()
        .await
        .map_err(|e| os_err(store_cfg, "get", &manifest_key, e))?;
    if back.as_ref() != json.as_bytes() {
        return Err(BackupError::ObjectStore {
            op: "verify",
            key: manifest_key,
            error: "the manifest read back differs from the one uploaded".into(),
        });
    }
    progress.emit(
        "upload",
        format!("backup {} uploaded and verified ({} files)", manifest.id, manifest.files.len()),
    );
    Ok(UploadReport {
        backup: manifest.id,
        bucket: store_cfg.bucket.clone(),
        key: base,
        bytes: manifest.bytes,
        files: manifest.files.len(),
    })
}

/// Multipart upload of one file, hashing what is read. Returns `(bytes, sha256)`.
async fn put_file(
    store: &Arc<dyn ObjectStore>,
    cfg: &ObjectStoreConfig,
    path: &Path,
    key: &str,
    meter: &mut ByteMeter,
) -> Result<(u64, String), BackupError> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| BackupError::io("opening", path, e))?;
    let upload =
        store.put_multipart(&Key::from(key)).await.map_err(|e| os_err(cfg, "start upload of", key, e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, cfg.part_bytes);
    let mut hashed = Hashed::default();
    let mut buf = vec![0u8; cfg.part_bytes.clamp(64 << 10, 8 << 20)];
    let result = async {
        loop {
            let n = file.read(&mut buf).await.map_err(|e| BackupError::io("reading", path, e))?;
            if n == 0 {
                break;
            }
            hashed.update(&buf[..n]);
            writer
                .wait_for_capacity(CONCURRENT_PARTS)
                .await
                .map_err(|e| os_err(cfg, "upload part of", key, e))?;
            writer.write(&buf[..n]);
            meter.add(n as u64);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            writer.finish().await.map_err(|e| os_err(cfg, "finish upload of", key, e))?;
            Ok(hashed.finish())
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Streams an object, hashing it and, with `dest`, writing it to a new file.
async fn get_hashed(
    store: &Arc<dyn ObjectStore>,
    cfg: &ObjectStoreConfig,
    key: &str,
    dest: Option<&Path>,
    meter: &mut ByteMeter,
) -> Result<(u64, String), BackupError> {
    let mut stream = store.get(&Key::from(key)).await.map_err(|e| os_err(cfg, "get", key, e))?.into_stream();
    let mut out = match dest {
        Some(path) => {
            Some(tokio::fs::File::create_new(path).await.map_err(|e| BackupError::io("creating", path, e))?)
        }
        None => None,
    };
    let mut hashed = Hashed::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| os_err(cfg, "read", key, e))?;
        hashed.update(&chunk);
        if let (Some(file), Some(path)) = (&mut out, dest) {
            file.write_all(&chunk).await.map_err(|e| BackupError::io("writing", path, e))?;
        }
        meter.add(chunk.len() as u64);
    }
    if let (Some(file), Some(path)) = (out, dest) {
        file.sync_all().await.map_err(|e| BackupError::io("syncing", path, e))?;
    }
    Ok(hashed.finish())
}

async fn get_manifest(
    store: &Arc<dyn ObjectStore>,
    cfg: &ObjectStoreConfig,
    base: &str,
) -> Result<Manifest, BackupError> {
    let key = format!("{base}/{MANIFEST_NAME}");
    let bytes = match store.get(&Key::from(key.as_str())).await {
        Ok(got) => got.bytes().await.map_err(|e| os_err(cfg, "get", &key, e))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::NotFound {
                backup: base.to_owned(),
                where_: format!("bucket {}", cfg.bucket),
            });
        }
        Err(e) => return Err(os_err(cfg, "get", &key, e)),
    };
    Manifest::from_slice(&bytes, Path::new(&format!("s3://{}/{key}", cfg.bucket)))
}

/// Downloads backup `id` into `<dir>/<id>`, checking every file's SHA-256
/// against the manifest while it is written. Returns the folder.
///
/// The manifest's names were checked when it was parsed (see
/// [`super::names`]): nothing it lists can land outside `<dir>/<id>`, and a
/// manifest that tries is refused before anything is created or written.
pub async fn download(config: &BackupConfig, id: &str, progress: &Progress) -> Result<PathBuf, BackupError> {
    let store_cfg = store_config(config)?;
    if !super::names::is_valid_id(id) {
        return Err(BackupError::NotFound {
            backup: id.to_owned(),
            where_: format!("bucket {}", store_cfg.bucket),
        });
    }
    let store = open(store_cfg)?;
    let base = backup_key(store_cfg, id);
    let manifest = get_manifest(&store, store_cfg, &base).await?;
    if manifest.id != id {
        return Err(BackupError::Manifest {
            path: PathBuf::from(format!("s3://{}/{base}/{MANIFEST_NAME}", store_cfg.bucket)),
            error: format!("it names backup {:?}, not {id:?}, the backup it is stored under", manifest.id),
        });
    }
    let final_dir = config.backup_dir(id);
    if final_dir.exists() {
        return Err(BackupError::Io {
            op: "downloading into",
            path: final_dir,
            error: "a folder of that name already exists; delete it or restore from it".into(),
        });
    }
    std::fs::create_dir_all(&config.dir).map_err(|e| BackupError::io("creating", &config.dir, e))?;
    let partial = PartialDir::create(&config.dir, id)?;
    let work = partial.path().to_owned();
    let result = async {
        if manifest.format == super::DumpFormat::Directory {
            let dump = manifest.dump_path(&work);
            std::fs::create_dir(&dump).map_err(|e| BackupError::io("creating", &dump, e))?;
        }
        progress.emit("download", format!("downloading backup {id} from {}/{base}", store_cfg.bucket));
        let mut meter = ByteMeter::new(progress, "download", "downloaded", manifest.bytes);
        for entry in &manifest.files {
            let key = file_key(&base, &manifest, &entry.name);
            let path = manifest.file_path(&work, entry);
            let (bytes, sha256) = get_hashed(&store, store_cfg, &key, Some(&path), &mut meter).await?;
            if bytes != entry.bytes || sha256 != entry.sha256 {
                return Err(BackupError::ChecksumMismatch {
                    file: PathBuf::from(format!("s3://{}/{key}", store_cfg.bucket)),
                    expected: entry.sha256.clone(),
                    actual: sha256,
                    expected_bytes: entry.bytes,
                    actual_bytes: bytes,
                });
            }
        }
        meter.finish();
        manifest.write(&work)
    }
    .await;
    // On an error the partial folder goes when `partial` drops.
    result?;
    std::fs::rename(&work, &final_dir)
        .map_err(|e| BackupError::io("moving download into place at", &final_dir, e))?;
    partial.keep();
    progress.emit("download", format!("backup {id} downloaded to {}", final_dir.display()));
    Ok(final_dir)
}

/// Manifests of every complete copy in the object store, oldest first.
pub async fn list(config: &BackupConfig) -> Result<Vec<Manifest>, BackupError> {
    let store_cfg = store_config(config)?;
    let store = open(store_cfg)?;
    let prefix = store_cfg.prefix.trim_matches('/');
    let prefix_key = (!prefix.is_empty()).then(|| Key::from(prefix));
    let listing = store
        .list_with_delimiter(prefix_key.as_ref())
        .await
        .map_err(|e| os_err(store_cfg, "list", prefix, e))?;
    let mut manifests = Vec::new();
    for dir in listing.common_prefixes {
        let base = dir.to_string();
        match get_manifest(&store, store_cfg, &base).await {
            Ok(m) => manifests.push(m),
            Err(BackupError::NotFound { .. }) => {} // an upload in progress or abandoned
            Err(e) => return Err(e),
        }
    }
    manifests.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(manifests)
}

/// Deletes the copy of backup `id` (manifest first).
pub async fn delete(config: &BackupConfig, id: &str) -> Result<(), BackupError> {
    let store_cfg = store_config(config)?;
    let store = open(store_cfg)?;
    let base = backup_key(store_cfg, id);
    let manifest_key = format!("{base}/{MANIFEST_NAME}");
    store
        .delete(&Key::from(manifest_key.as_str()))
        .await
        .map_err(|e| os_err(store_cfg, "delete", &manifest_key, e))?;
    let mut objects = store.list(Some(&Key::from(base.as_str())));
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| os_err(store_cfg, "list", &base, e))?;
        store
            .delete(&meta.location)
            .await
            .map_err(|e| os_err(store_cfg, "delete", meta.location.as_ref(), e))?;
    }
    Ok(())
}

/// Deletes copies of `database` beyond the newest `config.keep`, never one
/// pinned locally by a running rollout. Returns the ids deleted.
pub async fn prune(
    config: &BackupConfig,
    database: &str,
    progress: &Progress,
) -> Result<Vec<String>, BackupError> {
    let Some(keep) = config.keep else { return Ok(Vec::new()) };
    let manifests: Vec<Manifest> =
        list(config).await?.into_iter().filter(|m| m.database == database).collect();
    let ids: Vec<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
    let pins = retention::pinned(config)?;
    let doomed: Vec<String> =
        retention::to_delete(&ids, keep, &pins).into_iter().map(str::to_owned).collect();
    for id in &doomed {
        delete(config, id).await?;
        progress
            .emit("retention", format!("deleted remote copy {id} (keeping the newest {keep} of {database})"));
    }
    Ok(doomed)
}
