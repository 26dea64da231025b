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
pub fn compare_words(reference: &str, other: &str) -> WordComparison {
    let (a, b) = (words(reference), words(other));
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut differences) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            differences.push(format!("-{}", a[i]));
            i += 1;
        } else {
            differences.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    let common = lcs[0][0] as usize;
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
}
