//! Address-space ids (SVM ASIDs; VMX VPIDs play the same role): one per vCPU, taken when its
//! domain is created (so a plan the hardware cannot hold is refused before hand-off) and given
//! back when the domain is destroyed.
//!
//! Reuse is safe because no vCPU migrates and every vCPU flushes its ASID's TLB entries on its
//! first entry (SVM: TLB_CONTROL = flush at the first VMRUN): translations a destroyed vCPU left
//! behind under the same id are gone before the new owner runs on that physical CPU.

/// The most ids the pool tracks (more than every vCPU the hypervisor holds).
pub const MAX_TRACKED: u32 = 256;

/// Why ids could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidsExhausted {
    /// Ids asked for.
    pub wanted: usize,
    /// Ids free.
    pub free: usize,
}

/// The free address-space ids: 1 to `count - 1` (0 is the host's), at most [`MAX_TRACKED`].
pub struct AsidPool {
    used: [u64; (MAX_TRACKED / 64) as usize],
    limit: u32,
}

impl AsidPool {
    /// A pool for a CPU that supports `count` ids (CPUID 0x8000000A EBX on SVM), id 0 included.
    pub const fn new(count: u32) -> Self {
        let limit = if count > MAX_TRACKED {
            MAX_TRACKED
        } else {
            count
        };
        let mut used = [0u64; (MAX_TRACKED / 64) as usize];
        used[0] = 1; // id 0: the host
        AsidPool { used, limit }
    }

    fn is_used(&self, id: u32) -> bool {
        self.used[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// Ids free now.
    pub fn free_count(&self) -> usize {
        (1..self.limit).filter(|&id| !self.is_used(id)).count()
    }

    /// Takes `n` ids, all or none (lowest free first), into `out`.
    pub fn take(&mut self, n: usize, out: &mut [u32]) -> Result<(), AsidsExhausted> {
        let free = self.free_count();
        if n > free || n > out.len() {
            return Err(AsidsExhausted { wanted: n, free });
        }
        let mut taken = 0;
        for id in 1..self.limit {
            if taken == n {
                break;
            }
            if !self.is_used(id) {
                self.used[(id / 64) as usize] |= 1 << (id % 64);
                out[taken] = id;
                taken += 1;
            }
        }
        Ok(())
    }

    /// Gives `id` back (ids outside the pool, the host's and free ones are ignored).
    pub fn give_back(&mut self, id: u32) {
        if id != 0 && id < self.limit {
            self.used[(id / 64) as usize] &= !(1 << (id % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_taken_all_or_none_and_reused_after_release() {
        // QEMU's SVM reports 16 ASIDs: 15 for guests.
        let mut pool = AsidPool::new(16);
        assert_eq!(pool.free_count(), 15);
        let mut eight = [0u32; 8];
        pool.take(8, &mut eight).unwrap();
        assert_eq!(eight, [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut more = [0u32; 8];
        assert_eq!(
            pool.take(8, &mut more),
            Err(AsidsExhausted { wanted: 8, free: 7 })
        );
        assert_eq!(pool.free_count(), 7, "a refused request takes nothing");
        for id in [2, 5] {
            pool.give_back(id);
        }
        pool.give_back(0);
        pool.give_back(99);
        let mut two = [0u32; 2];
        pool.take(2, &mut two).unwrap();
        assert_eq!(two, [2, 5], "released ids are used again");
        assert_eq!(pool.free_count(), 7);
    }

    #[test]
    fn a_cpu_with_many_ids_is_capped_at_the_tracked_number() {
        let pool = AsidPool::new(32768);
        assert_eq!(pool.free_count(), MAX_TRACKED as usize - 1);
        assert_eq!(AsidPool::new(1).free_count(), 0);
    }
}
