//! Word-level comparison of two transcripts.

/// The words of a text for comparison: split at white space, lower case, punctuation removed
/// (apostrophes kept).
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// How two transcripts' words differ.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WordComparison {
    /// Words of the reference.
    pub reference_words: usize,
    /// Words of the other transcript.
    pub words: usize,
    /// Words the two have in common, in order (their longest common subsequence).
    pub common: usize,
    /// `common` over the longer transcript's word count: 1 when the words are the same.
    pub agreement: f64,
    /// The differences in order: `-word` only in the reference, `+word` only in the other.
    pub differences: Vec<String>,
}

/// Compares the words of `other` with those of `reference`.
///
/// The common words are a longest common subsequence found by Hirschberg's divide and conquer:
/// time proportional to the product of the two lengths, memory to their sum (an hour's
/// transcripts, some 10 000 words each, take a few hundred kilobytes). Between two common words,
/// the reference's other words are listed before the other transcript's.
pub fn compare_words(reference: &str, other: &str) -> WordComparison {
    let (a, b) = (words(reference), words(other));
    let (ids_a, ids_b) = interned(&a, &b);
    let mut pairs = Vec::new();
    common_subsequence(&ids_a, &ids_b, 0, 0, &mut pairs);
    let mut differences = Vec::new();
    let (mut i, mut j) = (0, 0);
    for &(pi, pj) in pairs.iter().chain([(a.len(), b.len())].iter()) {
        differences.extend(a[i..pi].iter().map(|w| format!("-{w}")));
        differences.extend(b[j..pj].iter().map(|w| format!("+{w}")));
        (i, j) = (pi + 1, pj + 1);
    }
    let (n, m, common) = (a.len(), b.len(), pairs.len());
    WordComparison {
        reference_words: n,
        words: m,
        common,
        agreement: if n.max(m) == 0 {
            1.0
        } else {
            common as f64 / n.max(m) as f64
        },
        differences,
    }
}

/// The words of both lists as small integers, equal words equal numbers.
fn interned(a: &[String], b: &[String]) -> (Vec<u32>, Vec<u32>) {
    let mut ids = std::collections::HashMap::new();
    let mut id = |w: &String| {
        let next = ids.len() as u32;
        *ids.entry(w.clone()).or_insert(next)
    };
    let ids_a = a.iter().map(&mut id).collect();
    let ids_b = b.iter().map(&mut id).collect();
    (ids_a, ids_b)
}

/// `row[j]` = the length of the longest common subsequence of `a` and `b[..j]` (with
/// `reversed`, of `a` and `b[b.len() - j..]` read from the end), in one row of memory.
fn lcs_row(a: &[u32], b: &[u32], reversed: bool) -> Vec<u32> {
    let at = |s: &[u32], k: usize| if reversed { s[s.len() - 1 - k] } else { s[k] };
    let mut row = vec![0u32; b.len() + 1];
    for i in 0..a.len() {
        let x = at(a, i);
        let mut diagonal = 0;
        for j in 0..b.len() {
            let above = row[j + 1];
            row[j + 1] = if x == at(b, j) {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row
}

/// Appends to `pairs`, in order, the positions `(i + a0, j + b0)` of a longest common
/// subsequence of `a` and `b` (Hirschberg, 1975).
fn common_subsequence(a: &[u32], b: &[u32], a0: usize, b0: usize, pairs: &mut Vec<(usize, usize)>) {
    // Equal ends match as they are; only what lies between needs the search.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    pairs.extend((0..prefix).map(|k| (a0 + k, b0 + k)));
    let (a, b, a0, b0) = (&a[prefix..], &b[prefix..], a0 + prefix, b0 + prefix);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    if a.len() == 1 {
        if let Some(j) = b.iter().position(|&y| y == a[0]) {
            pairs.push((a0, b0 + j));
        }
    } else if !a.is_empty() && !b.is_empty() {
        let mid = a.len() / 2;
        let forward = lcs_row(&a[..mid], b, false);
        let backward = lcs_row(&a[mid..], b, true);
        let split = (0..=b.len())
            .max_by_key(|&j| (forward[j] + backward[b.len() - j], std::cmp::Reverse(j)))
            .expect("at least one split");
        common_subsequence(&a[..mid], &b[..split], a0, b0, pairs);
        common_subsequence(&a[mid..], &b[split..], a0 + mid, b0 + split, pairs);
    }
    let (a_end, b_end) = (a0 + a.len(), b0 + b.len());
    pairs.extend((0..suffix).map(|k| (a_end + k, b_end + k)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_listed_in_order() {
        let c = compare_words("And so, my fellow Americans.", "and so my dear Americans");
        assert_eq!((c.common, c.reference_words, c.words), (4, 5, 5));
        assert_eq!(c.differences, ["-fellow", "+dear"]);
        assert!((c.agreement - 0.8).abs() < 1e-12);
        assert_eq!(compare_words("", "").agreement, 1.0);
        assert_eq!(compare_words("a b", "").agreement, 0.0);
    }

    /// The longest common subsequence's length by the textbook table (all of it in memory).
    fn lcs_by_table(a: &[u32], b: &[u32]) -> usize {
        let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in 0..a.len() {
            for j in 0..b.len() {
                t[i + 1][j + 1] = if a[i] == b[j] {
                    t[i][j] + 1
                } else {
                    t[i][j + 1].max(t[i + 1][j])
                };
            }
        }
        t[a.len()][b.len()]
    }

    #[test]
    fn the_common_words_are_a_longest_common_subsequence() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for case in 0..400 {
            let vocabulary = 2 + case % 6;
            let a: Vec<u32> = (0..next(40)).map(|_| next(vocabulary) as u32).collect();
            let b: Vec<u32> = (0..next(40)).map(|_| next(vocabulary) as u32).collect();
            let mut pairs = Vec::new();
            common_subsequence(&a, &b, 0, 0, &mut pairs);
            assert_eq!(pairs.len(), lcs_by_table(&a, &b), "{a:?} {b:?}");
            for w in pairs.windows(2) {
                assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{pairs:?}");
            }
            assert!(pairs.iter().all(|&(i, j)| a[i] == b[j]));
        }
    }
}
