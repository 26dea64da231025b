//! `compare_words` on an hour's transcripts in bounded memory. A binary of its own: it counts
//! every byte the process allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use amanuensis::transcribe::compare_words;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 20 000 words each (about two hours of speech), one word in 50 changed: the comparison holds
/// a few megabytes at most, where a table of every pair of positions would be 1.6 GB.
#[test]
fn two_hours_of_words_compare_in_a_few_megabytes() {
    const WORDS: usize = 20_000;
    let mut state = 88_172_645_463_325_252u64;
    let vocabulary: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let reference: Vec<&str> = (0..WORDS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            vocabulary[(state % 3000) as usize].as_str()
        })
        .collect();
    let other: Vec<&str> = reference
        .iter()
        .enumerate()
        .map(|(i, w)| if i % 50 == 7 { "changed" } else { w })
        .collect();
    let (reference, other) = (reference.join(" "), other.join(" "));

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let c = compare_words(&reference, &other);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    eprintln!(
        "{} common words of {WORDS}, {} differences, {:.2} MiB at the peak",
        c.common,
        c.differences.len(),
        peak as f64 / (1 << 20) as f64
    );
    assert_eq!(c.common, WORDS - WORDS / 50, "one word in 50 changed");
    assert_eq!(c.differences.len(), 2 * WORDS / 50);
    // The words as strings (twice 20 000 short strings), their numbering and two rows of
    // 20 001 lengths: measured below 8 MiB.
    assert!(peak < 16 << 20, "{peak} bytes at the peak");
}
