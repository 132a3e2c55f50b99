//! Migration bundles in the store: each stored once under its digest, as
//! chunks well below etcd's value limit (1.5 MiB by default), committed by a
//! small meta record written after the last chunk.
//!
//! | key | value |
//! |---|---|
//! | `bundles/<digest>/chunks/<index, 5 digits>` | up to [`CHUNK_BYTES`] of the protobuf-encoded bundle |
//! | `bundles/<digest>/meta` | [`BundleMeta`] as JSON: the commit point |
//! | `bundles/<digest>` | a bundle an older coordinator saved whole (still read and pruned) |
//!
//! Every chunk is its own fenced write (one op, one chunk: inside etcd's
//! request and transaction limits whatever the bundle's size). The meta
//! goes into the transaction that saves the rollout referring to the
//! bundle, so a rollout never exists without its bundle. A bundle whose
//! meta is already stored is not written again; its meta is rewritten with
//! the rollout, which moves its mod revision: retention deletes a bundle
//! only while its meta has the revision it listed, so a new rollout of an
//! old bundle never loses it to a prune running at the same time.
//!
//! A save that stopped half-way leaves chunks without a meta: the next save
//! of the same digest writes them again and commits, and retention deletes
//! them when two prunes in a row found them untouched (see
//! [`super::retention`]).

use std::collections::BTreeMap;

use prost::Message;
use runway_proto::v1::Bundle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fencing::Term;
use crate::store::{Delete, Put, Store, StoreError};

/// Bytes of the encoded bundle per chunk: well below etcd's default
/// 1.5 MiB request limit, key and transaction overhead included.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// How often a save starts over when a prune deleted its chunks while it
/// wrote them (or its meta moved) before it gives up.
const SAVE_ATTEMPTS: usize = 5;

/// What a bundle's `meta` key records: enough to reassemble the chunks and
/// prove they are the ones written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Length of the protobuf-encoded bundle in bytes.
    pub size: u64,
    /// How many chunk keys hold it.
    pub chunks: u32,
    /// Lowercase hex SHA-256 of the encoded bundle.
    pub sha256: String,
}

impl BundleMeta {
    fn of(encoded: &[u8]) -> Self {
        Self {
            size: encoded.len() as u64,
            chunks: encoded.len().div_ceil(CHUNK_BYTES).max(1) as u32,
            sha256: hex::encode(Sha256::digest(encoded)),
        }
    }
}

/// One bundle found in the store, as retention lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// The bundle's digest (its name).
    pub digest: String,
    /// The key whose mod revision guards a delete: the meta, or the old
    /// single value for a bundle saved whole.
    pub guard: String,
    /// `guard`'s mod revision when listed; 0 when the bundle has chunks
    /// but no meta (a save that stopped half-way, or one still running).
    pub revision: i64,
    /// The highest mod revision of any of the bundle's keys: unchanged
    /// between two listings means nobody is writing it.
    pub newest: i64,
}

impl StoredBundle {
    /// Chunks without a meta: not a bundle any rollout can use (yet).
    pub fn is_uncommitted(&self) -> bool {
        self.revision == 0
    }
}

/// Bundle keys under one store.
#[derive(Clone)]
pub struct Bundles {
    store: Store,
}

