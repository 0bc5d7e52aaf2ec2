//! Any bytes: parse, judge with every profile, repair (plain and with `fix_size`).
//! Never panics; findings point inside the input; a repaired image repairs to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use optionrom::repair::{RepairOptions, repair};
use optionrom::validate::{Profile, validate};

fuzz_target!(|data: &[u8]| {
    let rom = optionrom::parse(data);
    for img in &rom.images {
        assert!(img.offset < data.len());
        assert!(img.view_len() <= img.available);
    }
    for p in Profile::ALL {
        let findings = validate(data, &rom, p);
        assert!(!findings.is_empty());
        for f in &findings {
            assert!(f.offset.is_none_or(|o| o < data.len()), "{f:?}");
        }
    }
    if let Ok(r) = repair(data, &RepairOptions::default()) {
        assert_eq!(r.image.len(), data.len());
        let again = repair(&r.image, &RepairOptions::default());
        assert_eq!(again.map(|a| a.image).as_ref(), Ok(&r.image));
    }
    let sized = RepairOptions {
        fix_size: true,
        checksum_byte: None,
    };
    if let Ok(r) = repair(data, &sized) {
        assert!(r.image.len() >= data.len());
    }
});
