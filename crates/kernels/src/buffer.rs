//! A zeroed, 64-byte aligned byte buffer for packed weights that asks Linux for 2 MiB pages.
//!
//! Decode streams every weight once per token. With 4 KiB pages that is one TLB miss (a page
//! walk, two-dimensional under a hypervisor) per 4 KiB read, and the hardware prefetchers stop at
//! every 4 KiB boundary; 2 MiB pages remove both. Transparent huge pages are often set to
//! `madvise` only, so a buffer of 2 MiB or more is mapped fresh (never memory the allocator
//! recycled, whose pages are already faulted in small), aligned to 2 MiB and marked
//! `MADV_HUGEPAGE` before its pages are first touched. Where the kernel says no, or off Linux, it
//! is ordinary memory: nothing here changes results, only speed. No locking, no hugetlbfs.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

const HUGE: usize = 2 << 20;

pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
    /// How the memory was obtained, for `Drop`.
    source: Source,
}

enum Source {
    Heap(Layout),
    /// The whole mapping (start, length); `ptr` lies inside it.
    #[cfg(target_os = "linux")]
    Map(*mut u8, usize),
}

// SAFETY: the buffer owns its memory exclusively, like a Vec<u8>.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len >= HUGE {
            if let Some(b) = Self::mapped(len) {
                return b;
            }
        }
        let layout = Layout::from_size_align(len.max(1), 64).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, len, source: Source::Heap(layout) }
    }

    /// A fresh anonymous mapping (zero-filled by the kernel), 2 MiB aligned inside it.
    #[cfg(target_os = "linux")]
    fn mapped(len: usize) -> Option<Self> {
        // One spare huge page of address space to align in; never touched, so never resident.
        let total = len.div_ceil(HUGE) * HUGE + HUGE;
        // SAFETY: a private anonymous mapping of a fresh range; checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as *mut u8;
        let start = base.wrapping_add(base.align_offset(HUGE));
        // Whole huge pages only: a partly used last one would be backed in full (up to 2 MiB of
        // resident memory per matrix for nothing), so the tail keeps small pages.
        // SAFETY: the advised range lies inside the mapping; advice never changes contents, and a
        // refusal (THP off) only leaves the pages small, so its result is ignored.
        unsafe { libc::madvise(start as *mut libc::c_void, len / HUGE * HUGE, libc::MADV_HUGEPAGE) };
        Some(Self { ptr: NonNull::new(start)?, len, source: Source::Map(base, total) })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialized (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match self.source {
            // SAFETY: allocated in `zeroed` with this layout.
            Source::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
            // SAFETY: the mapping made in `mapped`, unmapped once.
            #[cfg(target_os = "linux")]
            Source::Map(base, total) => unsafe {
                libc::munmap(base as *mut libc::c_void, total);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_writable() {
        for len in [0, 1, 100, HUGE - 1, HUGE, 3 * HUGE + 5] {
            let mut b = Buffer::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            if len > 1 {
                b.as_mut_slice()[0] = 3;
                b.as_mut_slice()[len - 1] = 7;
                assert_eq!((b.as_slice()[0], b.as_slice()[len - 1]), (3, 7));
            }
        }
        #[cfg(target_os = "linux")]
        assert_eq!(Buffer::zeroed(HUGE).as_slice().as_ptr() as usize % HUGE, 0);
    }
}
