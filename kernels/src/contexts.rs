//! How many hardware contexts an NPU holds at once, and which to give up for a new one.
//!
//! Every xclbin runs in a hardware context of its own, and the amdxdna driver rations them
//! per device: 6 on XDNA1 (Phoenix, Hawk Point), 16 on XDNA2 (Strix, Strix Halo, Krackan)
//! (the driver's `hwctx_limit`, reported as `npu_task_max`; the values mlir-aie's
//! `CachedXRTRuntime` uses, `python/utils/hostruntime/xrtruntime/hostruntime.py`). Beyond
//! that, creating one fails (`MGMT_ERT_NOAVAIL`), and contexts held by other processes
//! count against the same budget. A Whisper plan needs 8 to 10 kernels, one xclbin each,
//! so the device keeps the most recently used contexts and gives up the oldest for a new
//! one. On XDNA1, mlir-aie found that giving up a single context leaves the firmware unable
//! to run the next new one (`EXEC_CMD` fails with ENOENT), so there all are given up at
//! once. A Whisper layer cycles through 6 kernels (one GEMM for the four projections, the
//! three of attention, the two FFN layers), which fit XDNA1's budget.

/// How many contexts to hold at once and how to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimit {
    /// Contexts held at once.
    pub max: usize,
    /// Give up every context when full, rather than the least recently used one.
    pub drain_when_full: bool,
}

/// The environment variable that sets [`ContextLimit::max`] (a share of the device's budget
/// when other processes use the NPU too).
pub const CONTEXTS_VAR: &str = "AMANUENSIS_NPU_CONTEXTS";

impl ContextLimit {
    /// The limit for a device XRT names `name` (`RyzenAI-npu1`, `NPU Strix`, ...): XDNA2's
    /// names give 16 and single-context eviction; anything else XDNA1's conservative 6 with
    /// whole-cache eviction.
    pub fn for_device(name: &str) -> ContextLimit {
        ContextLimit::for_family(crate::hw::DeviceFamily::from_device_name(name))
    }

    /// The limit of `family`'s devices.
    pub fn for_family(family: crate::hw::DeviceFamily) -> ContextLimit {
        if family == crate::hw::DeviceFamily::Xdna2 {
            ContextLimit {
                max: 16,
                drain_when_full: false,
            }
        } else {
            ContextLimit {
                max: 6,
                drain_when_full: true,
            }
        }
    }

    /// [`ContextLimit::for_device`] with `max` from `setting` ([`CONTEXTS_VAR`]'s value)
    /// when given: a positive integer, or an error that says so.
    pub fn with_setting(self, setting: Option<&str>) -> Result<ContextLimit, String> {
        match setting {
            None => Ok(self),
            Some(s) => match s.trim().parse::<usize>() {
                Ok(max) if max >= 1 => Ok(ContextLimit { max, ..self }),
                _ => Err(format!(
                    "{CONTEXTS_VAR}={s:?}: give the number of NPU hardware contexts to hold at \
                     once, at least 1 (the device's budget is {})",
                    self.max
                )),
            },
        }
    }
}

/// Values by key, the least recently used first, at most [`ContextLimit::max`] of them.
#[derive(Debug)]
pub struct Lru<K, V> {
    limit: ContextLimit,
    entries: Vec<(K, V)>,
    made: u64,
}

impl<K: PartialEq, V> Lru<K, V> {
    /// An empty cache.
    pub fn new(limit: ContextLimit) -> Lru<K, V> {
        Lru {
            limit,
            entries: Vec::new(),
            made: 0,
        }
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&mut V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(i);
        self.entries.push(entry);
        self.entries.last_mut().map(|(_, v)| v)
    }

    /// Gives up what must go before one more value can be held: nothing while there is
    /// room, else every value or the least recently used one, as the limit says. The
    /// values are returned, for the caller to drop.
    pub fn make_room(&mut self) -> Vec<V> {
        if self.entries.len() < self.limit.max {
            return Vec::new();
        }
        if self.limit.drain_when_full {
            self.entries.drain(..).map(|(_, v)| v).collect()
        } else {
            self.evict_oldest().into_iter().collect()
        }
    }

    /// Gives up the least recently used value (after the device refused a new context
    /// because others hold the rest of its budget).
    pub fn evict_oldest(&mut self) -> Option<V> {
        (!self.entries.is_empty()).then(|| self.entries.remove(0).1)
    }

