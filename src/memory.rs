//! Keeping the resident set small on glibc: a bounded number of malloc arenas, and freed memory
//! handed back to the kernel after the large, short-lived allocations of a big collection
//! (parsing a `/system/df` answer of thousands of objects). Without it, each thread that once
//! parsed an answer keeps an arena whose freed pages stay resident.

/// Most malloc arenas: a few threads share each, which costs little contention for a server whose
/// threads mostly wait, and bounds how many hold freed pages.
const ARENA_MAX: libc::c_int = 4;

/// Bounds glibc's malloc arenas to [`ARENA_MAX`]. Call first thing in `main`, before any thread
/// starts. Best effort: a refusal leaves glibc's default.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt takes two integers and only changes the allocator's settings; it is called
    // before any other thread exists, so no allocation runs concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Returns the free pages of every arena to the kernel (glibc's `malloc_trim`). Costs a walk of
/// the free lists: call after a large collection, not per request.
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes an integer and releases only memory the allocator holds free; it
    // locks each arena itself, so it is safe with other threads allocating.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_after_a_large_free_keeps_the_allocator_working() {
        limit_arenas();
        let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop(big);
        trim();
        let again = vec![7u8; 1 << 20];
        assert_eq!(again.iter().map(|b| *b as u64).sum::<u64>(), 7 << 20);
    }
}
