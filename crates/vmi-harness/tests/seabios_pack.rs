//! A ROM packed from gcc and GNU as objects (`optionrom::pack`), run by SeaBIOS under QEMU.
//!
//! - SeaBIOS checks the image, shadows it on a 2 KiB boundary and far-calls the packed
//!   `vmi_init16` during its option-ROM scan (the image has a `$PnP` header); the 16-bit code
//!   prints a marker and its CS to port 0xE9.
//! - A broken checksum makes SeaBIOS drop the image: its init never runs.
//! - A 32-bit multiboot guest finds the shadowed ROM the way Linux does and calls the packed,
//!   relocated gcc code through the slots at 0x80 and 0x88, then calls what GetRelocationInfo
//!   returned: proof that the PC32/GOTPC/GOTOFF/GOT32X resolutions hold at the ROM's real
//!   address.
//!
//! The objects are built on the spot; without gcc and as the tests say so and pass.

// Test helpers fail loudly: a broken toolchain or a wrong byte is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use optionrom::pack::{self, Object, PackOptions, Packed};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vmi_harness::{multiboot, qemu};
use vmirom_testkit::sources::{HELPER_C, INIT16_MARKER, INIT16_S};
use vmirom_testkit::toolchain;

const MAIN_C: &str = r#"
typedef unsigned int u32;
typedef unsigned long long u64;

#define VMI_CALL_REL 1
#define VMI_NOP 3

extern u32 vmi_helper(u32 x);
extern const char vmi_banner[];

static u32 __attribute__((noinline)) call_cpuid(void) { return 0x11; }
static u32 __attribute__((noinline)) call_halt(void) { return 0x22; }

static const unsigned char reloc_type[40] = { [5] = VMI_CALL_REL, [35] = VMI_CALL_REL, [7] = VMI_NOP };

/* 0 only if the helper call and the cross-object string read both land. */
u32 vmi_init(void) { return vmi_helper(0) + (u32)(vmi_banner[0] - 'v'); }

u64 __attribute__((regparm(1))) vmi_get_reloc(u32 call) {
    u32 eip;
    switch (call) {
    case 5: eip = (u32)&call_cpuid; break;
    case 35: eip = (u32)&call_halt; break;
    default: return 0;
    }
    return ((u64)reloc_type[call] << 32) | eip;
}
"#;

/// A position-independent 32-bit multiboot guest: scans 0xC0000–0xDFFFF in 2 KiB steps for
/// `55 AA` + `cVmi` (as Linux does), calls ROM+0x80, then ROM+0x88 with 5, 35 and 0, calls
/// every CALL_REL eip it gets, prints `rom=R init=I` and `call=C reloc=D:A ret=X` lines to port
/// 0xE9 and exits through isa-debug-exit with 0x21 (0x7F: no ROM found).
const GUEST_S: &str = r#"
    .code32
    .text
    .globl _start
_start:
    movl $0x90000, %esp
    cld
    movl $0xC0000, %esi
scan:
    cmpw $0xAA55, (%esi)
    jne next
    cmpl $0x696D5663, 8(%esi)
    je found
next:
    addl $2048, %esi
    cmpl $0xE0000, %esi
    jb scan
    movb $0x7F, %al
    jmp exit
found:
    movb $'r', %al
    call putc
    movb $'=', %al
    call putc
    movl %esi, %eax
    call hex32
    leal 0x80(%esi), %eax
    call *%eax
    movl %eax, %ebx
    movb $' ', %al
    call putc
    movb $'i', %al
    call putc
    movb $'=', %al
    call putc
    movl %ebx, %eax
    call hex32
    movb $'\n', %al
    call putc
    movl $5, %eax
    call probe
    movl $35, %eax
    call probe
    movl $0, %eax
    call probe
    movb $0x21, %al
exit:
    movw $0xF4, %dx
    outb %al, %dx
    cli
1:  hlt
    jmp 1b

