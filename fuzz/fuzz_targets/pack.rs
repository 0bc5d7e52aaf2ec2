//! Any bytes as one ELF object: `pack` returns an image or an error, never panics; an image it
//! returns parses as a VMI ROM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use optionrom::pack::{Object, PackOptions, pack};

fuzz_target!(|data: &[u8]| {
    let objects = [Object {
        name: "fuzz.o",
        data,
    }];
    if let Ok(packed) = pack(&objects, &PackOptions::default()) {
        let rom = optionrom::parse(&packed.image);
        assert!(rom.images.first().is_some_and(|i| i.vmi.is_some()));
    }
});
