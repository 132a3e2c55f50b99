//! The etcd backend of the [`Store`](super::Store).
//!
//! The fenced calls here are the only etcd writes in the crate (the
//! election's own campaign aside): each a transaction that compares the
//! leader key's create revision with the writer's fencing token
//! ([`EtcdKv::put_fenced`], and `put_fenced_if` / `delete_fenced`, which
//! also compare a key's mod revision). Compaction (retention's, after a
//! prune) is not fenced: it only drops history, which a deposed leader
//! doing it too cannot harm.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use futures::StreamExt;

use super::{Change, ChangeStream, Delete, Kv, KvFuture, Listing, Put, StoreError};
use crate::fencing::Term;

/// How long one etcd call may take. (Not a client-wide timeout: that would
/// also cut the election's long-running campaign and keep-alive streams.)
pub(crate) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bounds an etcd call (`op`, as the metrics name it) by [`CALL_TIMEOUT`]
/// and records its latency and failure.
async fn timed<T>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout),
    };
    crate::metrics::get().etcd_request(op, started.elapsed(), result.is_ok());
    result
}

/// Keys and values in etcd; cheap to clone.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    /// A key under the store's prefix, read (count only) for the store's
    /// revision: with etcd's authentication on (`runway etcd init-auth`) a
    /// coordinator may read nothing outside its prefix.
    probe: String,
}

impl EtcdKv {
    /// A backend over `client` for keys under `prefix` (the store's).
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, probe: format!("{}/", prefix.trim_end_matches('/')) }
    }

    /// The KV client, taking answers larger than tonic's 4 MiB default: a
    /// scan of every kept rollout record (each with its plan) can be.
    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES)
    }
}

/// Largest etcd answer read (a scan of `keep_rollouts` records).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

impl Kv for EtcdKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let response = timed("get", self.kv().get(key, None)).await?;
            Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    fn scan<'a>(&'a self, prefix: &'a str, from: &'a str) -> KvFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            let from = if from < prefix { prefix } else { from };
            let options = GetOptions::new().with_range(prefix_end(prefix));
            let response = timed("scan", self.kv().get(from, Some(options))).await?;
            Ok(response
                .kvs()
                .iter()
                .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()))
                .collect())
        })
    }

    fn last_key<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Option<String>> {
        Box::pin(async move {
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            let response = timed("last_key", self.kv().get(prefix, Some(options))).await?;
            Ok(response.kvs().first().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()))
        })
    }

    fn put_fenced<'a>(&'a self, term: &'a Term, puts: Vec<Put>) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(term.key.clone(), CompareOp::Equal, term.token.0 as i64)])
                .and_then(puts.into_iter().map(|p| TxnOp::put(p.key, p.value, None)).collect::<Vec<_>>());
            let response = timed("put_fenced", self.kv().txn(txn)).await?;
            if response.succeeded() { Ok(()) } else { Err(StoreError::Fenced(term.token.0)) }
        })
    }

    fn put_fenced_if<'a>(
        &'a self,
        term: &'a Term,
        puts: Vec<Put>,
        unchanged: Vec<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        Box::pin(async move {
            let ops = puts.into_iter().map(|p| TxnOp::put(p.key, p.value, None)).collect();
            let response = timed("put_fenced_if", self.kv().txn(guarded(term, unchanged, ops))).await?;
            refused_or_fenced(term, &response)
        })
    }

    fn revision(&self) -> KvFuture<'_, i64> {
        Box::pin(async move {
            // Any read answers with the store's revision in its header.
            let options = GetOptions::new().with_count_only();
            let response = timed("revision", self.kv().get(self.probe.as_str(), Some(options))).await?;
            Ok(response.header().map_or(0, |h| h.revision()))
        })
    }

    fn compact(&self, revision: i64) -> KvFuture<'_, ()> {
        Box::pin(async move {
            match timed("compact", self.kv().compact(revision, None)).await {
                Ok(_) => Ok(()),
                // Someone (etcd's own auto-compaction, an earlier leader)
                // compacted at or past it already: what was asked is done.
                Err(StoreError::Etcd(e)) if e.to_string().contains("compacted") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn scan_at<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Listing> {
        Box::pin(async move {
            let options = GetOptions::new().with_prefix();
            let response = timed("scan", self.kv().get(prefix, Some(options))).await?;
            let revision = response.header().map_or(0, |h| h.revision());
            let entries = response
                .kvs()
                .iter()
                .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()))
                .collect();
            Ok((entries, revision))
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: i64) -> KvFuture<'a, ChangeStream> {
        Box::pin(async move {
            let options = WatchOptions::new().with_prefix().with_start_revision(from);
            let stream = timed("watch", self.client.watch_client().watch(prefix, Some(options))).await?;
            Ok(changes(stream))
        })
    }

    fn scan_revisions<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Vec<(String, i64)>> {
        Box::pin(async move {
            let options = GetOptions::new().with_prefix().with_keys_only();
            let response = timed("scan_revisions", self.kv().get(prefix, Some(options))).await?;
            Ok(response
                .kvs()
                .iter()
                .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision()))
                .collect())
        })
    }

    fn delete_fenced<'a>(
        &'a self,
        term: &'a Term,
        deletes: Vec<Delete>,
        unchanged: Option<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        Box::pin(async move {
            let ops = deletes
                .into_iter()
                .map(|d| TxnOp::delete(d.key, d.prefix.then(|| DeleteOptions::new().with_prefix())))
                .collect();
            let response = timed("delete_fenced", self.kv().txn(guarded(term, unchanged, ops))).await?;
            refused_or_fenced(term, &response)
        })
    }
}

