//! Step 1: close every inherited descriptor above 2 except a keep-list.
//!
//! A descriptor the daemon, the runner or a library left open (a socket to
//! the daemon, a vault file, a pipe of another run) would otherwise be
//! inherited by the command across `exec`.

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};

use crate::sys;

/// Closes every descriptor numbered 3 or more that is not in `keep`.
pub(crate) fn close_all_except(keep: &[i32]) -> Result<(), Errno> {
    let ranges = ranges_to_close(keep);
    for &(first, last) in &ranges {
        match sys::close_range(first, last) {
            Ok(()) => {}
            // Kernels before 5.9: close one by one up to the descriptor limit.
            Err(Errno::ENOSYS) => return close_slowly(keep),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The inclusive ranges `[first, last]` covering 3..=u32::MAX minus `keep`.
pub(crate) fn ranges_to_close(keep: &[i32]) -> Vec<(u32, u32)> {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let mut ranges = Vec::with_capacity(kept.len() + 1);
    let mut next = 3_u32;
    for fd in kept {
        if fd > next {
            ranges.push((next, fd - 1));
        }
        next = fd.saturating_add(1);
        if fd == u32::MAX {
            return ranges;
        }
    }
    ranges.push((next, u32::MAX));
    ranges
}

fn close_slowly(keep: &[i32]) -> Result<(), Errno> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let max = i32::try_from(soft).unwrap_or(i32::MAX);
    for fd in 3..max {
        if !keep.contains(&fd) {
            sys::close_one(fd);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ranges_to_close;

    #[test]
    fn no_keep_closes_everything_above_two() {
        assert_eq!(ranges_to_close(&[]), vec![(3, u32::MAX)]);
    }

    #[test]
    fn kept_descriptors_split_the_ranges() {
        assert_eq!(
            ranges_to_close(&[7, 3, 9, 7, 1, -1]),
            vec![(4, 6), (8, 8), (10, u32::MAX)]
        );
        assert_eq!(ranges_to_close(&[4, 5]), vec![(3, 3), (6, u32::MAX)]);
    }
}
