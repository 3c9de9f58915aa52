//! Each memory's record embeddings, held in memory for dense retrieval.
//!
//! Reading every embedding from the database per query cost 600 ms at 100k records (150 MB of
//! blobs decoded); scanning a contiguous matrix in memory costs a few milliseconds. A memory's
//! entry is loaded on first use and tagged with the memory's `records_version`, which every
//! change to its records bumps in the same transaction. A query reads that version (one
//! primary-key probe) and reloads the entry when another process changed the records; changes
//! this process makes are applied to the entry directly when it is exactly one version behind,
//! so a single node never reloads.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::records::{NamespaceMatch, RecordRow, Scope};

/// How many embedding values (f32) the index holds in all before it drops the other memories'
/// entries: 64M values are 256 MB, the embeddings of about 170k records of 384 dimensions.
const VALUE_BUDGET: usize = 64 << 20;

/// One record's place in a memory's matrix.
#[derive(Clone, Debug)]
pub struct Entry {
    pub record_id: String,
    pub namespace: String,
    pub strategy_id: String,
    pub expires_at: Option<i64>,
}

/// A memory's embeddings of one model, row `i` of `data` belonging to `entries[i]`.
#[derive(Clone, Debug, Default)]
pub struct MemoryVectors {
    pub version: i64,
    pub model: String,
    pub dimensions: usize,
    pub entries: Vec<Entry>,
    pub data: Vec<f32>,
}

impl MemoryVectors {
    pub fn push(&mut self, entry: Entry, vector: &[f32]) {
        if self.dimensions == 0 {
            self.dimensions = vector.len();
        }
        if vector.len() != self.dimensions {
            return;
        }
        self.entries.push(entry);
        self.data.extend_from_slice(vector);
    }

    /// Rewrites a record's entry, and its row when `vector` is given (its content changed).
    pub fn update(&mut self, entry: Entry, vector: Option<&[f32]>) {
        match (self.entries.iter().position(|e| e.record_id == entry.record_id), vector) {
            (Some(i), Some(vector)) if vector.len() == self.dimensions => {
                self.data[i * self.dimensions..(i + 1) * self.dimensions].copy_from_slice(vector);
                self.entries[i] = entry;
            }
            (Some(i), None) => self.entries[i] = entry,
            (None, Some(vector)) => self.push(entry, vector),
            _ => {}
        }
    }

    pub fn remove(&mut self, record_id: &str) {
        if let Some(i) = self.entries.iter().position(|e| e.record_id == record_id) {
            let last = self.entries.len() - 1;
            self.entries.swap_remove(i);
            if i != last {
                let (head, tail) = self.data.split_at_mut(last * self.dimensions);
                head[i * self.dimensions..(i + 1) * self.dimensions].copy_from_slice(&tail[..self.dimensions]);
            }
            self.data.truncate(last * self.dimensions);
        }
    }

    /// The records in scope most similar to `query`, best first, at most `limit`.
    pub fn nearest(&self, scope: &Scope, query: &[f32], limit: usize) -> Vec<(String, f32)> {
        if query.len() != self.dimensions || self.dimensions == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(usize, f32)> = self
            .data
            .chunks_exact(self.dimensions)
            .enumerate()
            .filter(|(i, _)| in_scope(&self.entries[*i], scope))
            .map(|(i, row)| (i, dot(row, query)))
            .collect();
        let limit = limit.min(scored.len());
        if limit == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(limit - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(limit);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
            .into_iter()
            .map(|(i, s)| (self.entries[i].record_id.clone(), s))
            .collect()
    }
}

/// A dot product in eight independent lanes, which the compiler turns into SIMD (a plain
/// running sum cannot be reordered, so it stays scalar: 3× slower at 100k records).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn in_scope(entry: &Entry, scope: &Scope) -> bool {
    let namespace_ok = match &scope.namespace {
        NamespaceMatch::Prefix(prefix) => entry.namespace.starts_with(prefix.as_str()),
        NamespaceMatch::Path(path) => {
            let base = path.trim_end_matches('/');
            entry
                .namespace
                .strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    };
    namespace_ok
        && scope.strategy_id.as_ref().is_none_or(|s| *s == entry.strategy_id)
        && entry.expires_at.is_none_or(|t| t > scope.now)
}

impl Entry {
    pub fn of(row: &RecordRow) -> Entry {
        Entry {
            record_id: row.record_id.clone(),
            namespace: row.namespace.clone(),
            strategy_id: row.strategy_id.clone(),
            expires_at: row.expires_at,
        }
    }
}

/// The index of every memory this process has searched.
#[derive(Default)]
pub struct VectorIndex {
    memories: Mutex<HashMap<String, Arc<MemoryVectors>>>,
}

impl VectorIndex {
    /// The entry of `memory_id` if it is at `version` for `model`.
    pub fn current(&self, memory_id: &str, model: &str, version: i64) -> Option<Arc<MemoryVectors>> {
        self.memories
            .lock()
            .get(memory_id)
            .filter(|m| m.version == version && m.model == model)
            .cloned()
    }

