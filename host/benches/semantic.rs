//! Added latency of a semantic lookup (index search only, no embedder) at
//! 10k and 100k entries in one namespace, on the memory state.
//!
//! Vectors are 384-dim (all-MiniLM-L6-v2's size) random unit vectors; each
//! query is a stored vector plus noise, like a rephrased prompt. Criterion
//! measures the mean; p50/p99 and the HNSW's recall@1 are printed before.
//!
//! `cargo bench -p sluice --bench semantic`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use sluice::cache::Answer;
use sluice::policy::{Route, TokenCount};
use sluice::semantic::{IndexKey, IndexSettings, SemanticIndex};
use sluice::state::State;

const DIM: usize = 384;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM).map(|_| self.next()).collect();
        normalise(&mut v);
        v
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// A near-duplicate of `v` (cosine about 0.95).
fn rephrase(v: &[f32], rng: &mut Rng) -> Vec<f32> {
    let mut q: Vec<f32> = v.iter().map(|x| x + 0.016 * rng.next()).collect();
    normalise(&mut q);
    q
}

async fn build(n: usize, rng: &mut Rng) -> (SemanticIndex, IndexKey, Vec<Vec<f32>>) {
    let settings = IndexSettings {
        max_entries: 2 * n as u64,
        ..IndexSettings::default()
    };
    let index = SemanticIndex::new(State::memory(), settings);
    let key = IndexKey::new("bench", "ns");
    let answer = Answer::json(
        Route::Chat,
        bytes::Bytes::from_static(b"{}"),
        TokenCount::new(1, 1),
    );
    let mut vectors = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let v = rng.unit();
        index
            .insert(
                &key,
                v.clone(),
                &format!("prompt {i}"),
                &answer,
                Duration::from_secs(3600),
            )
            .await
            .expect("insert");
        vectors.push(v);
    }
    eprintln!(
        "{n} entries indexed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (index, key, vectors)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("semantic_lookup");
    for n in [10_000usize, 100_000] {
        let mut rng = Rng(0x5EED_0000 + n as u64);
        let (index, key, vectors) = rt.block_on(build(n, &mut rng));
        let queries: Vec<(usize, Vec<f32>)> = (0..2000)
            .map(|i| {
                let target = (i * 7919) % n;
                (target, rephrase(&vectors[target], &mut rng))
            })
            .collect();
        // p50/p99 and recall@1 over the query set.
        let mut took = Vec::with_capacity(queries.len());
        let mut found = 0;
        rt.block_on(async {
            for (target, q) in &queries {
                let t = Instant::now();
                let hit = index.search(&key, q).await.expect("search");
                took.push(t.elapsed());
                if hit.is_some_and(|h| h.seq == *target as u64 + 1) {
                    found += 1;
                }
            }
        });
        took.sort_unstable();
        eprintln!(
            "semantic lookup, {n} entries: p50 {:?}  p99 {:?}  recall@1 {:.3}",
            percentile(&took, 0.50),
            percentile(&took, 0.99),
            f64::from(found) / queries.len() as f64
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                rt.block_on(index.search(&key, &queries[i].1))
                    .expect("search")
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
