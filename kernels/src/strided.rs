//! Attention's operands as a graph holds them: `[heads, rows, cols]` at any strides.
//!
//! A Whisper layer's projections write `[positions, heads * 64]`; attention reads them per
//! head, `[heads, positions, 64]`, and its output goes back to `[positions, heads * 64]`.
//! Rather than four permuting copies of the layer's activations a call, a device that reads
//! strided operands takes them where they are ([`crate::device::Device::attention_strided`]).

use std::borrow::Cow;
use std::marker::PhantomData;

use crate::device::DeviceError;

/// The offset of the last value of a view of `shape` at `strides` (none when it is empty).
fn last_offset(shape: [usize; 3], strides: [usize; 3]) -> Option<usize> {
    if shape.contains(&0) {
        return None;
    }
    Some((0..3).map(|i| (shape[i] - 1) * strides[i]).sum())
}

/// Row-major strides of `shape`.
fn row_major(shape: [usize; 3]) -> [usize; 3] {
    [shape[1] * shape[2], shape[2], 1]
}

fn check_span(
    what: &str,
    len: usize,
    shape: [usize; 3],
    strides: [usize; 3],
) -> Result<(), DeviceError> {
    match last_offset(shape, strides) {
        Some(last) if last >= len => Err(DeviceError::Shape(format!(
            "{what} of shape {shape:?} at strides {strides:?} reaches value {last}, past its {len} values"
        ))),
        _ => Ok(()),
    }
}

/// A read-only `[heads, rows, cols]` view of a slice: value `(h, r, c)` at
/// `h * strides[0] + r * strides[1] + c * strides[2]`.
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a> {
    data: &'a [f32],
    shape: [usize; 3],
    strides: [usize; 3],
}

impl<'a> Heads<'a> {
    /// A view of `data` of `shape` at `strides`; an error if it reaches past `data`.
    pub fn new(
        data: &'a [f32],
        shape: [usize; 3],
        strides: [usize; 3],
    ) -> Result<Self, DeviceError> {
        check_span("a view", data.len(), shape, strides)?;
        Ok(Heads {
            data,
            shape,
            strides,
        })
    }

    /// `data` as a row-major `[heads, rows, cols]` array; an error unless it holds exactly
    /// that many values.
    pub fn contiguous(data: &'a [f32], shape: [usize; 3]) -> Result<Self, DeviceError> {
        let want = shape.iter().product::<usize>();
        if data.len() != want {
            return Err(DeviceError::Shape(format!(
                "an array of shape {shape:?} holds {want} values, given {}",
                data.len()
            )));
        }
        Ok(Heads {
            data,
            shape,
            strides: row_major(shape),
        })
    }

    /// `[heads, rows, cols]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The strides, in values.
    pub fn strides(&self) -> [usize; 3] {
        self.strides
    }

    /// Whether the view is the row-major array of its shape, from the slice's start.
    pub fn is_row_major(&self) -> bool {
        let rm = row_major(self.shape);
        (0..3).all(|i| self.shape[i] <= 1 || self.strides[i] == rm[i])
    }

    /// Value `(h, r, c)`.
    #[inline(always)]
    pub fn get(&self, h: usize, r: usize, c: usize) -> f32 {
        self.data[h * self.strides[0] + r * self.strides[1] + c * self.strides[2]]
    }

    /// Row `r` of head `h` as a slice, when its values are adjacent.
    #[inline(always)]
    pub fn row(&self, h: usize, r: usize) -> Option<&'a [f32]> {
        (self.strides[2] == 1 || self.shape[2] <= 1)
            .then(|| &self.data[h * self.strides[0] + r * self.strides[1]..][..self.shape[2]])
    }

    /// Row `r` of head `h` into `out` (`cols` values).
    #[inline(always)]
    pub fn read_row(&self, h: usize, r: usize, out: &mut [f32]) {
        match self.row(h, r) {
            Some(row) => out.copy_from_slice(row),
            None => {
                for (c, x) in out.iter_mut().enumerate() {
                    *x = self.get(h, r, c);
                }
            }
        }
    }

    /// Rows `r0 .. r0 + rows` of head `h`, row-major: borrowed when laid out so already,
    /// else copied into `buf`.
    pub fn rows<'b>(
        &'b self,
        h: usize,
        r0: usize,
        rows: usize,
        buf: &'b mut Vec<f32>,
    ) -> &'b [f32] {
        let cols = self.shape[2];
        if rows == 0 || cols == 0 {
            return &[];
        }
        if (self.strides[2] == 1 || cols == 1) && (self.strides[1] == cols || rows == 1) {
            return &self.data[h * self.strides[0] + r0 * self.strides[1]..][..rows * cols];
        }
        buf.clear();
        buf.resize(rows * cols, 0.0);
        for (r, out) in buf.chunks_exact_mut(cols).enumerate() {
            self.read_row(h, r0 + r, out);
        }
        buf
    }

    /// The whole view, row-major: borrowed when laid out so already, else copied.
    pub fn to_row_major(&self) -> Cow<'a, [f32]> {
        let len = self.shape.iter().product::<usize>();
        if len == 0 {
            return Cow::Borrowed(&[]);
        }
        if self.is_row_major() {
            return Cow::Borrowed(&self.data[..len]);
        }
        let [heads, rows, cols] = self.shape;
        let mut out = vec![0f32; len];
        for h in 0..heads {
            for (r, row) in out[h * rows * cols..][..rows * cols]
                .chunks_exact_mut(cols)
                .enumerate()
            {
                self.read_row(h, r, row);
            }
        }
        Cow::Owned(out)
    }
}

