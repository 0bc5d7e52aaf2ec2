//! The `seabios` profile: what SeaBIOS 1.16 requires to load an `-option-rom` file and run its
//! init entry, and where it puts the ROM (src/optionroms.c: `vgarom_setup` clears the area,
//! `run_file_roms`/`deploy_romfile` copy the file, `init_optionrom` checks it with
//! `is_valid_rom`, runs it when `get_pnp_rom` finds a `$PnP` header, and keeps the size the
//! size byte then declares). It judges image 0 only. The facts measured with QEMU 7.2 are in
//! PLATFORM.md.

use super::rule::profile_rules;
use super::{Out, hex_bytes, no_image};
use crate::build::{BLOCK, INIT_ENTRY as ENTRY_AT, PCIR_PTR, PNP_PTR};
use crate::bytes::{checksum as sum_of, u32_at};
use crate::image::{Image, Rom};
use crate::pnp;
use vmi_abi::consts;

#[cfg(test)]
use super::examples::{self, Examples, chain, patched, plain, resum, vmi};

/// The profile's name.
pub const PROFILE: &str = "seabios";

/// Option ROMs are placed at multiples of this (SeaBIOS `OPTION_ROM_ALIGN`).
pub const ROM_ALIGN: u32 = 2048;
/// Size of QEMU's VGA BIOS at the start of the option-ROM area (≈39 KiB).
pub const VGA_ROM_LEN: u32 = 39 * 1024;
/// Where the first `-option-rom` file lands after that VGA ROM (with `-net none`): the next
/// [`ROM_ALIGN`] boundary, 0xCA000. A NIC ROM or another option ROM moves it up.
pub const TYPICAL_START: u32 = (consts::SCAN_START + VGA_ROM_LEN).div_ceil(ROM_ALIGN) * ROM_ALIGN;

/// What SeaBIOS does with a file that holds no image.
const NOT_A_ROM: &str = "SeaBIOS ignores the file";

/// A rule's check.
type Check = fn(&Seabios<'_>, &mut Out);

profile_rules! {
    /// The `seabios` rules, in the order the profile evaluates and reports them:
    Check;
    (SIGNATURE, signature),
    (SIZE, size),
    (LENGTH, length),
    (CHECKSUM, checksum),
    (MISSING_BYTES, missing_bytes),
    (PCIR_ALIGNMENT, pcir_alignment),
    (PNP, pnp_header),
    (INIT_ENTRY, init_entry),
    (PLACEMENT, placement),
    (IMAGES, images),
    (SIZE_REREAD, size_reread),
}

/// Runs the profile on `data`: image 0's rules, or the failing `signature` of a non-ROM.
pub(super) fn run(o: &mut Out, data: &[u8], rom: &Rom) {
    let Some(img) = rom.images.first() else {
        return no_image(o, &SIGNATURE, data, NOT_A_ROM);
    };
    let cx = Seabios {
        data,
        rom,
        img,
        view: img.bytes(data),
    };
    for (rule, check) in CHECKS {
        o.check(rule, &cx, *check);
    }
}

/// Image 0 as SeaBIOS loads it.
struct Seabios<'a> {
    data: &'a [u8],
    rom: &'a Rom,
    img: &'a Image,
    /// The image's bytes (its declared length, cut to the file).
    view: &'a [u8],
}

impl Seabios<'_> {
    /// File offset of image offset `rel`.
    fn abs(&self, rel: usize) -> Option<usize> {
        Some(self.img.offset.saturating_add(rel))
    }

    /// Whether `is_valid_rom` gets past the size byte (SeaBIOS looks no further when it is 0).
    fn sized(&self) -> bool {
        self.img.size_byte != 0
    }

    /// The file is shorter than the size byte declares, and its present bytes sum to 0.
    fn cut_but_summing(&self) -> bool {
        self.sized() && self.img.sum.is_none() && sum_of(self.view) == 0
    }
}