    /// Holds `value` for `key` as the most recently used. Call [`Lru::make_room`] first.
    pub fn insert(&mut self, key: K, value: V) {
        debug_assert!(self.entries.len() < self.limit.max);
        self.made += 1;
        self.entries.push((key, value));
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Values inserted since the cache was made (contexts created).
    pub fn made(&self) -> u64 {
        self.made
    }
}

/// Contexts created in each of `windows` passes over `order` (the kernels a window dispatches
/// to, in order, each named by the context it runs in), starting with none held, under
/// `limit`: what [`crate::npu::Npu`] does with the same cache, for a prediction.
pub fn created_per_window<K: PartialEq + Clone>(
    order: &[K],
    limit: ContextLimit,
    windows: usize,
) -> Vec<u64> {
    let mut cache: Lru<K, ()> = Lru::new(limit);
    let mut out = Vec::with_capacity(windows);
    for _ in 0..windows {
        let before = cache.made();
        for key in order {
            if cache.get(key).is_none() {
                drop(cache.make_room());
                cache.insert(key.clone(), ());
            }
        }
        out.push(cache.made() - before);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limit: ContextLimit, order: &[u32]) -> (u64, usize) {
        let mut lru = Lru::new(limit);
        for &k in order {
            if lru.get(&k).is_none() {
                lru.make_room();
                lru.insert(k, ());
            }
            assert!(lru.len() <= limit.max);
        }
        (lru.made(), lru.len())
    }

    /// A window of a Whisper plan of `layers` layers: the two convolutions, then per layer
    /// the projection GEMM (Q, K, V), attention's three kernels per head, the projection
    /// GEMM again (output), the two FFN GEMMs.
    fn window(layers: usize) -> Vec<u32> {
        window_with_k(layers, 2)
    }

    /// [`window`] with the K projection's kernel `k`.
    fn window_with_k(layers: usize, k: u32) -> Vec<u32> {
        let mut order = vec![0, 1];
        for _ in 0..layers {
            order.extend([2, k, 2]);
            for _ in 0..6 {
                order.extend([3, 4, 5]);
            }
            order.extend([2, 6, 7]);
        }
        order
    }

    #[test]
    fn whisper_layers_stay_resident_on_xdna1() {
        let xdna1 = ContextLimit::for_device("RyzenAI-npu1");
        assert_eq!(
            xdna1,
            ContextLimit {
                max: 6,
                drain_when_full: true
            }
        );
        // The first layer fills the cache and drains it once; from the third layer on the six
        // kernels of a layer are all resident: no layer after the second creates a context.
        let (made, held) = run(xdna1, &window(2));
        assert_eq!((made, held), (12, 6));
        assert_eq!(run(xdna1, &window(32)).0, made);
        // One more distinct kernel a layer (a K projection without its zero bias) would
        // recreate contexts in every layer.
        let (made, _) = run(xdna1, &window_with_k(32, 8));
        assert!(made > 32 * 6, "{made}");
    }

    #[test]
    fn xdna2_holds_every_kernel_and_evicts_one_at_a_time() {
        let xdna2 = ContextLimit::for_device("NPU Strix");
        assert_eq!((xdna2.max, xdna2.drain_when_full), (16, false));
        assert_eq!(run(xdna2, &window(32)), (8, 8));
        let small = ContextLimit { max: 2, ..xdna2 };
        let mut lru = Lru::new(small);
        for k in [1, 2] {
            lru.insert(k, k);
        }
        assert_eq!(lru.get(&1), Some(&mut 1));
        assert_eq!(lru.make_room(), vec![2]);
        lru.insert(3, 3);
        assert_eq!(lru.evict_oldest(), Some(1));
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn the_setting_overrides_the_budget_or_says_what_is_wrong() {
        let base = ContextLimit::for_device("RyzenAI-npu1");
        assert_eq!(base.with_setting(None), Ok(base));
        assert_eq!(base.with_setting(Some(" 3 ")).unwrap().max, 3);
        for bad in ["0", "-1", "six", ""] {
            let err = base.with_setting(Some(bad)).unwrap_err();
            assert!(
                err.contains(CONTEXTS_VAR) && err.contains("at least 1"),
                "{err}"
            );
        }
    }
}
