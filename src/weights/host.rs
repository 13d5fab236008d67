//! A tensor's values from its file's bytes to the `f32` buffer a model keeps, in one pass and
//! on every core: the element type decoded (and its byte order swapped) while the values are
//! copied, and a PyTorch `Linear` weight (`[out, in]`) transposed to the `[in, out]` Burn
//! multiplies by in the same pass, written straight into its place (a fused q/k/v weight's
//! columns included). Loading ESM-2 3B is 11 GB of such values: read once from the file's
//! map and written once is what reading the file costs, plus one write.

use rayon::prelude::*;

/// Element types a checkpoint stores model weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float {
    F32,
    F16,
    BF16,
    F64,
}

impl Float {
    pub fn size(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
            Float::F64 => 8,
        }
    }
}

/// A tensor's values as its file stores them: contiguous, row-major, borrowed from the map.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub bytes: &'a [u8],
    pub dtype: Float,
    pub big_endian: bool,
}

/// Values read by position, from a file's bytes or from memory.
pub trait Values: Sync {
    fn len(&self) -> usize;
    /// Elements `start..start + out.len()` as `f32`, into `out`.
    fn decode(&self, start: usize, out: &mut [f32]);
}

impl Values for Stored<'_> {
    fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    fn decode(&self, start: usize, out: &mut [f32]) {
        let size = self.dtype.size();
        let bytes = &self.bytes[start * size..(start + out.len()) * size];
        // One loop per element type and byte order, so each compiles to a plain copy or a
        // vectorised conversion (a match per element would not).
        match (self.dtype, self.big_endian) {
            (Float::F32, false) => conv(bytes, out, f32::from_le_bytes),
            (Float::F32, true) => conv(bytes, out, f32::from_be_bytes),
            (Float::F16, false) => conv(bytes, out, |b| half::f16::from_le_bytes(b).to_f32()),
            (Float::F16, true) => conv(bytes, out, |b| half::f16::from_be_bytes(b).to_f32()),
            (Float::BF16, false) => conv(bytes, out, |b| half::bf16::from_le_bytes(b).to_f32()),
            (Float::BF16, true) => conv(bytes, out, |b| half::bf16::from_be_bytes(b).to_f32()),
            (Float::F64, false) => conv(bytes, out, |b| f64::from_le_bytes(b) as f32),
            (Float::F64, true) => conv(bytes, out, |b| f64::from_be_bytes(b) as f32),
        }
    }
}

fn conv<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(N)) {
        *o = f(b.try_into().expect("chunks of N bytes"));
    }
}

impl Values for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }

    fn decode(&self, start: usize, out: &mut [f32]) {
        out.copy_from_slice(&self[start..start + out.len()]);
    }
}

/// Elements per task when decoding without a transpose: large enough that scheduling costs
/// nothing, small enough that both cores share even a 1 MB tensor.
const CHUNK: usize = 1 << 16;

/// A zeroed buffer of `n` values for a weight. On Linux a large one is backed by 2 MiB pages
/// where the kernel allows it (transparent huge pages, asked for with `madvise`; the default
/// `madvise` mode gives them only when asked): writing 11 GB of fresh 4 KiB pages took 2.8
/// million page faults, a fifth of loading the 3B model, and the model's matmuls then walk
/// fewer TLB entries too.
pub fn buffer(n: usize) -> Vec<f32> {
    let values = vec![0f32; n];
    advise_huge(&values[..]);
    values
}

/// `values`' spare capacity asked to be backed by 2 MiB pages, as [`buffer`]'s (where the
/// allocator reuses memory already faulted in, the advice changes nothing there): for the CPU
/// kernels' large fresh outputs, whose first writes otherwise take a page fault per 4 KiB
/// (ESM-2 650M in bf16: page faults and the kernel's page zeroing were a tenth of the time,
/// for activations of 9–34 MB allocated and freed at every layer).
pub fn advise_huge_capacity(values: &mut Vec<f32>) {
    advise_huge(values.spare_capacity_mut());
}

/// Below this a buffer stays on small pages (the allocator's own, shared with other objects).
#[cfg(target_os = "linux")]
const HUGE_MIN_BYTES: usize = 4 << 20;

