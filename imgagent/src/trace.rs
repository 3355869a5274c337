//! Start traces: recording one start's first accesses, and merging many starts (from any
//! host) into one prefetch order.
//!
//! Merge rule ([`merge`]): a chunk is kept when more than `min_support` of the traces touched it
//! (with the default 0.5: a strict majority, "chunks most starts need"; a single trace is kept
//! whole); kept chunks are ordered by their mean position in the traces
//! that touched them, where a position is the entry's index divided by that trace's length (so
//! a slow host and a fast one weigh the same, and times need no clock agreement); ties go to
//! the lower chunk index. With one trace the order is that trace's order.
//!
//! Limits: positions, not times, decide the order; the merged plan says nothing about how far
//! ahead to fetch (the agent's prefetch window does).

use std::collections::HashMap;

use objmeta::image::Trace;

/// The merged prefetch plan of an image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Chunk indices in the order a start is expected to need them.
    pub order: Vec<u32>,
    /// How many traces were merged.
    pub traces: usize,
}

/// Merges `traces` (see the module doc). `min_support` is a fraction in [0, 1): 0.5 keeps
/// chunks that more than half the starts touched.
pub fn merge(traces: &[Trace], min_support: f64, chunks: usize) -> Plan {
    let n = traces.len();
    if n == 0 {
        return Plan::default();
    }
    let need = (((n as f64) * min_support.clamp(0.0, 1.0)).floor() as usize + 1).min(n);
    let mut acc: HashMap<u32, (usize, f64)> = HashMap::new();
    for t in traces {
        let len = t.entries.len().max(1) as f64;
        for (i, e) in t.entries.iter().enumerate() {
            if (e.chunk as usize) >= chunks {
                continue;
            }
            let a = acc.entry(e.chunk).or_insert((0, 0.0));
            a.0 += 1;
            a.1 += i as f64 / len;
        }
    }
    let mut kept: Vec<(u32, f64)> = acc
        .into_iter()
        .filter(|(_, (count, _))| *count >= need)
        .map(|(c, (count, sum))| (c, sum / count as f64))
        .collect();
    kept.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    Plan { order: kept.into_iter().map(|(c, _)| c).collect(), traces: n }
}

#[cfg(test)]
mod tests {
    use super::*;
    use objmeta::image::TraceEntry;

    fn t(chunks: &[u32]) -> Trace {
        Trace {
            image_digest: "d".into(),
            host: "h".into(),
            started_ms: 0,
            entries: chunks.iter().enumerate().map(|(i, &chunk)| TraceEntry { chunk, at_us: i as u64 }).collect(),
        }
    }

    #[test]
    fn one_trace_is_its_own_order() {
        let p = merge(&[t(&[5, 1, 9, 0])], 0.5, 10);
        assert_eq!(p.order, vec![5, 1, 9, 0]);
        assert_eq!(p.traces, 1);
        assert_eq!(merge(&[], 0.5, 10), Plan::default());
    }

    #[test]
    fn rare_chunks_are_dropped_and_common_ones_ordered_by_mean_position() {
        // Three starts: 1, 2, 3 always (in the same order), 7 once (an outlier), 4 twice late.
        let ts = [t(&[1, 2, 3, 4]), t(&[1, 7, 2, 3]), t(&[1, 2, 3, 4])];
        let p = merge(&ts, 0.5, 10);
        assert_eq!(p.order, vec![1, 2, 3, 4]);
        let p = merge(&ts, 0.99, 10);
        assert_eq!(p.order, vec![1, 2, 3]);
        let p = merge(&ts, 0.3, 10);
        assert!(p.order.contains(&7));
        // Two starts: only what both needed.
        let p = merge(&ts[..2], 0.5, 10);
        assert_eq!(p.order, vec![1, 2, 3]);
    }

    #[test]
    fn lengths_are_normalised_and_out_of_range_chunks_ignored() {
        // A long trace and a short one that both start with 8 then 2.
        let long: Vec<u32> = [8, 2].into_iter().chain(10..40).collect();
        let p = merge(&[t(&long), t(&[8, 2, 99])], 0.5, 50);
        assert_eq!(&p.order[..2], &[8, 2]);
        assert!(!p.order.contains(&99));
    }
}
