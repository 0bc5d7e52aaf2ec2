//! The generated ROMs are byte-identical across runs and machines: the same inputs give the same
//! bytes (iced-x86 is pinned by Cargo.lock; nothing depends on time, paths or the host).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vmi_rom::generate::{BuildOptions, generate, verify_build_id};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;

#[test]
fn same_inputs_same_bytes_and_a_verifiable_build_id() {
    let a = generate(&Native, &BuildOptions::default()).unwrap();
    let b = generate(&Native, &BuildOptions::default()).unwrap();
    assert_eq!(a.image, b.image);
    assert!(verify_build_id(&a.image, a.build_id));
    let mut tampered = a.image.clone();
    tampered[0x300] ^= 1;
    assert!(!verify_build_id(&tampered, a.build_id));
    let other = generate(
        &Native,
        &BuildOptions {
            virtual_top: 0xFC00_0000,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    assert_ne!(other.build_id, a.build_id);
    let t1 = generate(
        &Trace {
            inner: Native,
            ring: 16,
            sites: 64,
        },
        &BuildOptions::default(),
    )
    .unwrap();
    let t2 = generate(
        &Trace {
            inner: Native,
            ring: 16,
            sites: 64,
        },
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(t1.image, t2.image);
}

/// The native ROM's bytes, pinned by their FNV-1a build id. If the generator or the native
/// backend changes on purpose, update the value (and say why in the commit); if it changes
/// without a code change, the build is not reproducible.
#[test]
fn native_rom_bytes_are_pinned() {
    let g = generate(&Native, &BuildOptions::default()).unwrap();
    assert_eq!(g.image.len(), 7168);
    assert_eq!(
        g.build_id, PINNED,
        "native ROM bytes changed: build id {:#010x}",
        g.build_id
    );
}

const PINNED: u32 = 0x4b9e_5db9;