/// The whole 2 MiB pages inside `region` advised to be huge pages (Linux; elsewhere nothing):
/// for a large buffer just allocated and not yet written, such as a model's weights.
pub fn advise_huge<T>(region: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (start, bytes) = (region.as_ptr() as usize, std::mem::size_of_val(region));
        let end = start + bytes;
        // Whole 2 MiB pages inside the buffer only: the advice must not reach the allocator's
        // neighbouring memory.
        let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if bytes < HUGE_MIN_BYTES || first >= last {
            return;
        }
        // SAFETY: `first..last` lies inside `region`, which this process owns; the advice
        // changes how its pages are backed, never their contents, and its failure (no THP in
        // this kernel) changes nothing.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = region;
}

/// Ask the kernel to start reading `bytes` (a tensor in a file's map) into the page cache now,
/// in large requests, rather than page by page as the conversion first touches them: from a
/// cold cache, the loaders call it for the next layer's weights while they convert this one's,
/// so the disk and the cores work at the same time. Advice only: it changes no value, and
/// where it fails the pages are read on first touch as before.
pub fn will_need(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: `page..end` lies in the mapping `bytes` borrows from (mappings are whole
        // pages, so the page holding its first byte is part of it); MADV_WILLNEED only starts
        // reading those pages, and a failure is harmless.
        let page = page_size();
        let start = bytes.as_ptr() as usize;
        let aligned = start / page * page;
        let len = start + bytes.len() - aligned;
        if !bytes.is_empty() {
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_WILLNEED);
            }
        }
    }
}

/// `bytes` (a tensor in a file's map) is converted and will not be read again: its whole
/// pages leave this process's page tables. They stay in the page cache, for the next load,
/// but no longer count as this process's memory, and the kernel can reclaim them as plain
/// cache while the model (as large as the file, in f32) takes their place: mapped pages are
/// reclaimed last, and without this a 3B load held 11 GB of them until its map closed.
pub fn done_with(bytes: &[u8]) {
    #[cfg(unix)]
    {
        let page = page_size();
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if start < end {
            // SAFETY: `start..end` holds only whole pages of `bytes`, a read-only shared map
            // of a file: MADV_DONTNEED drops their page-table entries, and a later read
            // faults the same bytes back in from the page cache or the file. Pages shared
            // with a neighbouring tensor are left alone.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The system's page size (16 or 64 KiB on some ARM systems, where 4 KiB-aligned advice
/// would be refused), 4 KiB if it cannot be read.
#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// All of `src` as `f32`, decoded in parallel.
pub fn decode_all(src: &(impl Values + ?Sized)) -> Vec<f32> {
    let mut out = buffer(src.len());
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| src.decode(i * CHUNK, chunk));
    out
}

/// Side of the square tiles a transpose moves: 64 `f32` rows of 256 bytes are read and 64
/// columns written per tile (16 KiB, in the L1 cache), so both sides touch whole cache lines;
/// an element-by-element transpose writes every value to a different line, and took a third
/// of loading the 3B model.
const TILE: usize = 64;

/// Where a transpose writes: rows of `stride` values, starting at column `col`.
pub struct Dest<'a> {
    pub values: &'a mut [f32],
    pub stride: usize,
    pub col: usize,
}

/// Rows `row0..row0 + rows` of the `… × cols` row-major matrix `src`, transposed (`cols ×
/// rows`) into `dst`: source column `c` becomes row `c` of `dst`, at `dst.col..dst.col +
/// rows`. Bands of [`TILE`] destination rows run in parallel; within a band, each tile is
/// decoded from the source's rows into a small buffer first (sequential reads, vectorised
/// conversion) and then written out column by column.
///
/// Panics when `src` or `dst` is too small for the shapes given: callers check shapes
/// against the file before any value is read.
pub fn transpose_into(
    src: &(impl Values + ?Sized),
    row0: usize,
    rows: usize,
    cols: usize,
    dst: Dest<'_>,
) {
    let Dest {
        values,
        stride,
        col,
    } = dst;
    assert!(
        (row0 + rows) * cols <= src.len() && col + rows <= stride && cols * stride <= values.len(),
        "transpose of {rows}x{cols} from row {row0} of {} values into {} values of stride \
         {stride} at column {col}",
        src.len(),
        values.len()
    );
    if rows == 0 || cols == 0 {
        return;
    }
    values[..cols * stride]
        .par_chunks_mut(TILE * stride)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TILE;
            let width = (cols - c0).min(TILE);
            let mut tile = [0f32; TILE * TILE];
            for r0 in (0..rows).step_by(TILE) {
                let height = (rows - r0).min(TILE);
                for r in 0..height {
                    let at = (row0 + r0 + r) * cols + c0;
                    src.decode(at, &mut tile[r * TILE..r * TILE + width]);
                }
                for c in 0..width {
                    let line = &mut out[c * stride + col + r0..c * stride + col + r0 + height];
                    for (r, v) in line.iter_mut().enumerate() {
                        *v = tile[r * TILE + c];
                    }
                }
            }
        });
}

