//! Any bytes as a guest-RAM image: finding and decoding a trace area never panics, and a
//! decoded area is self-consistent (its counters and ring entries fit its header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi_rom::trace::area;

fuzz_target!(|data: &[u8]| {
    for result in [area::decode(data, 0), area::find(data)] {
        if let Ok(a) = result {
            assert!(!a.counters.is_empty() && a.counters.len() <= 256);
            assert!(a.events.len() <= 1 << 16);
            assert!(a.events.iter().all(|e| (e.call as usize) < a.counters.len()));
            assert!(a.counters.iter().all(|c| c.count > 0 || c.cycles == 0));
            assert!((a.phys as usize) < data.len());
        }
    }
});
