//! The KVM runner: the same multiboot test guest, no BIOS, the ROM mapped read-only wherever
//! the test puts it.
//!
//! Every test first checks [`kvm::available`] and skips (with a `SKIP:` line) where KVM cannot
//! be used. On kvm-pvm (this project's machines) only the non-paged guest runs; the paging
//! test checks that asking for paging there is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use iced_x86::code_asm::*;
use optionrom::build::Finish;
use optionrom::vmi::{VmiHeaderSpec, write_header};
use std::path::Path;
use std::time::{Duration, Instant};
use vmi_harness::kvm::{self, EndReason, KvmConfig};
use vmi_harness::probe::{ProbeOptions, ProbeReport, probe};
use vmi_harness::protocol::{
    self, EXIT_DONE, EXIT_EXCEPTION_BASE, EndStatus, Outcome, Record, StepId,
};
use vmi_harness::{Engine, HarnessError, guest, multiboot};
use vmi_rom::generate::{BuildOptions, Generated, generate};
use vmi_rom::native::Native;

/// Returns false (after saying why) when KVM cannot be used here.
fn kvm_usable() -> bool {
    match kvm::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP: KVM unavailable: {why}");
            false
        }
    }
}

fn kvm_opts(rom_base: u32) -> ProbeOptions {
    ProbeOptions {
        engine: Engine::Kvm,
        paging: false,
        rom_base: Some(rom_base),
        ..ProbeOptions::default()
    }
}

fn probe_image(image: &[u8], opts: &ProbeOptions) -> Result<ProbeReport, HarnessError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmi.rom");
    std::fs::write(&path, image).unwrap();
    let start = Instant::now();
    let r = probe(&path, opts);
    eprintln!(
        "probe on {} (ROM at {}): {:?} wall{}",
        opts.engine,
        opts.rom_base
            .map_or_else(|| "default".to_string(), |b| format!("{b:#x}")),
        start.elapsed(),
        match &r {
            Ok(r) => format!(" (run {:?})", r.wall),
            Err(e) => format!(", error: {e}"),
        }
    );
    r
}

/// A flat multiboot image whose body is `code` (assembled at the body's address).
fn tiny_guest(code: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let at = multiboot::body_addr(multiboot::LOAD_ADDR, 0);
    let mut a = CodeAssembler::new(32).unwrap();
    code(&mut a);
    let body = a.assemble(u64::from(at)).unwrap();
    multiboot::image(multiboot::LOAD_ADDR, &body, 0, 0)
}

fn run_tiny(code: impl FnOnce(&mut CodeAssembler), timeout: Duration) -> kvm::KvmRun {
    let run = kvm::run(&KvmConfig {
        kernel: tiny_guest(code),
        memory_mib: 4,
        timeout,
        ..KvmConfig::default()
    })
    .unwrap();
    eprintln!(
        "tiny guest: {} after {:?}, {} exits",
        run.end, run.wall, run.exits
    );
    run
}

// ---------------------------------------------------------------------------------------------
// The native ROM, no BIOS.

fn native() -> Generated {
    generate(&Native, &BuildOptions::default()).unwrap()
}

/// The highest 2 KiB boundary at which `len` bytes still end at or below 0xE0000, moved down
/// by 2 KiB if it happens to be page aligned (to exercise a slot rounded out to pages).
fn top_placement(len: usize) -> u32 {
    let base = (0xE_0000 - len as u32) & !0x7FF;
    if base % 0x1000 == 0 {
        base - 0x800
    } else {
        base
    }
}