/* probe: EAX = call number. Prints "c=N d=EDX a=EAX x=RESULT\n". */
probe:
    pushl %ebx
    pushl %edi
    movl %eax, %ebx
    movb $'c', %al
    call putc
    movb $'=', %al
    call putc
    movl %ebx, %eax
    call hex32
    movl %ebx, %eax
    leal 0x88(%esi), %ecx
    call *%ecx
    movl %eax, %edi
    movl %edx, %ebx
    movb $' ', %al
    call putc
    movb $'d', %al
    call putc
    movb $'=', %al
    call putc
    movl %ebx, %eax
    call hex32
    movb $' ', %al
    call putc
    movb $'a', %al
    call putc
    movb $'=', %al
    call putc
    movl %edi, %eax
    call hex32
    cmpb $1, %bl
    jne 2f
    movb $' ', %al
    call putc
    movb $'x', %al
    call putc
    movb $'=', %al
    call putc
    call *%edi
    call hex32
2:  movb $'\n', %al
    call putc
    popl %edi
    popl %ebx
    ret

putc:
    pushl %edx
    movw $0xE9, %dx
    outb %al, %dx
    popl %edx
    ret

hex32:
    pushl %ecx
    pushl %edx
    movl %eax, %edx
    movl $8, %ecx
3:  roll $4, %edx
    movb %dl, %al
    andb $0x0F, %al
    addb $0x30, %al
    cmpb $0x39, %al
    jbe 4f
    addb $0x27, %al
4:  call putc
    loop 3b
    popl %edx
    popl %ecx
    ret
"#;

fn toolchain() -> bool {
    toolchain::available(&["gcc", "as", "objcopy"])
}

fn gcc(dir: &Path, name: &str, src: &str) -> Vec<u8> {
    toolchain::read(&toolchain::gcc(dir, name, src, &["-fPIE"]).unwrap()).unwrap()
}

fn gas(dir: &Path, name: &str, src: &str) -> std::path::PathBuf {
    toolchain::gas(dir, name, src).unwrap()
}

/// Packs main.c + helper.c (gcc -fPIE) + the 16-bit init (as) into `dir/vmi.rom`.
fn packed_rom(dir: &Path) -> Packed {
    let main = gcc(dir, "main", MAIN_C);
    let helper = gcc(dir, "helper", HELPER_C);
    let init16 = std::fs::read(gas(dir, "init16", INIT16_S)).unwrap();
    let objects = [
        Object {
            name: "main.o",
            data: &main,
        },
        Object {
            name: "helper.o",
            data: &helper,
        },
        Object {
            name: "init16.o",
            data: &init16,
        },
    ];
    let p = pack::pack(&objects, &PackOptions::default()).unwrap();
    assert!(p.entries.init16.is_some());
    p
}

