//! The plugin's global allocator on wasm: free lists by size class in front
//! of the system allocator.
//!
//! Why hand-written: every hook call allocates. The host copies each string
//! and list argument into memory the guest allocates (one `cabi_realloc`
//! each) and the guest frees them when the call ends. With the target's
//! default allocator (wasi-libc's dlmalloc behind Rust's `System`) that was
//! about 2 500 of the 11 700 guest instructions of a warm `request` call of
//! the `routes` plugin, measured with callgrind on
//! `benches/request_hook.rs`. Talc, the wasm allocator crate, made it
//! worse (12 300; both measured when plugins built at `opt-level = "s"`). A free-list pop and
//! push are a few instructions; with this allocator the guest's part fell
//! to 9 800.
//!
//! Blocks of up to [`MAX_SMALL`] bytes (alignment up to 16) come in powers
//! of two from 16 bytes, carved from chunks the system allocator hands out
//! and kept on a free list per size once freed: never given back, so what
//! a class holds is its own peak. Anything larger or more aligned goes to
//! the system allocator as before. A failed chunk allocation is a failed
//! allocation, so a plugin that eats memory still hits the host's limit.

// An allocator is raw memory handed out by hand; each block says why it
// holds.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest block: 16 bytes (holds the free list's link, and keeps
/// every block 16-aligned).
const MIN_SHIFT: u32 = 4;
/// Size classes: 16, 32, … 2048 bytes.
const CLASSES: usize = 8;
/// The largest block served from a class.
const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// What is taken from the system allocator at a time; its unused tail is
/// at most one block short of `MAX_SMALL`.
const CHUNK: usize = 32 * 1024;
const ALIGN: usize = 1 << MIN_SHIFT;

// Outside tests this module is compiled only into a wasm plugin (see
// `lib.rs`), where it is the allocator.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: SizeClasses = SizeClasses::new();

/// Size-class free lists over `System`.
pub(crate) struct SizeClasses {
    state: UnsafeCell<State>,
}

struct State {
    /// Head of each class's free list; a free block's first word links to
    /// the next.
    free: [*mut u8; CLASSES],
    /// The current chunk's unused part: `[next, end)`.
    next: *mut u8,
    end: *mut u8,
}

// SAFETY: the allocator is installed only on wasm without the `atomics`
// target feature, where a module has one thread; the native unit tests use
// their own instance from one thread at a time.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// An empty allocator (no memory taken until the first allocation).
    pub(crate) const fn new() -> Self {
        Self {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The class of a layout, or `None` for the system allocator.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(ALIGN);
    Some((size.next_power_of_two().trailing_zeros() - MIN_SHIFT) as usize)
}

impl State {
    /// A fresh block of class `c` from the current chunk, taking a new
    /// chunk when it is used up.
    unsafe fn carve(&mut self, c: usize) -> *mut u8 {
        let size = ALIGN << c;
        if (self.end as usize) - (self.next as usize) < size {
            // SAFETY: CHUNK is non-zero and ALIGN a power of two.
            let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, ALIGN)) };
            if chunk.is_null() {
                return chunk;
            }
            self.next = chunk;
            // SAFETY: within (one past the end of) the chunk just allocated.
            self.end = unsafe { chunk.add(CHUNK) };
        }
        let block = self.next;
        // SAFETY: checked above that `size` bytes remain before `end`.
        self.next = unsafe { block.add(size) };
        block
    }
}

// SAFETY: a class block is at least `layout.size()` bytes, 16-aligned (chunks
// are 16-aligned and every block size is a multiple of 16), and handed out
// once until freed; everything else is `System`'s.
unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no reference to the state
        // outlives this call.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[c];
        if head.is_null() {
            // SAFETY: as above.
            return unsafe { state.carve(c) };
        }
        // SAFETY: a free block's first word is the link written by `dealloc`.
        state.free[c] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // SAFETY: the caller's layout, passed on; the system allocator
            // may know its memory is already zero (fresh pages).
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's layout; a recycled block holds old bytes.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: allocated by `System` with this layout (`alloc`).
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: one thread; the block is ours, at least 16 bytes and
        // 16-aligned, so its first word can hold the link.
        unsafe {
            let state = &mut *self.state.get();
            ptr.cast::<*mut u8>().write(state.free[c]);
            state.free[c] = ptr;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with this alignment is a
        // valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // The block already has room.
            (Some(old), Some(new)) if old == new => ptr,
            // SAFETY: both `System`'s, with the caller's guarantees.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller's guarantees; the copy is within both
                // blocks.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_round_up_to_powers_of_two_and_large_or_aligned_go_to_the_system() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(2048, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(2049, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class_only() {
        let a = SizeClasses::new();
        unsafe {
            let x = a.alloc(layout(24, 8));
            let y = a.alloc(layout(24, 8));
            assert_ne!(x, y);
            assert_eq!(x as usize % ALIGN, 0);
            assert_eq!(y as usize - x as usize, 32, "carved one after the other");
            a.dealloc(x, layout(24, 8));
            let other = a.alloc(layout(100, 8));
            assert_ne!(other, x, "another class does not take it");
            assert_eq!(a.alloc(layout(30, 4)), x, "the same class does");
            a.dealloc(other, layout(100, 8));
            a.dealloc(x, layout(30, 4));
            a.dealloc(y, layout(24, 8));
        }
    }

    /// Many live blocks of every class and the system's, written in full
    /// and checked after the others were allocated: no two overlap, and
    /// new chunks are taken when one is used up.
    #[test]
    fn live_blocks_never_overlap_across_chunks() {
        let a = SizeClasses::new();
        let sizes = [1, 16, 33, 100, 500, 1024, 2048, 3000, 70_000];
        let mut live = Vec::new();
        for round in 0..200u32 {
            for (i, &size) in sizes.iter().enumerate() {
                let l = layout(size, 8);
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                let tag = (round as usize * sizes.len() + i) as u8;
                unsafe { ptr::write_bytes(p, tag, size) };
                live.push((p, l, tag));
            }
        }
        for &(p, l, tag) in &live {
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(
                bytes.iter().all(|&b| b == tag),
                "block of {} overwritten",
                l.size()
            );
        }
        for (p, l, _) in live {
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_recycled() {
        let a = SizeClasses::new();
        unsafe {
            for size in [24, 5000] {
                let l = layout(size, 8);
                let p = a.alloc(l);
                ptr::write_bytes(p, 0xAB, size);
                a.dealloc(p, l);
                let z = a.alloc_zeroed(l);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                a.dealloc(z, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_within_a_class_across_classes_and_to_the_system() {
        let a = SizeClasses::new();
        unsafe {
            let l = layout(10, 1);
            let p = a.alloc(l);
            ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            let same = a.realloc(p, l, 16);
            assert_eq!(same, p, "16 bytes fit the same block");
            let bigger = a.realloc(same, layout(16, 1), 40);
            assert_eq!(std::slice::from_raw_parts(bigger, 10), b"0123456789");
            let huge = a.realloc(bigger, layout(40, 1), 10_000);
            assert_eq!(std::slice::from_raw_parts(huge, 10), b"0123456789");
            let back = a.realloc(huge, layout(10_000, 1), 5);
            assert_eq!(std::slice::from_raw_parts(back, 5), b"01234");
            a.dealloc(back, layout(5, 1));
        }
    }
}