#[test]
fn native_rom_found_and_activated_at_two_placements_without_a_bios() {
    if !kvm_usable() {
        return;
    }
    let g = native();
    let top = top_placement(g.image.len());
    assert_eq!(top % 0x800, 0);
    assert_ne!(top % 0x1000, 0);
    for base in [0xC_0000, top] {
        let r = probe_image(&g.image, &kvm_opts(base)).unwrap();
        r.check().unwrap();
        assert_eq!(r.engine, Engine::Kvm);
        assert!(r.seabios_log.is_empty());
        // Found exactly where it was mapped, through the flat (linear = physical) map.
        assert_eq!(r.chosen, Some(base), "{:#x?}", r.candidates);
        assert_eq!(r.linear_offset, 0);
        assert_eq!(r.linear_base(), Some(base));
        assert_eq!(r.candidates.len(), 1, "{:#x?}", r.candidates);
        let acc = r.accepted().unwrap();
        assert_eq!(acc.outcome, Outcome::Accepted);
        assert_eq!(usize::from(acc.rom_length) * 512, g.image.len());
        assert_eq!(acc.license_str().as_deref(), Some("GPL v2"));
        // Init returns 0 with the canaries intact: nothing ran the 16-bit init before it.
        assert_eq!(r.end, Some(EndStatus::Complete));
        assert_eq!(r.exit_value, Some(EXIT_DONE));
        let init = r.init.as_ref().unwrap();
        assert_eq!(init.eax, 0, "Init failed");
        assert!(init.clobbered.is_empty() && init.esp_ok, "{init:?}");
        assert_eq!(init.kernel_rpl, 0);
        common::assert_answers_match(&g, &r);
        // The native ROM keeps no state in its image.
        assert_eq!(r.mmio_writes, vec![], "{:#x?}", r.mmio_writes);
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-built ROMs.

/// What the ROM's data dword holds in the image.
const ORIGINAL: u32 = 0x1122_3344;
/// What Init tries to store there.
const WRITTEN: u32 = 0x600D_F00D;

/// What Init does.
#[derive(Clone, Copy)]
enum InitKind {
    /// Stores [`WRITTEN`] into the ROM's own data dword, reads it back into ECX, returns 0.
    WriteOwnImage,
    /// `jmp $`.
    Hang,
}

struct TestRom {
    bytes: Vec<u8>,
    /// Image offset of the data dword.
    data: u32,
}

fn build_rom(kind: InitKind) -> TestRom {
    let mut b = common::vmi_builder("kvm runner ROM");
    let data = b.append(&ORIGINAL.to_le_bytes(), 16);

    // Init: position independent (`call next; next: pop edx` finds where it runs).
    b.align(16);
    let init = b.len();
    let next = init + 5;
    let mut a = CodeAssembler::new(32).unwrap();
    match kind {
        InitKind::WriteOwnImage => {
            let mut l_next = a.create_label();
            let rel = data as i32 - next as i32;
            a.call(l_next).unwrap();
            a.set_label(&mut l_next).unwrap();
            a.pop(edx).unwrap();
            a.mov(dword_ptr(edx + rel), WRITTEN).unwrap();
            a.mov(ecx, dword_ptr(edx + rel)).unwrap();
            a.xor(eax, eax).unwrap();
            a.ret().unwrap();
        }
        InitKind::Hang => {
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        }
    }
    let code = a.assemble(init as u64).unwrap();
    assert_eq!(b.append(&code, 1), init);

    // GetRelocationInfo: NONE for everything.
    b.align(16);
    let mut a = CodeAssembler::new(32).unwrap();
    a.xor(eax, eax).unwrap();
    a.xor(edx, edx).unwrap();
    a.ret().unwrap();
    let get_reloc = b.append(&a.assemble(0).unwrap(), 16);

    write_header(&mut b, &VmiHeaderSpec::default(), init, get_reloc).unwrap();
    TestRom {
        bytes: b.finish(&Finish::default()).unwrap(),
        data: data as u32,
    }
}

#[test]
fn a_rom_writing_its_own_image_is_caught_and_the_image_stays_unchanged() {
    if !kvm_usable() {
        return;
    }
    let rom = build_rom(InitKind::WriteOwnImage);
    let base = 0xD_0800;
    let r = probe_image(
        &rom.bytes,
        &ProbeOptions {
            calls: vec![1],
            ..kvm_opts(base)
        },
    )
    .unwrap();
    r.check().unwrap();
    assert_eq!(r.chosen, Some(base));
    let init = r.init.as_ref().unwrap();
    assert_eq!(init.eax, 0);
    // The read-back saw the image, not the store: the slot is read-only.
    assert_eq!(init.regs.ecx, ORIGINAL, "read back {:#x}", init.regs.ecx);
    let writes: Vec<_> = r.rom_writes().collect();
    assert_eq!(writes.len(), 1, "{:#x?}", r.mmio_writes);
    let w = writes[0];
    assert_eq!(w.addr, u64::from(base + rom.data));
    assert_eq!((w.size, w.value), (4, u64::from(WRITTEN)));
    assert_eq!(w.rom_offset, Some(rom.data));
    assert_eq!(r.mmio_writes.len(), 1);
    assert_eq!(
        w.to_string(),
        format!(
            "4-byte write of 0x600df00d at {:#x} (ROM offset {:#x})",
            base + rom.data,
            rom.data
        )
    );
}

#[test]
fn misplaced_roms_and_misused_options_are_errors() {
    let g = native();
    // Checked before KVM is touched: these hold on any machine.
    let e = probe_image(&g.image, &kvm_opts(0xC_8400)).unwrap_err();
    assert!(
        matches!(e, HarnessError::RomPlacement { base: 0xC_8400, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("not a multiple of 0x800"), "{e}");
    // A 4 KiB image at the last 2 KiB boundary would run past the window.
    let mut big = g.image.clone();
    big.resize(0x1000, 0);
    let e = probe_image(&big, &kvm_opts(0xE_0000 - 0x800)).unwrap_err();
    assert!(e.to_string().contains("past 0xe0000"), "{e}");
    let e = probe_image(&g.image, &kvm_opts(0xB_8000)).unwrap_err();
    assert!(e.to_string().contains("outside the window"), "{e}");
    let e = kvm::run(&KvmConfig {
        rom: Some(g.image.clone()),
        rom_base: 0xE_0000,
        kernel: multiboot::exit_stub(1),
        ..KvmConfig::default()
    })
    .unwrap_err();
    assert!(matches!(e, HarnessError::RomPlacement { .. }), "{e}");
    // SeaBIOS chooses the placement under QEMU; QEMU arguments mean nothing to the KVM engine.
    let e = probe_image(
        &g.image,
        &ProbeOptions {
            rom_base: Some(0xC_8000),
            ..ProbeOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("SeaBIOS chooses"), "{e}");
    let e = probe_image(
        &g.image,
        &ProbeOptions {
            extra_args: vec!["-vga".into(), "std".into()],
            ..kvm_opts(0xC_8000)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("QEMU arguments"), "{e}");
    // A multiboot image that does not fit the RAM.
    let e = kvm::run(&KvmConfig {
        kernel: multiboot::image(0x3F_F000, &[0xF4; 64], 0, 0x2000),
        memory_mib: 4,
        ..KvmConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("not inside guest RAM"), "{e}");
}

#[test]
fn paging_on_a_kvm_that_cannot_page_is_a_clear_error() {
    if !kvm_usable() {
        return;
    }
    let g = native();
    let paged = ProbeOptions {
        paging: true,
        ..kvm_opts(0xC_8000)
    };
    match kvm::paging_supported() {
        Ok(()) => {
            eprintln!("this KVM pages: the paged guest must run");
            let r = probe_image(&g.image, &paged).unwrap();
            r.check().unwrap();
            assert_eq!(r.linear_base(), Some(0xC000_0000 + 0xC_8000));
            common::assert_answers_match(&g, &r);
        }
        Err(why) => {
            eprintln!("paging check: {why}");
            assert!(why.starts_with("paging not supported by this KVM"), "{why}");
            let e = probe_image(&g.image, &paged).unwrap_err();
            assert!(matches!(e, HarnessError::PagingUnsupported { .. }), "{e}");
            assert!(
                e.to_string()
                    .starts_with("paging not supported by this KVM"),
                "{e}"
            );
            // Running the paged guest anyway: its `mov cr0` that sets PG raises #GP, which the
            // guest's own handler reports (in step boot) before ending the run.
            let g = guest::build(&guest::GuestConfig::linux(0xC000_0000, true, &[1])).unwrap();
            let run = kvm::run(&KvmConfig {
                kernel: g.image.clone(),
                timeout: Duration::from_secs(10),
                ..KvmConfig::default()
            })
            .unwrap();
            eprintln!("paged guest: {} after {:?}", run.end, run.wall);
            assert_eq!(run.end, EndReason::ExitPort(EXIT_EXCEPTION_BASE | 13));
            let stream = protocol::decode(&run.debugcon).unwrap();
            let e = stream
                .records
                .iter()
                .find_map(|(_, r)| match r {
                    Record::Exception(e) => Some(*e),
                    _ => None,
                })
                .unwrap();
            assert_eq!((e.step, e.vector), (StepId::Boot, 13));
            let at = (e.eip - multiboot::LOAD_ADDR) as usize;
            assert_eq!(&g.image[at..at + 3], &[0x0F, 0x22, 0xC0], "mov cr0, eax");
        }
    }
}

#[test]
fn a_hanging_init_times_out_and_the_run_ends() {
    if !kvm_usable() {
        return;
    }
    let rom = build_rom(InitKind::Hang);
    let timeout = Duration::from_secs(3);
    let start = Instant::now();
    let e = probe_image(
        &rom.bytes,
        &ProbeOptions {
            timeout,
            ..kvm_opts(0xC_8000)
        },
    )
    .unwrap_err();
    let took = start.elapsed();
    match e {
        HarnessError::Timeout { step, after } => {
            assert_eq!(step, StepId::Init);
            assert_eq!(after, timeout);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
    // The run itself reports the timeout (a guest that spins without exits).
    let run = run_tiny(
        |a| {
            let mut here = a.create_label();
            a.set_label(&mut here).unwrap();
            a.jmp(here).unwrap();
        },
        Duration::from_millis(500),
    );
    assert!(run.timed_out);
    assert_eq!(run.end, EndReason::TimedOut);
    assert_eq!(run.guest_exit_value(), None);
}

// ---------------------------------------------------------------------------------------------
// The exit table, one tiny guest per row.

#[test]
fn exits_are_handled_as_documented() {
    if !kvm_usable() {
        return;
    }
    let t = Duration::from_secs(5);
    // Multiboot entry state, reported through the debug console: EAX, EBX, and the MBI's
    // flags/mem_lower/mem_upper.
    let run = run_tiny(
        |a| {
            a.mov(dx, u32::from(vmi_harness::qemu::DEBUGCON_PORT))
                .unwrap();
            a.out(dx, eax).unwrap();
            a.mov(eax, ebx).unwrap();
            a.out(dx, eax).unwrap();
            for off in [0, 4, 8] {
                a.mov(eax, dword_ptr(ebx + off)).unwrap();
                a.out(dx, eax).unwrap();
            }
            // IoIn reads 0xFF; so does an unmapped address (legacy hole); writes there are
            // recorded.
            a.in_(al, 0x60).unwrap();
            a.out(dx, al).unwrap();
            a.mov(eax, dword_ptr(0xB_0000)).unwrap();
            a.out(dx, eax).unwrap();
            a.mov(word_ptr(0xB_8000), 0x0741u32).unwrap();
            // Other ports are ignored.
            a.mov(al, 0x11).unwrap();
            a.out(0x20, al).unwrap();
            a.mov(al, 0x21).unwrap();
            a.out(0xF4, al).unwrap();
            a.hlt().unwrap();
        },
        t,
    );
    assert_eq!(run.end, EndReason::ExitPort(0x21));
    assert_eq!(run.guest_exit_value(), Some(0x21));
    assert!(!run.timed_out);
    let words: Vec<u32> = run
        .debugcon
        .chunks(4)
        .take(6)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        words,
        [0x2BAD_B002, kvm::MBI_ADDR, 1, 640, 3 * 1024, 0xFFFF_FFFF]
    );
    // Five words, the byte from `in`, the word from the unmapped read.
    assert_eq!(run.debugcon.len(), 5 * 4 + 1 + 4);
    assert_eq!(run.debugcon[20], 0xFF);
    assert_eq!(run.mmio_writes.len(), 1);
    let w = run.mmio_writes[0];
    assert_eq!(
        (w.addr, w.size, w.value, w.rom_offset),
        (0xB_8000, 2, 0x0741, None)
    );
    assert!(run.exits >= 10, "{}", run.exits);

    // CPUID answers what KVM supports (KVM_SET_CPUID2): leaf 0's vendor string and the
    // hypervisor leaf's "KVMKVMKVM".
    let run = run_tiny(
        |a| {
            // Leaf 0's vendor string is EBX, EDX, ECX; the hypervisor signature EBX, ECX, EDX.
            // Store them at a scratch address in low RAM and stream the 12 bytes out.
            for (leaf, order) in [(0u32, [ebx, edx, ecx]), (0x4000_0000, [ebx, ecx, edx])] {
                a.mov(eax, leaf).unwrap();
                a.cpuid().unwrap();
                for (i, r) in order.into_iter().enumerate() {
                    a.mov(dword_ptr(0x2000 + 4 * i), r).unwrap();
                }
                a.mov(esi, 0x2000u32).unwrap();
                a.mov(ecx, 12u32).unwrap();
                a.mov(dx, u32::from(vmi_harness::qemu::DEBUGCON_PORT))
                    .unwrap();
                a.rep().outsb().unwrap();
            }
            a.mov(al, 0x22).unwrap();
            a.out(0xF4, al).unwrap();
        },
        t,
    );
    assert_eq!(run.end, EndReason::ExitPort(0x22));
    let vendor = String::from_utf8_lossy(&run.debugcon[..12]).into_owned();
    let hypervisor = String::from_utf8_lossy(&run.debugcon[12..24]).into_owned();
    eprintln!("CPUID vendor {vendor:?}, hypervisor {hypervisor:?}");
    assert!(
        vendor.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{vendor:?}"
    );
    assert_eq!(hypervisor.trim_end_matches('\0'), "KVMKVMKVM");

    // hlt ends the run.
    let run = run_tiny(
        |a| {
            a.hlt().unwrap();
        },
        t,
    );
    assert!(
        matches!(run.end, EndReason::Halted { eip } if eip == multiboot::body_addr(multiboot::LOAD_ADDR, 1)),
        "{}",
        run.end
    );

    // An exception with no IDT is a triple fault: the vCPU shuts down.
    let run = run_tiny(
        |a| {
            a.ud2().unwrap();
        },
        t,
    );
    assert!(
        matches!(run.end, EndReason::Shutdown { cr0: c, .. } if c & 1 == 1),
        "{}",
        run.end
    );
}

#[test]
fn qemu_kvm_detection_says_why_not() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let answer = vmi_harness::engine::qemu_kvm_available();
    eprintln!("qemu-kvm: {answer:?}; kvm: {:?}", kvm::available());
    if !hw {
        let why = answer.unwrap_err();
        assert!(why.starts_with("no VMX/SVM: "), "{why}");
        assert!(why.ends_with("; qemu-kvm unavailable"), "{why}");
        if Path::new("/sys/module/kvm_pvm").exists() && kvm::available().is_ok() {
            assert_eq!(why, "no VMX/SVM: /dev/kvm is kvm-pvm; qemu-kvm unavailable");
        }
    }
    assert_eq!(Engine::Kvm.available(), kvm::available());
}