crate::rule! {
    /// The file starts with the option-ROM signature `55 AA`.
    ///
    /// `is_valid_rom` (src/optionroms.c) rejects a ROM whose u16 at 0 is not
    /// `OPTION_ROM_SIGNATURE` (0xAA55): SeaBIOS ignores the file. A file that is empty or
    /// shorter than 3 bytes fails the same way, and then this is the profile's only finding.
    pub static SIGNATURE {
        profile: PROFILE,
        id: "signature",
        severity: Fail,
        source: "SeaBIOS `is_valid_rom` (src/optionroms.c)",
    }
}

fn signature(cx: &Seabios<'_>, o: &mut Out) {
    o.pass(cx.abs(0), "55 AA at 0x0".into());
}

#[cfg(test)]
fn signature_examples() -> Examples {
    Examples::flagging(b"MZ\x90\x00".to_vec())
}

crate::rule! {
    /// The size byte at 0x2 is not 0.
    ///
    /// `is_valid_rom` rejects a ROM whose size byte (its length in 512-byte units) is 0, before
    /// it sums anything; so `length` and `checksum` are not reported then.
    pub static SIZE {
        profile: PROFILE,
        id: "size",
        severity: Fail,
        source: "SeaBIOS `is_valid_rom` (src/optionroms.c)",
    }
}

fn size(cx: &Seabios<'_>, o: &mut Out) {
    if cx.sized() {
        o.pass(
            cx.abs(2),
            format!(
                "size byte at 0x2 is {}: {:#x} bytes",
                cx.img.size_byte, cx.img.declared_len
            ),
        );
    } else {
        o.fail(
            cx.abs(2),
            "the size byte at 0x2 is 0: SeaBIOS's is_valid_rom rejects the ROM (expected the \
             image length in 512-byte units)"
                .into(),
        );
    }
}

#[cfg(test)]
fn size_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[2] = 0))
}

crate::rule! {
    /// The file holds all size×512 bytes its size byte declares.
    ///
    /// SeaBIOS copies the file (`deploy_romfile`), then checksums and keeps size×512 bytes
    /// (`init_optionrom`, `rom_confirm`): bytes the file does not hold read as whatever memory
    /// follows the copy — zero after `vgarom_setup` cleared the area, unless an earlier ROM
    /// file was longer. Not reported when the size byte is 0.
    pub static LENGTH {
        profile: PROFILE,
        id: "length",
        severity: Warn,
        source: "SeaBIOS `deploy_romfile`, `init_optionrom` (src/optionroms.c)",
    }
}

fn length(cx: &Seabios<'_>, o: &mut Out) {
    if !cx.sized() {
        return;
    }
    let declared = cx.img.declared_len;
    if cx.img.available >= declared {
        o.pass(
            cx.abs(2),
            format!("all {declared:#x} bytes the size byte declares are in the file"),
        );
    } else {
        o.warn(
            cx.abs(2),
            format!(
                "the file holds only {:#x} of the {declared:#x} bytes the size byte declares: \
                 SeaBIOS checksums and keeps {declared:#x} bytes, the missing ones read as \
                 whatever memory follows the copy (zero after SeaBIOS clears the ROM area, unless \
                 an earlier ROM file was longer)",
                cx.img.available
            ),
        );
    }
}

#[cfg(test)]
fn length_examples() -> Examples {
    Examples::flagging(vmi()[..0x180].to_vec())
}

crate::rule! {
    /// The size×512 bytes sum to 0 mod 256.
    ///
    /// `is_valid_rom` sums the size×512 bytes and, with the checksum enforced (QEMU's default
    /// `etc/optionroms-checksum`), drops a ROM whose sum is not 0 after logging `Found option
    /// rom with bad checksum`. A file cut short is summed with the missing bytes read as 0: it
    /// fails when the present bytes do not sum to 0, and only warns when they do (then
    /// `missing-bytes` says what runs). Not reported when the size byte is 0.
    pub static CHECKSUM {
        profile: PROFILE,
        id: "checksum",
        severity: Fail,
        source: "SeaBIOS `is_valid_rom` (src/optionroms.c); PLATFORM.md",
    }
}