/// A writable `[heads, rows, cols]` view of a slice, whose positions are distinct (checked
/// when it is made), so that tasks writing distinct rows never write the same value.
#[derive(Debug)]
pub struct HeadsMut<'a> {
    ptr: *mut f32,
    len: usize,
    shape: [usize; 3],
    strides: [usize; 3],
    _data: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `HeadsMut` is a `&mut [f32]` with a layout: it is sent as that slice would be.
// Shared between threads it only writes through `write_row`, whose callers keep to distinct
// rows (see there).
unsafe impl Send for HeadsMut<'_> {}
// SAFETY: as above.
unsafe impl Sync for HeadsMut<'_> {}

impl<'a> HeadsMut<'a> {
    /// A writable view of `data` of `shape` at `strides`; an error if it reaches past `data`
    /// or if two of its positions are the same value (the axes of more than one index,
    /// ordered by stride, must each step over the whole extent of the smaller ones).
    pub fn new(
        data: &'a mut [f32],
        shape: [usize; 3],
        strides: [usize; 3],
    ) -> Result<Self, DeviceError> {
        check_span("an output view", data.len(), shape, strides)?;
        let mut axes: Vec<(usize, usize)> = (0..3)
            .filter(|&i| shape[i] > 1)
            .map(|i| (strides[i], shape[i]))
            .collect();
        axes.sort_unstable();
        let mut extent = 1;
        for (stride, size) in axes {
            if stride < extent {
                return Err(DeviceError::Shape(format!(
                    "an output of shape {shape:?} at strides {strides:?} writes some values twice"
                )));
            }
            extent = stride * size;
        }
        Ok(HeadsMut {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            shape,
            strides,
            _data: PhantomData,
        })
    }

    /// `data` as a row-major `[heads, rows, cols]` array; an error unless it holds exactly
    /// that many values.
    pub fn contiguous(data: &'a mut [f32], shape: [usize; 3]) -> Result<Self, DeviceError> {
        let want = shape.iter().product::<usize>();
        if data.len() != want {
            return Err(DeviceError::Shape(format!(
                "an output of shape {shape:?} holds {want} values, given {}",
                data.len()
            )));
        }
        Self::new(data, shape, row_major(shape))
    }

    /// `[heads, rows, cols]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Writes `values` (`cols` of them) as row `r` of head `h`.
    ///
    /// # Safety
    /// No other thread writes row `r` of head `h` at the same time (distinct rows are
    /// distinct values: checked in [`HeadsMut::new`]).
    #[inline(always)]
    pub(crate) unsafe fn write_row(&self, h: usize, r: usize, values: &[f32]) {
        let [heads, rows, cols] = self.shape;
        assert!(
            h < heads && r < rows && values.len() == cols,
            "a row of the view"
        );
        let base = h * self.strides[0] + r * self.strides[1];
        // In bounds: `base + (cols - 1) * strides[2]` is at most the view's last offset,
        // checked against `len` when the view was made.
        debug_assert!(cols == 0 || base + (cols - 1) * self.strides[2] < self.len);
        for (c, x) in values.iter().enumerate() {
            // SAFETY: in bounds (above); the caller keeps other threads off this row.
            unsafe { *self.ptr.add(base + c * self.strides[2]) = *x };
        }
    }

    /// Writes the row-major `values` of the whole view.
    pub fn write_all(&mut self, values: &[f32]) {
        let [heads, rows, cols] = self.shape;
        assert_eq!(values.len(), heads * rows * cols, "the view's values");
        if cols == 0 {
            return;
        }
        for (i, row) in values.chunks_exact(cols).enumerate() {
            // SAFETY: `&mut self`: no other writer.
            unsafe { self.write_row(i / rows, i % rows, row) };
        }
    }
}

