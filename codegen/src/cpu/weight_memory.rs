//! Memory for packed weights: blocks in transparent huge pages, each shared by many weights.
//!
//! Products stream their weights once per token. With 4 KiB pages every 4 KiB of a strip is a
//! TLB miss and a new page for the hardware prefetchers; huge pages made the mid-size model's
//! prefill take 0.917x the time, and its loading 1.5-3 s longer where the kernel had to
//! assemble them (BENCHMARKS.md). A buffer of its own per weight is in huge
//! pages only over the aligned 2 MiB it covers: none of the 1-2 MB weights of a layer's
//! smaller products (MLA's latent and query projections, the per-head products), which then
//! streamed at about 30 us per megabyte where the large ones reached 19. So weights are placed
//! one after another in blocks of at least [`BLOCK_BYTES`], each aligned to 2 MiB and advised
//! as huge pages as a whole (`MADV_HUGEPAGE`, before anything is written, so that the first
//! writes fault huge pages in), unless `SATURN_HUGE_PAGES=0`. Without huge pages (another OS,
//! THP off) the blocks are ordinary memory.
//!
//! A block is freed when the last weight in it is dropped.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// A huge page.
const HUGE: usize = 2 << 20;
/// The smallest block: weights smaller than what is left of the current block start a new one.
/// Only the pages a weight is written to take memory, so a small model's block costs what its
/// weights take, rounded up to a huge page.
const BLOCK_BYTES: usize = 64 << 20;
/// Each weight starts on a cache line.
const ALIGN_FLOATS: usize = 64 / size_of::<f32>();

/// Zeroed floats from a 2 MiB boundary on, the whole block advised as huge pages.
struct Block {
    /// The allocation (a boxed slice, with room to align `base`).
    alloc: NonNull<[f32]>,
    base: NonNull<f32>,
    len: usize,
}

// SAFETY: a block is plain memory owned by its `Arc`; each `Weights` in it writes only its own
// range, and only while it is not shared (`&mut Weights`).
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

impl Block {
    /// A block of at least `len` floats.
    fn new(len: usize) -> Block {
        let len = (len * size_of::<f32>()).next_multiple_of(HUGE) / size_of::<f32>();
        // Zeroed allocations this large are fresh mappings, cleared by the system page by page
        // as they are first written, so the advice below still applies to every page.
        let alloc = NonNull::from(Box::leak(vec![0f32; len + HUGE / size_of::<f32>()].into_boxed_slice()));
        let start = alloc.as_ptr() as *mut f32;
        let skip = ((start as usize).next_multiple_of(HUGE) - start as usize) / size_of::<f32>();
        // SAFETY: `skip` is less than a huge page's floats, which the allocation has to spare.
        let base = unsafe { NonNull::new_unchecked(start.add(skip)) };
        advise_huge_pages(base.as_ptr(), len);
        Block { alloc, base, len }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: `alloc` came from `Box::leak` in `new` and is released once, here.
        drop(unsafe { Box::from_raw(self.alloc.as_ptr()) });
    }
}

/// Asks Linux to back `len` floats from `base` (2 MiB aligned) with huge pages.
fn advise_huge_pages(base: *mut f32, len: usize) {
    #[cfg(target_os = "linux")]
    if std::env::var_os("SATURN_HUGE_PAGES").is_none_or(|v| v != "0") {
        // SAFETY: the range lies inside one allocation; the advice changes how the kernel
        // backs the pages, never their contents. A refusal (THP off) is harmless.
        unsafe { libc::madvise(base as *mut libc::c_void, len * size_of::<f32>(), libc::MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (base, len);
}

/// One weight's floats in a [`Block`]: zeroed when allocated, written while owned alone,
/// then shared read-only.
pub struct Weights {
    block: Arc<Block>,
    offset: usize,
    len: usize,
}

impl Weights {
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: offset..offset + len lies inside the block (`WeightMemory::alloc`), which
        // this weight keeps alive; no `&mut` to it exists while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.block.base.as_ptr().add(self.offset), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`; ranges of different weights never overlap, so `&mut self`
        // is the only access to this one.
        unsafe { std::slice::from_raw_parts_mut(self.block.base.as_ptr().add(self.offset), self.len) }
    }
}

/// Hands out [`Weights`] one after another in shared blocks.
#[derive(Default)]
pub struct WeightMemory {
    /// The block being filled, and how many of its floats are taken.
    current: Mutex<Option<(Arc<Block>, usize)>>,
}

impl WeightMemory {
    /// `len` zeroed floats, cache-line aligned, in huge pages where the system has them.
    pub fn alloc(&self, len: usize) -> Weights {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = |(block, taken): &(Arc<Block>, usize)| block.len - taken;
        let (block, offset) = match current.as_mut() {
            Some(filling) if room(filling) >= len => {
                let offset = filling.1;
                filling.1 = (offset + len).next_multiple_of(ALIGN_FLOATS).min(filling.0.len);
                (filling.0.clone(), offset)
            }
            _ => {
                let block = Arc::new(Block::new(len.max(BLOCK_BYTES / size_of::<f32>())));
                let taken = len.next_multiple_of(ALIGN_FLOATS).min(block.len);
                // Go on filling whichever block has more room: a weight larger than a block
                // gets one of its own and leaves the current one filling.
                if current.as_ref().is_none_or(|filling| room(filling) < block.len - taken) {
                    *current = Some((block.clone(), taken));
                }
                (block, 0)
            }
        };
        Weights { block, offset, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_zeroed_aligned_and_disjoint() {
        let memory = WeightMemory::default();
        let block_floats = BLOCK_BYTES / size_of::<f32>();
        let sizes = [1, 15, 16, 1000, block_floats - 5000, 4000, block_floats / 2, 3, block_floats + 1, 5];
        let mut weights: Vec<Weights> = sizes.iter().map(|&n| memory.alloc(n)).collect();
        for (i, w) in weights.iter_mut().enumerate() {
            assert_eq!(w.as_slice().len(), sizes[i]);
            assert_eq!(w.as_slice().as_ptr() as usize % 64, 0, "weight {i} is not on a cache line");
            assert!(w.as_slice().iter().all(|&v| v == 0.0), "weight {i} is not zeroed");
            w.as_mut_slice().fill(i as f32 + 1.0);
        }
        for (i, w) in weights.iter().enumerate() {
            assert!(w.as_slice().iter().all(|&v| v == i as f32 + 1.0), "weight {i} was overwritten");
        }
        // The first five fill a block; the sixth does not fit what is left and opens another,
        // which then has more room and is filled on; a weight larger than a block gets one of
        // its own, and the next weight goes on filling the second.
        let block = |i: usize| Arc::as_ptr(&weights[i].block);
        assert!((1..5).all(|i| block(i) == block(0)));
        assert_ne!(block(5), block(0));
        assert!([6, 7, 9].iter().all(|&i| block(i) == block(5)));
        assert!((0..10).filter(|&i| i != 8).all(|i| block(i) != block(8)));
    }
}