fn checksum(cx: &Seabios<'_>, o: &mut Out) {
    if !cx.sized() {
        return;
    }
    let (declared, vlen) = (cx.img.declared_len, cx.view.len());
    let ck = declared - 1;
    match cx.img.sum {
        Some(0) => o.pass(
            cx.abs(ck),
            format!("the {declared:#x} bytes 0x0..{declared:#x} sum to 0 mod 256"),
        ),
        Some(s) => {
            let fix = cx.view.get(ck).map_or(String::new(), |&b| {
                format!(
                    "; e.g. the last byte at {ck:#x} ({b:#04x}) would have to be {:#04x}",
                    b.wrapping_sub(s)
                )
            });
            o.fail(
                cx.abs(ck),
                format!(
                    "the {declared:#x} bytes sum to {s:#04x}, expected 0: SeaBIOS logs 'Found \
                     option rom with bad checksum' and drops it{fix}"
                ),
            );
        }
        None if cx.cut_but_summing() => o.warn(
            cx.abs(2),
            format!(
                "only {vlen:#x} of {declared:#x} bytes are present; they sum to 0, so the \
                 checksum holds only if the missing bytes read as 0"
            ),
        ),
        None => o.fail(
            cx.abs(2),
            format!(
                "the {vlen:#x} present bytes (of {declared:#x}) sum to {:#04x} with the missing \
                 bytes read as 0, expected 0: SeaBIOS logs 'Found option rom with bad checksum' \
                 and drops it",
                sum_of(cx.view)
            ),
        ),
    }
}

#[cfg(test)]
fn checksum_examples() -> Examples {
    let mut d = vmi();
    d[0x1FF] ^= 1;
    Examples::flagging(d)
}

crate::rule! {
    /// A file shorter than its size byte declares does not sum to 0 on its own.
    ///
    /// When the present bytes of a cut file sum to 0, `is_valid_rom` accepts it: SeaBIOS then
    /// checksums, keeps and runs the bytes the file does not hold (read from memory after the
    /// copy), so what it loads depends on memory the file does not control. The finding names
    /// the missing range, an init entry that jumps into it, and the size byte that would
    /// declare what the file holds. Reported only in that case, right after `checksum`; when
    /// the present bytes do not sum to 0, `checksum` fails instead.
    pub static MISSING_BYTES {
        profile: PROFILE,
        id: "missing-bytes",
        severity: Fail,
        source: "SeaBIOS `is_valid_rom`, `init_optionrom` (src/optionroms.c)",
    }
}

fn missing_bytes(cx: &Seabios<'_>, o: &mut Out) {
    if !cx.cut_but_summing() {
        return;
    }
    let (declared, present) = (cx.img.declared_len, cx.view.len());
    let runs = match cx.img.init_target {
        Some(t) if t >= present => {
            format!(" (the init entry at 0x3 jumps to {t:#x}, into the missing bytes)")
        }
        _ => String::new(),
    };
    let blocks = present.div_ceil(BLOCK);
    o.fail(
        cx.abs(2),
        format!(
            "the size byte at 0x2 declares {declared:#x} bytes but the file ends at {present:#x}: \
             the bytes {present:#x}..{declared:#x} that SeaBIOS checksums, keeps and runs are not \
             in the file{runs}; the present bytes sum to 0, so SeaBIOS accepts the ROM and what \
             it loads depends on memory the file does not control; expected all {declared:#x} \
             bytes in the file, or a size byte of {blocks} ({:#x} bytes) declaring what it holds",
            blocks * BLOCK
        ),
    );
}

#[cfg(test)]
fn missing_bytes_examples() -> Examples {
    // 4 × 512 bytes cut to 700 whose present bytes sum to 0 (issue 12).
    let mut cut = plain(4 * 512)[..700].to_vec();
    cut[699] = 0;
    cut[699] = 0u8.wrapping_sub(sum_of(&cut));
    Examples::flagging(cut)
}

crate::rule! {
    /// The PCI data structure pointer at 0x18 is a multiple of 4.
    ///
    /// `get_pci_rom` prints `WARNING! Found unaligned PCI rom` for a pointer that is not 4-byte
    /// aligned when it maps a ROM from a PCI ROM BAR; an `-option-rom` file needs no PCI data
    /// structure at all.
    pub static PCIR_ALIGNMENT {
        profile: PROFILE,
        id: "pcir-alignment",
        severity: Warn,
        source: "SeaBIOS `get_pci_rom` (src/optionroms.c); PLATFORM.md",
    }
}