fn boot(dir: &Path, rom: &[u8], kernel: &[u8]) -> qemu::QemuRun {
    let rom_path = dir.join("vmi.rom");
    let kernel_path = dir.join("guest.bin");
    std::fs::write(&rom_path, rom).unwrap();
    std::fs::write(&kernel_path, kernel).unwrap();
    let run = qemu::run(&qemu::QemuConfig {
        rom: Some(rom_path),
        kernel: Some(kernel_path),
        timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .unwrap();
    eprintln!(
        "QEMU run: {:?} wall, exit {:?}, timed out: {}\ndebug console: {:?}",
        run.wall,
        run.exit_code,
        run.timed_out,
        String::from_utf8_lossy(&run.debugcon)
    );
    assert!(
        !run.timed_out,
        "QEMU did not exit through debug-exit\nstderr: {}\nSeaBIOS log:\n{}",
        run.stderr, run.seabios_log
    );
    run
}

/// The segment `vmi_init16` printed after INIT16_MARKER.
fn printed_segment(debugcon: &str) -> u32 {
    let at = debugcon
        .find(INIT16_MARKER)
        .unwrap_or_else(|| panic!("marker not on the debug console: {debugcon:?}"));
    let hex = &debugcon[at + INIT16_MARKER.len()..][..4];
    u32::from_str_radix(hex, 16).unwrap()
}

#[test]
fn seabios_runs_the_packed_init16_during_the_scan() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = packed_rom(dir.path());
    let run = boot(dir.path(), &p.image, &multiboot::exit_stub(0x21));
    assert_eq!(run.guest_exit_value(), Some(0x21));
    let log = &run.seabios_log;
    let con = String::from_utf8_lossy(&run.debugcon);
    assert!(!log.contains("bad checksum"), "SeaBIOS log:\n{log}");
    // Our 16-bit code ran and printed its segment; SeaBIOS ran an option ROM at exactly that
    // segment, on a 2 KiB boundary inside the range Linux scans.
    let seg = printed_segment(&con);
    assert!(
        log.contains(&format!("Running option rom at {seg:04x}:0003")),
        "no \"Running option rom at {seg:04x}:0003\" in the SeaBIOS log:\n{log}"
    );
    let addr = seg * 16;
    assert_eq!(addr % 2048, 0, "ROM at {addr:#x}");
    assert!(
        (0xC0000..0xE0000).contains(&addr) && addr as usize + p.image.len() <= 0xE0000,
        "ROM at {addr:#x}"
    );
    // Exactly once: during the scan (a $PnP ROM is not also registered as a boot vector).
    assert_eq!(con.matches(INIT16_MARKER).count(), 1, "{con:?}");
}

#[test]
fn seabios_drops_a_packed_rom_with_a_bad_checksum() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = packed_rom(dir.path());
    let mut rom = p.image.clone();
    let last = rom.len() - 1;
    rom[last] = rom[last].wrapping_add(1);
    let run = boot(dir.path(), &rom, &multiboot::exit_stub(0x21));
    assert_eq!(run.guest_exit_value(), Some(0x21));
    assert!(
        run.seabios_log
            .contains("Found option rom with bad checksum"),
        "SeaBIOS log:\n{}",
        run.seabios_log
    );
    let con = String::from_utf8_lossy(&run.debugcon);
    assert!(!con.contains(INIT16_MARKER), "init16 ran anyway: {con:?}");
}

#[test]
fn packed_32_bit_entries_run_from_the_shadowed_rom() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = packed_rom(dir.path());
    let guest_o = gas(dir.path(), "guest", GUEST_S);
    let guest_bin = dir.path().join("guest.text");
    toolchain::run(
        Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&guest_o)
            .arg(&guest_bin),
    )
    .unwrap();
    let body = std::fs::read(&guest_bin).unwrap();
    let run = boot(
        dir.path(),
        &p.image,
        &multiboot::image(multiboot::LOAD_ADDR, &body, 0, 0),
    );
    let con = String::from_utf8_lossy(&run.debugcon).into_owned();
    assert_eq!(run.guest_exit_value(), Some(0x21), "guest output: {con:?}");
    let seg = printed_segment(&con);
    let rom = seg * 16;
    // call_cpuid and call_halt are static: find them through the layout of main.o's .text
    // and the object's symbol table, independently of pack's global symbol list.
    let main = std::fs::read(dir.path().join("main.o")).unwrap();
    let text = p
        .sections
        .iter()
        .find(|s| s.object == "main.o" && s.name == ".text")
        .unwrap()
        .offset as u32;
    let local = |name: &str| rom + text + local_symbol(&main, name);
    let want = format!(
        "r={rom:08x} i=00000000\n\
         c=00000005 d=00000001 a={cpuid:08x} x=00000011\n\
         c=00000023 d=00000001 a={halt:08x} x=00000022\n\
         c=00000000 d=00000000 a=00000000\n",
        cpuid = local("call_cpuid"),
        halt = local("call_halt"),
    );
    assert!(con.contains(&want), "expected {want:?} in {con:?}");
}

/// Value of the symbol `name` in the object `data`.
fn local_symbol(data: &[u8], name: &str) -> u32 {
    use object::{Object as _, ObjectSymbol as _};
    let f = object::File::parse(data).unwrap();
    let s = f
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} not in the symbol table"));
    s.address() as u32
}
