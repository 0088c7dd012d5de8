//! Key groups: keys hash to a fixed number of groups; an operator instance
//! owns a contiguous range of them, so state can move when parallelism
//! changes without rehashing keys.

/// Key groups of a topology unless it says otherwise (Flink's default
/// maximum parallelism is of the same order).
pub const DEFAULT_KEY_GROUPS: u16 = 128;

/// One of the fixed number of groups that keys hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u16);

/// A stable 64-bit hash of a key: FNV-1a followed by a 64-bit finaliser.
/// Stable across versions, platforms and languages, since key groups are
/// stored in checkpoints.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finaliser (from MurmurHash3) so that keys differing in the last bytes
    // spread over all groups.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The key group of `key` among `groups` groups.
pub fn key_group_of(key: &[u8], groups: u16) -> KeyGroup {
    KeyGroup((key_hash(key) % u64::from(groups.max(1))) as u16)
}

/// The key groups `start..end` owned by one operator instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    pub start: u16,
    pub end: u16,
    /// Total number of key groups of the topology.
    pub groups: u16,
}

impl KeyGroupRange {
    /// Every group: an instance of an operator with parallelism 1.
    pub fn all(groups: u16) -> Self {
        KeyGroupRange {
            start: 0,
            end: groups,
            groups,
        }
    }

    /// The range owned by instance `index` of `parallelism`, as even as the
    /// division allows (instance i owns `[i*G/P, (i+1)*G/P)`).
    pub fn for_instance(index: u16, parallelism: u16, groups: u16) -> Self {
        let g = u32::from(groups);
        let p = u32::from(parallelism.max(1));
        let i = u32::from(index);
        KeyGroupRange {
            start: (i * g / p) as u16,
            end: ((i + 1) * g / p) as u16,
            groups,
        }
    }

    /// Whether `key` falls in this range.
    pub fn owns(&self, key: &[u8]) -> bool {
        let KeyGroup(g) = key_group_of(key, self.groups);
        self.start <= g && g < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_key_groups_are_pinned() {
        // Computed once and pinned: key groups are stored in checkpoints,
        // so a change here moves checkpointed keys to other instances.
        let pinned: [(&[u8], u64, u16); 7] = [
            (b"", 0xefd0_1f60_ba99_2926, 38),
            (b"a", 0x82a2_a958_a9be_ce5b, 91),
            (b"hello", 0xe9c5_62c0_fdb2_3244, 68),
            (b"user-42", 0xa395_32c7_ab05_1e8d, 13),
            (b"\x00\xff", 0xacb6_4f88_d28b_68b8, 56),
            ("ключ".as_bytes(), 0x5905_20d7_1827_5ed5, 85),
            (
                b"a much longer key that spans several words",
                0x3d5d_854c_0751_f402,
                2,
            ),
        ];
        for (key, hash, group) in pinned {
            assert_eq!(key_hash(key), hash, "hash of {key:?}");
            assert_eq!(key_group_of(key, 128), KeyGroup(group), "group of {key:?}");
        }
    }

    #[test]
    fn instances_partition_all_groups() {
        for parallelism in 1..=7u16 {
            let mut next = 0;
            for i in 0..parallelism {
                let r = KeyGroupRange::for_instance(i, parallelism, 128);
                assert_eq!(r.start, next);
                assert!(r.end > r.start);
                next = r.end;
            }
            assert_eq!(next, 128);
        }
    }

    #[test]
    fn keys_spread_over_groups() {
        let mut seen = [0u32; 128];
        for i in 0..12_800 {
            seen[key_group_of(format!("user-{i}").as_bytes(), 128).0 as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 150), "{seen:?}");
    }

    #[test]
    fn owns_matches_key_group() {
        let r = KeyGroupRange::for_instance(1, 2, 128);
        for i in 0..1000 {
            let key = format!("k{i}");
            let g = key_group_of(key.as_bytes(), 128).0;
            assert_eq!(r.owns(key.as_bytes()), (64..128).contains(&g));
        }
    }
}