fn pcir_alignment(cx: &Seabios<'_>, o: &mut Out) {
    let ptr = usize::from(cx.img.pcir_ptr);
    if ptr == 0 {
        o.pass(
            cx.abs(PCIR_PTR),
            "no PCI data structure (pointer at 0x18 is 0); SeaBIOS does not need one for an \
             -option-rom file"
                .into(),
        );
    } else if ptr % 4 != 0 {
        o.warn(
            cx.abs(PCIR_PTR),
            format!(
                "the PCI data structure pointer at 0x18 is {ptr:#x}, not a multiple of 4: SeaBIOS \
                 prints 'WARNING! Found unaligned PCI rom' when it maps the ROM from a PCI ROM BAR"
            ),
        );
    } else {
        o.pass(
            cx.abs(PCIR_PTR),
            format!("the PCI data structure pointer at 0x18 is {ptr:#x}, 4-byte aligned"),
        );
    }
}

#[cfg(test)]
fn pcir_alignment_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0x18] = 0x22))
}

crate::rule! {
    /// A `$PnP` header makes SeaBIOS run the init entry during the option-ROM scan.
    ///
    /// `init_optionrom` far-calls the init entry at once only when `get_pnp_rom` finds the
    /// `"$PnP"` signature where the pointer at 0x1A leads (it checks nothing else); a ROM
    /// without one is registered as a boot-connection vector by `optionrom_setup` and
    /// initialised only when booting from it — too late for a VMI ROM's 16-bit init. The
    /// finding also names the header's bootstrap entry or boot-connection vector.
    pub static PNP {
        profile: PROFILE,
        id: "pnp",
        severity: Warn,
        source: "SeaBIOS `get_pnp_rom`, `init_optionrom`, `optionrom_setup` (src/optionroms.c); PLATFORM.md",
    }
}

fn pnp_header(cx: &Seabios<'_>, o: &mut Out) {
    let pnp_ptr = usize::from(cx.img.pnp_ptr);
    let later = "SeaBIOS registers the ROM as a boot-connection vector; init runs only when \
                 booting from it";
    if pnp_ptr == 0 {
        o.warn(
            cx.abs(PNP_PTR),
            format!("no $PnP header (pointer at 0x1A is 0): {later}"),
        );
    } else if u32_at(cx.view, pnp_ptr) == Some(pnp::SIGNATURE) {
        let vectors = match cx.img.pnp.present().and_then(|c| c.first()) {
            Some(h) if h.bev != 0 => format!("; it has a bootstrap entry vector at {:#x}", h.bev),
            Some(h) if h.bcv != 0 => format!("; it has a boot-connection vector at {:#x}", h.bcv),
            _ => "; no BEV/BCV: not offered as a boot device".to_string(),
        };
        o.pass(
            cx.abs(pnp_ptr),
            format!(
                "$PnP header at {pnp_ptr:#x}: the init entry is far-called during the option-ROM \
                 scan (real mode, AX=0, ES:DI → SeaBIOS's $PnP structure){vectors}"
            ),
        );
    } else {
        let found = cx
            .view
            .get(pnp_ptr..pnp_ptr + 4)
            .map_or("bytes outside the image".to_string(), hex_bytes);
        o.warn(
            cx.abs(PNP_PTR),
            format!(
                "the $PnP pointer at 0x1A ({pnp_ptr:#x}) leads to {found}, not \"$PnP\": {later}"
            ),
        );
    }
}

#[cfg(test)]
fn pnp_header_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[examples::PNP] = b'#'))
}

crate::rule! {
    /// The init entry at 0x3 holds code, and a `jmp` there stays inside the image.
    ///
    /// SeaBIOS far-calls ROM:0003 in real mode (`callrom`, AX = 0, BX = DX = 0xFFFF, ES:DI →
    /// its `$PnP` installation structure); the 4 bytes there are usually a near `jmp` to the
    /// 16-bit init. Zero bytes, or a jump before the image start or past its end, run whatever
    /// memory holds.
    pub static INIT_ENTRY {
        profile: PROFILE,
        id: "init-entry",
        severity: Fail,
        source: "SeaBIOS `callrom`, `init_optionrom` (src/optionroms.c); PLATFORM.md",
    }
}

