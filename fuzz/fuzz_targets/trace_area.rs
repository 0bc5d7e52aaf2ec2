//! Any bytes as a guest-RAM image: finding and decoding a trace area never panics, and a
//! decoded area is self-consistent (its counters, call sites and ring entries fit its header,
//! and per call the sites plus the overflow are the call's total).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi_rom::trace::area;

fuzz_target!(|data: &[u8]| {
    for result in [area::decode(data, 0), area::find(data)] {
        if let Ok(a) = result {
            assert!(!a.counters.is_empty() && a.counters.len() <= 256);
            assert_eq!(a.overflow.len(), a.counters.len());
            assert!(a.events.len() <= 1 << 16);
            assert!(a.events.iter().all(|e| (e.call as usize) < a.counters.len()));
            assert!(a.counters.iter().all(|c| c.count > 0 || c.cycles == 0));
            assert!(a.site_slots <= area::MAX_SITES && a.site_slots_used <= a.site_slots);
            assert!(a.sites.len() <= a.site_slots_used as usize);
            for (n, total) in a.counters.iter().enumerate() {
                let mine = a.sites.iter().filter(|s| s.call as usize == n);
                let count: u64 = mine.clone().map(|s| s.count).sum();
                let cycles: u64 = mine.map(|s| s.cycles).sum();
                assert_eq!(count + a.overflow[n].count, total.count);
                assert_eq!(cycles + a.overflow[n].cycles, total.cycles);
            }
            assert!((a.phys as usize) < data.len());
        }
    }
});