/// `ops` if `term` still leads and no key of `unchanged` moved from its
/// mod revision; on failure the `or_else` branch re-checks leadership
/// alone, so [`refused_or_fenced`] can tell which compare failed.
fn guarded(term: &Term, unchanged: impl IntoIterator<Item = (String, i64)>, ops: Vec<TxnOp>) -> Txn {
    let leads = Compare::create_revision(term.key.clone(), CompareOp::Equal, term.token.0 as i64);
    let when: Vec<Compare> = std::iter::once(leads.clone())
        .chain(
            unchanged
                .into_iter()
                .map(|(key, revision)| Compare::mod_revision(key, CompareOp::Equal, revision)),
        )
        .collect();
    Txn::new().when(when).and_then(ops).or_else(vec![TxnOp::txn(Txn::new().when(vec![leads]))])
}

/// The answer to a guarded transaction whose `or_else` branch re-checks
/// leadership alone: true when it applied, false when only a guard moved,
/// [`StoreError::Fenced`] when `term` no longer leads.
fn refused_or_fenced(term: &Term, response: &etcd_client::TxnResponse) -> Result<bool, StoreError> {
    if response.succeeded() {
        return Ok(true);
    }
    let still_leads = response.op_responses().into_iter().any(|op| match op {
        etcd_client::TxnOpResponse::Txn(inner) => inner.succeeded(),
        _ => false,
    });
    if still_leads { Ok(false) } else { Err(StoreError::Fenced(term.token.0)) }
}

/// etcd's watch responses as [`Change`]s; a cancelled watch (compaction
/// included) or a broken stream is the last item, an error.
fn changes(stream: WatchStream) -> ChangeStream {
    futures::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        loop {
            let ended = |why: String| Some((Err(StoreError::WatchEnded(why)), None));
            return match stream.message().await {
                Ok(Some(response)) if response.canceled() => {
                    let why = match response.compact_revision() {
                        0 => format!("cancelled by etcd: {}", response.cancel_reason()),
                        compacted => format!("etcd compacted its history up to revision {compacted}"),
                    };
                    ended(why)
                }
                Ok(Some(response)) if response.events().is_empty() => continue,
                Ok(Some(response)) => {
                    let changes = response
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kv = event.kv()?;
                            let value = (event.event_type() == EventType::Put).then(|| kv.value().to_vec());
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            Some(Change { key, value, revision: kv.mod_revision() })
                        })
                        .collect();
                    Some((Ok(changes), Some(stream)))
                }
                Ok(None) => ended("etcd closed the watch stream".into()),
                Err(e) => ended(e.to_string()),
            };
        }
    })
    .boxed()
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