fn init_entry(cx: &Seabios<'_>, o: &mut Out) {
    let (entry, vlen) = (&cx.img.init_entry, cx.view.len());
    let at = cx.abs(ENTRY_AT);
    if entry.len() < 3 {
        return o.fail(
            at,
            format!(
                "the image ends at {vlen:#x}, inside the init entry at 0x3; expected code there"
            ),
        );
    }
    if entry.iter().all(|&b| b == 0) {
        return o.fail(
            at,
            format!(
                "the init entry at 0x3 is {}: zero bytes, expected code (usually a near jmp); \
                 SeaBIOS far-calls ROM:0003",
                hex_bytes(entry)
            ),
        );
    }
    match (entry.first(), cx.img.init_target) {
        (Some(0xEB | 0xE9), Some(t)) if t < vlen => o.pass(
            at,
            format!("the init entry at 0x3 jumps to {t:#x}, inside the image"),
        ),
        (Some(0xEB | 0xE9), Some(t)) => o.fail(
            at,
            format!(
                "the init entry at 0x3 jumps to {t:#x}, outside the image ({vlen:#x} bytes); \
                 expected a target inside the image"
            ),
        ),
        (Some(0xEB | 0xE9), None) => o.fail(
            at,
            format!(
                "the init entry at 0x3 ({}) jumps before the image start",
                hex_bytes(entry)
            ),
        ),
        _ => o.pass(
            at,
            format!(
                "the init entry at 0x3 holds {}: not a near jmp, executed in place",
                hex_bytes(entry)
            ),
        ),
    }
}

#[cfg(test)]
fn init_entry_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[3..7].fill(0)))
}

crate::rule! {
    /// Where SeaBIOS places the ROM, after QEMU's VGA ROM, ends below 0xE0000.
    ///
    /// SeaBIOS reserves the file's length for the copy (`deploy_romfile` → `rom_reserve`), at
    /// the next `OPTION_ROM_ALIGN` (2 KiB) boundary after the ROMs before it — QEMU's ≈39 KiB
    /// VGA ROM puts the first `-option-rom` file at 0xCA000 with `-net none` — and keeps
    /// size×512 bytes. The VMI client scans only up to 0xDFFFF (vmi-abi.md §2.1): a ROM that
    /// would end past it after the VGA ROM warns, one longer than the whole window fails.
    pub static PLACEMENT {
        profile: PROFILE,
        id: "placement",
        severity: Fail,
        source: "SeaBIOS `deploy_romfile`, `rom_reserve` (src/optionroms.c, src/malloc.c); PLATFORM.md; vmi-abi.md §2.1",
    }
}

fn placement(cx: &Seabios<'_>, o: &mut Out) {
    let (img, data) = (cx.img, cx.data);
    let declared = img.declared_len;
    let reserve = data.len().saturating_sub(img.offset).max(declared);
    let window = (consts::SCAN_END - consts::SCAN_START) as usize;
    let start = TYPICAL_START as usize;
    let end = start.saturating_add(reserve);
    let what = format!(
        "SeaBIOS reserves {reserve:#x} bytes (the file, {:#x}, then keeps size×512 = {declared:#x})",
        data.len()
    );
    if reserve > window {
        o.fail(
            None,
            format!(
                "{what}: more than the whole {window:#x}-byte area {:#x}–{:#x}; the ROM cannot \
                 end below {:#x} where the VMI client stops scanning",
                consts::SCAN_START,
                consts::SCAN_END - 1,
                consts::SCAN_END
            ),
        );
    } else if end > consts::SCAN_END as usize {
        o.warn(
            None,
            format!(
                "{what}: after QEMU's ≈{} KiB VGA ROM it lands at {start:#x} (next {}-byte \
                 boundary) and would end at {:#x}, past {:#x} where the VMI client stops scanning \
                 (it fits only with a smaller VGA ROM)",
                VGA_ROM_LEN / 1024,
                ROM_ALIGN,
                end - 1,
                consts::SCAN_END - 1
            ),
        );
    } else {
        o.pass(
            None,
            format!(
                "{what}: it is copied to the next {}-byte boundary after the VGA ROM ({start:#x} \
                 after QEMU's ≈{} KiB VGA ROM with -net none; a NIC ROM or the file name moves \
                 it) and ends at {:#x}, below {:#x}",
                ROM_ALIGN,
                VGA_ROM_LEN / 1024,
                end - 1,
                consts::SCAN_END
            ),
        );
    }
}