impl Bundles {
    /// Bundles saved in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn root(&self) -> String {
        self.store.key("bundles/")
    }

    fn whole_key(&self, digest: &str) -> String {
        self.store.key(&format!("bundles/{digest}"))
    }

    fn prefix(&self, digest: &str) -> String {
        self.store.key(&format!("bundles/{digest}/"))
    }

    fn meta_key(&self, digest: &str) -> String {
        format!("{}meta", self.prefix(digest))
    }

    fn chunk_key(&self, digest: &str, index: u32) -> String {
        format!("{}chunks/{index:05}", self.prefix(digest))
    }

    /// Saves `bundle` (unless stored already) and, in the transaction that
    /// commits it, `puts`: the rollout that refers to it, if the key of
    /// `unchanged` still has its revision. `false`: it moved, and nothing
    /// but the bundle's chunks was written.
    pub async fn save_with(
        &self,
        term: &Term,
        bundle: &Bundle,
        puts: Vec<Put>,
        unchanged: (String, i64),
    ) -> Result<bool, StoreError> {
        let encoded = bundle.encode_to_vec();
        let meta = BundleMeta::of(&encoded);
        let meta_key = self.meta_key(&bundle.digest);
        for _ in 0..SAVE_ATTEMPTS {
            let Some(mut guards) = self.stage(term, &bundle.digest, &encoded).await? else {
                continue;
            };
            guards.push(unchanged.clone());
            let mut commit = vec![Put::json(meta_key.clone(), &meta)];
            commit.extend(puts.iter().cloned());
            if self.store.put_fenced_if(term, commit, guards).await? {
                return Ok(true);
            }
            let (key, revision) = &unchanged;
            if self.store.marker(key.clone()).await?.revision != *revision {
                return Ok(false);
            }
        }
        Err(StoreError::Contended(meta_key))
    }

    /// Makes sure every chunk of `digest` is stored; returns what the
    /// commit must find unchanged, or `None` when a prune deleted chunks
    /// meanwhile (start over).
    async fn stage(
        &self,
        term: &Term,
        digest: &str,
        encoded: &[u8],
    ) -> Result<Option<Vec<(String, i64)>>, StoreError> {
        let meta_key = self.meta_key(digest);
        let stored: BTreeMap<String, i64> =
            self.store.scan_revisions(&self.prefix(digest)).await?.into_iter().collect();
        if let Some(revision) = stored.get(&meta_key) {
            return Ok(Some(vec![(meta_key, *revision)]));
        }
        for (index, chunk) in (0..).zip(encoded.chunks(CHUNK_BYTES)) {
            let put = Put { key: self.chunk_key(digest, index), value: chunk.to_vec() };
            self.store.put_fenced(term, vec![put]).await?;
        }
        if encoded.is_empty() {
            let put = Put { key: self.chunk_key(digest, 0), value: Vec::new() };
            self.store.put_fenced(term, vec![put]).await?;
        }
        // A prune deletes all of a bundle's keys at once: if the first
        // chunk is still there at commit, they all are.
        let first = self.chunk_key(digest, 0);
        let written: BTreeMap<String, i64> =
            self.store.scan_revisions(&self.prefix(digest)).await?.into_iter().collect();
        Ok(written.get(&first).map(|revision| vec![(meta_key, 0), (first, *revision)]))
    }

    /// The bundle with digest `digest`, if saved (chunked, or whole by an
    /// older coordinator). A missing chunk or one that does not match the
    /// meta is [`StoreError::Corrupt`] naming the digest.
    pub async fn load(&self, digest: &str) -> Result<Option<Bundle>, StoreError> {
        let meta_key = self.meta_key(digest);
        let Some(meta) = self.store.get_json::<BundleMeta>(&meta_key).await? else {
            return self.store.get_proto(&self.whole_key(digest)).await;
        };
        let corrupt = |message: String| StoreError::Corrupt { key: meta_key.clone(), message };
        let mut encoded = Vec::with_capacity(meta.size as usize);
        for index in 0..meta.chunks {
            let key = self.chunk_key(digest, index);
            let Some(chunk) = self.store.get(&key).await? else {
                return Err(corrupt(format!(
                    "bundle {digest}: chunk {index} of {} ({key}) is missing",
                    meta.chunks
                )));
            };
            encoded.extend_from_slice(&chunk);
        }
        let sha256 = hex::encode(Sha256::digest(&encoded));
        if encoded.len() as u64 != meta.size || sha256 != meta.sha256 {
            return Err(corrupt(format!(
                "bundle {digest}: its {} chunks hold {} bytes with SHA-256 {sha256}, but the meta says {} bytes with SHA-256 {}",
                meta.chunks,
                encoded.len(),
                meta.size,
                meta.sha256
            )));
        }
        let bundle = Bundle::decode(encoded.as_slice())
            .map_err(|e| corrupt(format!("bundle {digest} does not decode: {e}")))?;
        if bundle.digest != digest {
            return Err(corrupt(format!("bundle stored under {digest} names itself {}", bundle.digest)));
        }
        Ok(Some(bundle))
    }

    /// Every bundle in the store, committed or not, by digest.
    pub async fn list(&self) -> Result<Vec<StoredBundle>, StoreError> {
        let root = self.root();
        let mut found: BTreeMap<String, StoredBundle> = BTreeMap::new();
        for (key, revision) in self.store.scan_revisions(&root).await? {
            let Some(rest) = key.strip_prefix(&root) else { continue };
            let (digest, part) = rest.split_once('/').unwrap_or((rest, ""));
            let entry = found.entry(digest.to_owned()).or_insert_with(|| StoredBundle {
                digest: digest.to_owned(),
                guard: self.meta_key(digest),
                revision: 0,
                newest: 0,
            });
            entry.newest = entry.newest.max(revision);
            match part {
                "meta" => {
                    entry.guard = key.clone();
                    entry.revision = revision;
                }
                // Saved whole: guards the delete unless a meta does.
                "" if entry.revision == 0 => {
                    entry.guard = key.clone();
                    entry.revision = revision;
                }
                _ => {}
            }
        }
        Ok(found.into_values().collect())
    }

    /// Deletes every key of `bundle` unless its guard moved since it was
    /// listed; false when it was kept for that.
    pub async fn delete(&self, term: &Term, bundle: &StoredBundle) -> Result<bool, StoreError> {
        let deletes = vec![
            Delete { key: self.prefix(&bundle.digest), prefix: true },
            Delete { key: self.whole_key(&bundle.digest), prefix: false },
        ];
        self.store.delete_fenced(term, deletes, Some((bundle.guard.clone(), bundle.revision))).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use runway_proto::v1::BundleFile;

    use super::*;
    use crate::store::Kv;
    use crate::store::memory::MemoryKv;

    fn setup() -> (Arc<MemoryKv>, Bundles, Term) {
        let kv = Arc::new(MemoryKv::new());
        let term = kv.lead(1);
        (kv.clone(), Bundles::new(Store::new(kv, "/runway")), term)
    }

    /// A bundle of `bytes` content bytes that does not compress into one
    /// chunk: every byte differs from its neighbours.
    fn bundle(bytes: usize) -> Bundle {
        let content: Vec<u8> = (0..bytes).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        let files = vec![BundleFile { path: "1_init/migration.sql".into(), content }];
        Bundle { digest: runway_proto::bundle::digest(&files), files }
    }

    fn keys_under(kv: &MemoryKv, digest: &str) -> Vec<String> {
        let prefix = format!("/runway/bundles/{digest}");
        kv.keys().into_iter().filter(|k| k.starts_with(&prefix)).collect()
    }

    #[tokio::test]
    async fn a_large_bundle_is_saved_as_chunks_then_a_meta_and_reads_back_whole() {
        let (kv, bundles, term) = setup();
        let big = bundle(3 * CHUNK_BYTES + 10);
        bundles
            .save_with(
                &term,
                &big,
                vec![Put::json("/runway/rollouts/r1".into(), &1)],
                ("/runway/envs/test/changes".into(), 0),
            )
            .await
            .unwrap();
        let keys = keys_under(&kv, &big.digest);
        let chunks: Vec<&String> = keys.iter().filter(|k| k.contains("/chunks/")).collect();
        assert_eq!(chunks.len(), 4, "{keys:?}");
        assert!(keys.iter().any(|k| k.ends_with("/meta")));
        for key in chunks {
            assert!(kv.get(key).await.unwrap().unwrap().len() <= CHUNK_BYTES);
        }
        assert_eq!(bundles.load(&big.digest).await.unwrap(), Some(big.clone()));
        assert!(kv.get("/runway/rollouts/r1").await.unwrap().is_some(), "committed with the rollout");
        assert_eq!(bundles.load("nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stored_bundle_is_not_written_again_but_its_meta_moves() {
        let (kv, bundles, term) = setup();
        let small = bundle(100);
        bundles.save_with(&term, &small, Vec::new(), ("/runway/envs/test/changes".into(), 0)).await.unwrap();
        let chunk = format!("/runway/bundles/{}/chunks/00000", small.digest);
        let before = kv.scan_revisions(&chunk).await.unwrap();
        let listed = bundles.list().await.unwrap();
        bundles.save_with(&term, &small, Vec::new(), ("/runway/envs/test/changes".into(), 0)).await.unwrap();
        assert_eq!(kv.scan_revisions(&chunk).await.unwrap(), before, "the chunk was not rewritten");
        assert!(!bundles.delete(&term, &listed[0]).await.unwrap(), "a resave moves the meta: no delete");
        assert!(bundles.load(&small.digest).await.unwrap().is_some());
        let relisted = bundles.list().await.unwrap();
        assert!(bundles.delete(&term, &relisted[0]).await.unwrap());
        assert!(keys_under(&kv, &small.digest).is_empty());
    }

    #[tokio::test]
    async fn a_missing_or_changed_chunk_is_an_error_naming_the_digest() {
        let (kv, bundles, term) = setup();
        let big = bundle(2 * CHUNK_BYTES); // 3 chunks with its encoding
        bundles.save_with(&term, &big, Vec::new(), ("/runway/envs/test/changes".into(), 0)).await.unwrap();
        let chunk = |i: u32| format!("/runway/bundles/{}/chunks/{i:05}", big.digest);
        let put = |key: String, value: Vec<u8>| kv.put_fenced(&term, vec![Put { key, value }]);
        put(chunk(1), b"tampered".to_vec()).await.unwrap();
        let error = bundles.load(&big.digest).await.unwrap_err().to_string();
        assert!(error.contains(&big.digest) && error.contains("SHA-256"), "{error}");

        let deletes = vec![Delete { key: chunk(1), prefix: false }];
        kv.delete_fenced(&term, deletes, None).await.unwrap();
        let error = bundles.load(&big.digest).await.unwrap_err().to_string();
        assert!(error.contains(&big.digest) && error.contains("chunk 1 of 3"), "{error}");
    }

    #[tokio::test]
    async fn a_half_saved_bundle_is_completed_by_the_next_save_and_listed_uncommitted_before() {
        let (kv, bundles, term) = setup();
        let big = bundle(CHUNK_BYTES + 1);
        let encoded = big.encode_to_vec();
        // The first chunk made it, then the saver died.
        let first = Put { key: bundles.chunk_key(&big.digest, 0), value: encoded[..CHUNK_BYTES].to_vec() };
        kv.put_fenced(&term, vec![first]).await.unwrap();
        let listed = bundles.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_uncommitted());
        assert_eq!(bundles.load(&big.digest).await.unwrap(), None, "no meta: not a bundle yet");

        bundles.save_with(&term, &big, Vec::new(), ("/runway/envs/test/changes".into(), 0)).await.unwrap();
        assert_eq!(bundles.load(&big.digest).await.unwrap(), Some(big.clone()));
        assert!(!bundles.list().await.unwrap()[0].is_uncommitted());
        // A prune that listed the orphan finds a meta now: nothing deleted.
        assert!(!bundles.delete(&term, &listed[0]).await.unwrap());
    }

    #[tokio::test]
    async fn a_bundle_saved_whole_by_an_older_coordinator_still_reads_and_deletes() {
        let (kv, bundles, term) = setup();
        let old = bundle(10);
        let key = format!("/runway/bundles/{}", old.digest);
        kv.put_fenced(&term, vec![Put::proto(key.clone(), &old)]).await.unwrap();
        assert_eq!(bundles.load(&old.digest).await.unwrap(), Some(old.clone()));
        let listed = bundles.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].guard, key);
        assert!(!listed[0].is_uncommitted());
        assert!(bundles.delete(&term, &listed[0]).await.unwrap());
        assert!(keys_under(&kv, &old.digest).is_empty());
    }
}
