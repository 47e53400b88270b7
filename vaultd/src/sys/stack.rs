//! Stacks for `clone` children, with a guard page below them.
//!
//! A child started with `clone` runs on a stack the parent gives it. A
//! heap buffer has no guard: a child that overran it would silently write
//! over whatever the allocator put below. These stacks are their own
//! anonymous mappings with an inaccessible page at the bottom, so an
//! overrun faults instead.

use std::io;

/// An anonymous mapping: one `PROT_NONE` guard page, then `size` bytes of
/// read-write stack above it. Unmapped on drop.
#[derive(Debug)]
pub struct GuardedStack {
    base: *mut libc::c_void,
    len: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf with a valid name only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

impl GuardedStack {
    /// Maps a stack of at least `size` bytes (rounded up to whole pages).
    pub fn new(size: usize) -> io::Result<Self> {
        let page = page_size();
        let usable = size.div_ceil(page).max(1) * page;
        let len = usable + page;
        // SAFETY: a fresh private anonymous mapping at an address the
        // kernel chooses; it aliases no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = GuardedStack { base, len };
        // SAFETY: the first page lies inside the mapping just made, which
        // nothing else uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the 16-byte aligned top of the mapping
    /// (stacks grow down towards the guard page).
    pub fn top(&mut self) -> *mut libc::c_void {
        (self.base as usize + self.len) as *mut libc::c_void
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is exactly the mapping made in `new`,
        // and the caller keeps the stack alive while a child may use it.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_is_aligned_and_the_guard_page_is_inaccessible() {
        let mut stack = GuardedStack::new(10_000).unwrap();
        let top = stack.top() as usize;
        assert_eq!(top % 16, 0);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let base = stack.base as usize;
        let guard = maps
            .lines()
            .find(|l| {
                l.split('-')
                    .next()
                    .and_then(|a| usize::from_str_radix(a, 16).ok())
                    == Some(base)
            })
            .expect("the stack's mapping is listed");
        assert!(guard.contains("---p"), "guard page not PROT_NONE: {guard}");
        assert!(top - base >= 10_000 + page_size());
    }
}