#[cfg(test)]
fn placement_examples() -> Examples {
    let mut big = vmi();
    big.resize(129 * 1024, 0);
    Examples::flagging(big)
}

crate::rule! {
    /// Further images of the file are ignored: SeaBIOS keeps image 0 only.
    ///
    /// For an `-option-rom` file SeaBIOS keeps image 0's size×512 bytes (`init_optionrom`,
    /// `rom_confirm`); the images after it (a PCI ROM chain's EFI image, say) are never
    /// initialised. The finding counts them and names where the second starts.
    pub static IMAGES {
        profile: PROFILE,
        id: "images",
        severity: Info,
        source: "SeaBIOS `init_optionrom`, `rom_confirm` (src/optionroms.c)",
    }
}

fn images(cx: &Seabios<'_>, o: &mut Out) {
    let images = &cx.rom.images;
    match images.get(1) {
        None => o.pass(None, "one image".into()),
        Some(second) => o.pass(
            Some(second.offset),
            format!(
                "{} images: for -option-rom SeaBIOS keeps only image 0's size×512 bytes; images \
                 1..{} (from {:#x}) are ignored",
                images.len(),
                images.len() - 1,
                second.offset
            ),
        ),
    }
}

#[cfg(test)]
fn images_examples() -> Examples {
    Examples::flagging(chain())
}

crate::rule! {
    /// After init SeaBIOS re-reads the size byte: an init routine may shrink the ROM.
    ///
    /// `init_optionrom` ends with `rom_confirm(newrom->size * 512)`: the size byte is read
    /// again after the init entry ran, and only that many bytes stay reserved — a ROM may
    /// lower it to give back memory (the later boot-vector scan checksums the ROM again). The
    /// finding gives the size it declares now.
    pub static SIZE_REREAD {
        profile: PROFILE,
        id: "size-reread",
        severity: Info,
        source: "SeaBIOS `init_optionrom`, `rom_confirm` (src/optionroms.c); PLATFORM.md",
    }
}

fn size_reread(cx: &Seabios<'_>, o: &mut Out) {
    o.pass(
        cx.abs(2),
        format!(
            "after init SeaBIOS re-reads the size byte at 0x2 (now {} = {:#x} bytes) and keeps \
             that many; an init routine may shrink the ROM by lowering it (the later boot-vector \
             scan checksums the ROM again)",
            cx.img.size_byte, cx.img.declared_len
        ),
    );
}

#[cfg(test)]
fn size_reread_examples() -> Examples {
    let mut d = vmi();
    d.resize(4 * 512, 0);
    d[2] = 4;
    Examples::flagging(resum(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Profile;
    use crate::validate::examples::{Table, check_profile};

    /// Every rule of the profile, with the examples declared next to it.
    const EXAMPLES: Table = &[
        (&SIGNATURE, signature_examples),
        (&SIZE, size_examples),
        (&LENGTH, length_examples),
        (&CHECKSUM, checksum_examples),
        (&MISSING_BYTES, missing_bytes_examples),
        (&PCIR_ALIGNMENT, pcir_alignment_examples),
        (&PNP, pnp_header_examples),
        (&INIT_ENTRY, init_entry_examples),
        (&PLACEMENT, placement_examples),
        (&IMAGES, images_examples),
        (&SIZE_REREAD, size_reread_examples),
    ];

    #[test]
    fn every_rule_passes_one_image_and_flags_another() {
        check_profile(Profile::Seabios, EXAMPLES);
    }
}
