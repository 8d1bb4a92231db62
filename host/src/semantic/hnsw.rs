//! A small HNSW graph (Malkov & Yashunin) over unit vectors scored by dot
//! product, for namespaces too large to scan exactly.
//!
//! The graph only holds node numbers; the vectors live in the caller's flat
//! array (`dim` floats per node) and are passed to every call, so the exact
//! scan and the graph share one copy. Nodes are never removed: the caller
//! skips dead nodes in results, and drops a graph with its segment (see
//! [`super::mirror`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::cache::footprint;

/// Links per node on upper layers.
const M: usize = 16;
/// Links per node on layer 0 (denser, as the paper recommends).
const M0: usize = 32;
/// Candidate list size while inserting.
const EF_CONSTRUCTION: usize = 64;

/// Dot product of two equally long slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in rest_a.iter().zip(rest_b) {
        sum += x * y;
    }
    sum
}

/// A node and its similarity to the query; ordered by similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The graph: per node, per layer, its neighbours.
#[derive(Debug, Default)]
pub struct Graph {
    links: Vec<Vec<Vec<u32>>>,
    /// Bytes of every node's layer and link lists (not the outer list).
    node_bytes: usize,
    entry: Option<u32>,
    top: usize,
    rng: u64,
}

impl Graph {
    pub fn new() -> Self {
        Self {
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Self::default()
        }
    }

    /// Nodes in the graph.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Bytes the graph holds (see [`crate::cache::footprint`]).
    pub fn bytes(&self) -> usize {
        footprint::vec::<Vec<Vec<u32>>>(self.links.capacity()) + self.node_bytes
    }

    fn link_bytes(&self, node: u32, layer: usize) -> usize {
        footprint::vec::<u32>(self.links[node as usize][layer].capacity())
    }

    fn random_level(&mut self) -> usize {
        // xorshift64*: deterministic, good enough for level draws.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let level = (-u.ln() / (M as f64).ln()).floor() as usize;
        level.min(16)
    }