/// `rows × cols` row-major to a new `cols × rows` matrix.
pub fn transposed(src: &(impl Values + ?Sized), rows: usize, cols: usize) -> Vec<f32> {
    let mut out = buffer(rows * cols);
    transpose_into(
        src,
        0,
        rows,
        cols,
        Dest {
            values: &mut out,
            stride: rows,
            col: 0,
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect()
    }

    #[test]
    fn tiled_transpose_matches_the_definition() {
        for (rows, cols) in [
            (1, 1),
            (3, 70),
            (65, 33),
            (64, 64),
            (0, 5),
            (5, 0),
            (100, 31),
        ] {
            let values = matrix(rows, cols);
            let t = transposed(values.as_slice(), rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], values[r * cols + c], "{rows}x{cols}");
                }
            }
        }
    }

    #[test]
    fn transposes_rows_into_columns_of_a_wider_matrix() {
        // Rows 2..7 of a 9 × 40 matrix into columns 3..8 of a 40 × 11 one; the rest untouched.
        let (rows, cols, stride, col) = (5, 40, 11, 3);
        let values = matrix(9, cols);
        let mut out = vec![f32::NAN; cols * stride];
        transpose_into(
            values.as_slice(),
            2,
            rows,
            cols,
            Dest {
                values: &mut out,
                stride,
                col,
            },
        );
        for c in 0..cols {
            for j in 0..stride {
                let v = out[c * stride + j];
                if (col..col + rows).contains(&j) {
                    assert_eq!(v, values[(2 + j - col) * cols + c]);
                } else {
                    assert!(v.is_nan(), "column {j} of row {c} written");
                }
            }
        }
    }

    #[test]
    fn every_stored_type_decodes_like_its_definition() {
        let want = [1.5f32, -2.25, 0.0, 65504.0, 3.0e-3];
        let cases: Vec<(Float, bool, Vec<u8>)> = vec![
            (
                Float::F32,
                false,
                want.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Float::F32,
                true,
                want.iter().flat_map(|v| v.to_be_bytes()).collect(),
            ),
            (
                Float::F64,
                false,
                want.iter()
                    .flat_map(|&v| (v as f64).to_le_bytes())
                    .collect(),
            ),
            (
                Float::F64,
                true,
                want.iter()
                    .flat_map(|&v| (v as f64).to_be_bytes())
                    .collect(),
            ),
            (
                Float::F16,
                false,
                want.iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            (
                Float::BF16,
                true,
                want.iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_be_bytes())
                    .collect(),
            ),
        ];
        for (dtype, big_endian, bytes) in cases {
            let stored = Stored {
                bytes: &bytes,
                dtype,
                big_endian,
            };
            let got = decode_all(&stored);
            for (g, w) in got.iter().zip(want) {
                let exact = match dtype {
                    Float::F16 => half::f16::from_f32(w).to_f32(),
                    Float::BF16 => half::bf16::from_f32(w).to_f32(),
                    _ => w,
                };
                assert_eq!(*g, exact, "{dtype:?} big_endian={big_endian}");
            }
        }
    }

    #[test]
    fn advice_on_a_map_leaves_its_bytes_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a private temporary file nothing else writes.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        // Unaligned ends: only whole pages inside are let go; the neighbours are untouched.
        let part = &map[1000..250_001];
        will_need(part);
        done_with(part);
        assert_eq!(&map[..], &bytes[..]);
    }

    #[test]
    fn decoding_in_parallel_keeps_the_order() {
        // Several chunks, the last one short.
        let values = matrix(3, CHUNK + 17);
        assert_eq!(decode_all(values.as_slice()), values);
    }
}