    pub fn insert(&self, memory_id: &str, vectors: MemoryVectors) -> Arc<MemoryVectors> {
        let vectors = Arc::new(vectors);
        let mut memories = self.memories.lock();
        memories.remove(memory_id);
        let held: usize = memories.values().map(|m| m.data.len()).sum();
        if held + vectors.data.len() > VALUE_BUDGET {
            // Simple and rare: a server searching more memories than fit reloads them in turn.
            memories.clear();
        }
        memories.insert(memory_id.to_string(), vectors.clone());
        vectors
    }

    /// Applies a change this process committed as `version`: in place when the entry was at
    /// the version before it, else the entry is dropped and reloaded on next use.
    pub fn apply(&self, memory_id: &str, version: i64, change: impl FnOnce(&mut MemoryVectors)) {
        let mut memories = self.memories.lock();
        let Some(entry) = memories.get_mut(memory_id) else {
            return;
        };
        if entry.version + 1 != version {
            memories.remove(memory_id);
            return;
        }
        let entry = Arc::make_mut(entry);
        change(entry);
        entry.version = version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, namespace: &str) -> Entry {
        Entry {
            record_id: id.into(),
            namespace: namespace.into(),
            strategy_id: "s".into(),
            expires_at: None,
        }
    }

    fn scope(namespace: NamespaceMatch) -> Scope {
        Scope {
            memory_id: "m".into(),
            namespace,
            strategy_id: None,
            now: 0,
        }
    }

    #[test]
    fn nearest_ranks_within_scope_and_removal_keeps_rows_aligned() {
        let mut vectors = MemoryVectors::default();
        vectors.push(entry("a", "/u/ana/"), &[1.0, 0.0]);
        vectors.push(entry("b", "/u/ana/trips/"), &[0.8, 0.6]);
        vectors.push(entry("c", "/u/anabel/"), &[0.9, 0.1]);
        vectors.push(entry("d", "/u/bo/"), &[0.0, 1.0]);
        let path = scope(NamespaceMatch::Path("/u/ana".into()));
        let ids = |found: Vec<(String, f32)>| found.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(vectors.nearest(&path, &[1.0, 0.0], 10)), ["a", "b"]);
        assert_eq!(
            ids(vectors.nearest(&scope(NamespaceMatch::Prefix("/u/ana".into())), &[1.0, 0.0], 2)),
            ["a", "c"]
        );
        vectors.remove("a");
        assert_eq!(
            ids(vectors.nearest(&scope(NamespaceMatch::Prefix("/".into())), &[0.0, 1.0], 10)),
            ["d", "b", "c"]
        );
        assert_eq!(vectors.data.len(), 6);
        assert!(
            vectors.nearest(&path, &[1.0, 0.0, 0.0], 10).is_empty(),
            "another dimension finds nothing"
        );
    }

    #[test]
    fn the_lane_dot_product_matches_the_plain_one() {
        let a: Vec<f32> = (0..387).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..387).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn local_changes_apply_in_place_only_when_consecutive() {
        let index = VectorIndex::default();
        index.insert(
            "m",
            MemoryVectors {
                version: 3,
                model: "x".into(),
                ..MemoryVectors::default()
            },
        );
        index.apply("m", 4, |v| v.push(entry("a", "/"), &[1.0]));
        assert_eq!(index.current("m", "x", 4).map(|v| v.entries.len()), Some(1));
        index.apply("m", 6, |v| v.push(entry("b", "/"), &[1.0]));
        assert!(
            index.current("m", "x", 6).is_none(),
            "a gap means another writer: reload"
        );
    }
}