    /// Adds node `node` (must be the next number: `len()`), whose vector is
    /// already in `vectors`.
    pub fn insert(&mut self, vectors: &[f32], dim: usize, node: u32) {
        debug_assert_eq!(node as usize, self.links.len());
        let level = self.random_level();
        self.links.push(vec![Vec::new(); level + 1]);
        self.node_bytes += footprint::vec::<Vec<u32>>(level + 1);
        let Some(mut ep) = self.entry else {
            self.entry = Some(node);
            self.top = level;
            return;
        };
        let q = vector(vectors, dim, node);
        for layer in (level + 1..=self.top).rev() {
            ep = self.greedy(vectors, dim, q, ep, layer);
        }
        let mut eps = vec![ep];
        for layer in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(vectors, dim, q, &eps, EF_CONSTRUCTION, layer);
            let max = if layer == 0 { M0 } else { M };
            let chosen: Vec<u32> = found.iter().take(M).map(|s| s.node).collect();
            for &n in &chosen {
                let before = self.link_bytes(n, layer);
                self.links[n as usize][layer].push(node);
                if self.links[n as usize][layer].len() > max {
                    self.prune(vectors, dim, n, layer, max);
                }
                self.node_bytes = self.node_bytes + self.link_bytes(n, layer) - before;
            }
            self.links[node as usize][layer] = chosen;
            self.node_bytes += self.link_bytes(node, layer);
            eps = found.iter().map(|s| s.node).collect();
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(node);
        }
    }

    /// Keeps the `max` closest neighbours of `n` on `layer`.
    fn prune(&mut self, vectors: &[f32], dim: usize, n: u32, layer: usize, max: usize) {
        let v = vector(vectors, dim, n);
        let mut scored: Vec<Scored> = self.links[n as usize][layer]
            .iter()
            .map(|&m| Scored {
                score: dot(v, vector(vectors, dim, m)),
                node: m,
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.truncate(max);
        self.links[n as usize][layer] = scored.into_iter().map(|s| s.node).collect();
    }

    fn greedy(&self, vectors: &[f32], dim: usize, q: &[f32], mut ep: u32, layer: usize) -> u32 {
        let mut best = dot(q, vector(vectors, dim, ep));
        loop {
            let mut moved = false;
            for &n in self.neighbours(ep, layer) {
                let s = dot(q, vector(vectors, dim, n));
                if s > best {
                    best = s;
                    ep = n;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    fn neighbours(&self, node: u32, layer: usize) -> &[u32] {
        self.links[node as usize]
            .get(layer)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The `ef` nodes of `layer` closest to `q` found from `eps`, best first.
    fn search_layer(
        &self,
        vectors: &[f32],
        dim: usize,
        q: &[f32],
        eps: &[u32],
        ef: usize,
        layer: usize,
    ) -> Vec<Scored> {
        let mut visited = Visited::new(self.links.len());
        for &e in eps {
            visited.insert(e);
        }
        // Candidates: best first. Results: worst first, so it can be trimmed.
        let mut candidates = BinaryHeap::new();
        let mut results = BinaryHeap::new();
        for &e in eps {
            let s = Scored {
                score: dot(q, vector(vectors, dim, e)),
                node: e,
            };
            candidates.push(s);
            results.push(std::cmp::Reverse(s));
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(c) = candidates.pop() {
            let worst = results.peek().map(|r| r.0.score).unwrap_or(f32::MIN);
            if c.score < worst && results.len() >= ef {
                break;
            }
            for &n in self.neighbours(c.node, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: dot(q, vector(vectors, dim, n)),
                    node: n,
                };
                let worst = results.peek().map(|r| r.0.score).unwrap_or(f32::MIN);
                if results.len() < ef || s.score > worst {
                    candidates.push(s);
                    results.push(std::cmp::Reverse(s));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// Up to `ef` approximate nearest nodes to `q`, best first.
    pub fn search(&self, vectors: &[f32], dim: usize, q: &[f32], ef: usize) -> Vec<Scored> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        for layer in (1..=self.top).rev() {
            ep = self.greedy(vectors, dim, q, ep, layer);
        }
        self.search_layer(vectors, dim, q, &[ep], ef.max(1), 0)
    }
}

/// The nodes a search has scored: one bit per node of the graph.
struct Visited(Vec<u64>);

impl Visited {
    fn new(nodes: usize) -> Self {
        Self(vec![0; nodes.div_ceil(64)])
    }

    /// Marks `node`; whether it was not marked before.
    fn insert(&mut self, node: u32) -> bool {
        let (word, bit) = ((node / 64) as usize, 1u64 << (node % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

fn vector(vectors: &[f32], dim: usize, node: u32) -> &[f32] {
    let start = node as usize * dim;
    &vectors[start..start + dim]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        crate::semantic::test_vector(seed, dim)
    }

    #[test]
    fn finds_the_exact_nearest_neighbour_almost_always() {
        let dim = 32;
        let n = 3000;
        let mut vectors = Vec::new();
        let mut g = Graph::new();
        for i in 0..n {
            vectors.extend(unit(i, dim));
            g.insert(&vectors, dim, i as u32);
        }
        let mut found = 0;
        for q in 0..100u64 {
            let query = unit(q * 7919 + 5, dim);
            let exact = (0..n as u32)
                .map(|i| Scored {
                    score: dot(&query, vector(&vectors, dim, i)),
                    node: i,
                })
                .max()
                .unwrap();
            let approx = g.search(&vectors, dim, &query, 64);
            if approx.first().map(|s| s.node) == Some(exact.node) {
                found += 1;
            }
        }
        assert!(found >= 95, "recall@1 was {found}/100");
    }

    #[test]
    fn dot_handles_remainders() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(dot(&a, &a), 385.0);
    }
}