/// [`crate::device::Device::attention_heads`]'s row-major operands (`[heads, m, d]` and so on)
/// as views, through the device's [`crate::device::Device::attention_strided`]: for a device
/// whose strided attention is its own.
pub fn heads_as_strided<D: crate::device::Device + ?Sized>(
    device: &D,
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    dims: crate::device::AttentionDims,
    heads: usize,
    out: &mut [f32],
) -> Result<(), DeviceError> {
    let crate::device::AttentionDims { m, d, n, dv } = dims;
    device.attention_strided(
        Heads::contiguous(q, [heads, m, d])?,
        Heads::contiguous(kt, [heads, d, n])?,
        Heads::contiguous(v, [heads, n, dv])?,
        &mut HeadsMut::contiguous(out, [heads, m, dv])?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permuted_view_reads_and_writes_the_permuted_values() {
        // [positions=5, heads=3, d=4] read as [heads, positions, d].
        let data: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let v = Heads::new(&data, [3, 5, 4], [4, 12, 1]).unwrap();
        assert!(!v.is_row_major());
        assert_eq!(v.get(2, 1, 3), data[12 + 8 + 3]);
        let rm = v.to_row_major();
        for h in 0..3 {
            for p in 0..5 {
                for c in 0..4 {
                    assert_eq!(rm[(h * 5 + p) * 4 + c], data[p * 12 + h * 4 + c]);
                }
            }
        }
        let mut buf = Vec::new();
        assert_eq!(v.rows(1, 2, 2, &mut buf), &rm[(5 + 2) * 4..][..8]);
        let mut out = vec![0f32; 60];
        HeadsMut::new(&mut out, [3, 5, 4], [4, 12, 1])
            .unwrap()
            .write_all(&rm);
        assert_eq!(out, data);
        // Row-major views are borrowed.
        let c = Heads::contiguous(&data, [3, 5, 4]).unwrap();
        assert!(matches!(c.to_row_major(), Cow::Borrowed(_)));
        let mut buf = Vec::new();
        assert_eq!(c.rows(1, 1, 3, &mut buf).as_ptr(), data[24..].as_ptr());
    }

    #[test]
    fn views_past_their_data_or_writing_twice_are_refused() {
        let data = vec![0f32; 59];
        let e = Heads::new(&data, [3, 5, 4], [4, 12, 1]).unwrap_err();
        assert!(e.to_string().contains("past its 59 values"), "{e}");
        let mut out = vec![0f32; 60];
        let e = HeadsMut::new(&mut out, [3, 5, 4], [4, 4, 1]).unwrap_err();
        assert!(e.to_string().contains("writes some values twice"), "{e}");
        assert!(Heads::contiguous(&data, [3, 5, 4]).is_err());
        // Empty views take no room.
        assert!(Heads::new(&[], [0, 5, 4], [20, 4, 1]).is_ok());
    }

    /// Attention read from and written to a layer's `[positions, heads * d]` layout gives the
    /// bits of the same attention on row-major copies, on the CPU and on the emulator (each
    /// device's own path for strided operands against its row-major path).
    #[test]
    fn strided_attention_is_the_row_major_attention_to_the_bit() {
        use crate::cpu::CpuDevice;
        use crate::device::{AttentionDims, Device};
        use crate::emulator::Emulator;
        let (heads, m, d, n, dv) = (3, 101, 8, 77, 8);
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 2003.0 - 0.5) * 2.0)
                .collect()
        };
        // As projections write them: [positions, heads, d].
        let (q, k, v) = (
            values(m * heads * d, 1),
            values(n * heads * d, 2),
            values(n * heads * dv, 3),
        );
        let q_view = Heads::new(&q, [heads, m, d], [d, heads * d, 1]).unwrap();
        // K^T [heads, d, n] read from K [n, heads, d].
        let kt_view = Heads::new(&k, [heads, d, n], [d, 1, heads * d]).unwrap();
        let v_view = Heads::new(&v, [heads, n, dv], [dv, heads * dv, 1]).unwrap();
        let dims = AttentionDims { m, d, n, dv };
        let devices: [Box<dyn Device>; 2] = [
            Box::new(CpuDevice::new()),
            Box::new(Emulator::new(crate::gemm::GemmContract::XDNA1)),
        ];
        for device in devices {
            let mut expected = vec![0f32; heads * m * dv];
            device
                .attention_heads(
                    &q_view.to_row_major(),
                    &kt_view.to_row_major(),
                    &v_view.to_row_major(),
                    dims,
                    heads,
                    &mut expected,
                )
                .unwrap();
            // The output in [positions, heads, dv].
            let mut out = vec![f32::NAN; m * heads * dv];
            let mut o = HeadsMut::new(&mut out, [heads, m, dv], [dv, heads * dv, 1]).unwrap();
            device
                .attention_strided(q_view, kt_view, v_view, &mut o)
                .unwrap();
            for h in 0..heads {
                for r in 0..m {
                    for c in 0..dv {
                        let (got, want) = (
                            out[(r * heads + h) * dv + c],
                            expected[(h * m + r) * dv + c],
                        );
                        assert!(
                            got.to_bits() == want.to_bits(),
                            "{}: ({h}, {r}, {c}) {got} != {want}",
                            device.prefix()
                        );
                    }
                }
            }
        }
    }
}
