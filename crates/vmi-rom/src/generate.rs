//! The generator: lays out a VMI ROM around a [`Backend`].
//!
//! Image layout (offsets are image offsets; everything after the header is 16-byte aligned):
//!
//! | Where | What |
//! |---|---|
//! | 0x00 | option-ROM + VMI header (vmi-abi.md §1.1), `jmp rel16` to the 16-bit init at 0x03 |
//! | 0x20 | PCI data structure 3.0 (15AD:0801, class 05/80/00 by default) |
//! | 0x40 | `$PnP` header (manufacturer/product strings: SeaBIOS runs the init during its scan) |
//! | 0x60 | vmirom [`crate::manifest`] |
//! | 0x80 / 0x88 | Init / GetRelocationInfo entry slots: `jmp rel32` + `int3` padding |
//! | 0x90 | strings (license, manufacturer, product, backend name) |
//! | | GetRelocationInfo table: one u32 per call (type \| offset << 8) |
//! | | backend private data area (if any) |
//! | | GetRelocationInfo, Init (32-bit), 16-bit init |
//! | | one routine per implemented call, in call-number order |
//! | end | padding to 512 bytes; the last byte makes the sum 0 |
//!
//! GetRelocationInfo finds the table relative to its own run-time address, so the image works at
//! any 2 KiB boundary under any PAGE_OFFSET, with or without a BIOS having run the 16-bit init.

use crate::backend::{Answer, Backend};
use crate::emit::{Emit, Shared, assemble, assemble16};
use crate::error::GenError;
use crate::manifest;
use iced_x86::code_asm::*;
use optionrom::build::{Finish, ImageBuilder};
use optionrom::pcir::Pcir;
use optionrom::pnp::PnpHeader;
use optionrom::vmi::{VmiHeaderSpec, write_header};
use vmi_abi::calls::{CALL_IDS, NUM_CALLS};
use vmi_abi::{Call, RelocType, consts};

/// Alignment of every routine.
pub const CODE_ALIGN: usize = 16;
/// Offset of the PCI data structure.
pub const PCIR_AT: usize = 0x20;
/// Offset of the `$PnP` header.
pub const PNP_AT: usize = 0x40;
/// Default PCI class code: bridge / other.
pub const CLASS_BRIDGE_OTHER: u32 = 0x05_80_00;

/// What goes into the image besides the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Manufacturer string (`$PnP`), printed by Linux.
    pub vendor: String,
    /// Product string (`$PnP`), printed by Linux.
    pub product: String,
    /// License string.
    pub license: String,
    /// VMI header `virtual_top`.
    pub virtual_top: u32,
    /// PCI vendor and device id.
    pub pci_id: (u16, u16),
    /// PCI class code.
    pub class_code: u32,
    /// ROM code revision (major, minor).
    pub version: (u8, u8),
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            vendor: "vmirom".into(),
            product: "VMI ROM".into(),
            license: "GPL v2".into(),
            virtual_top: 0,
            pci_id: (consts::PCI_VENDOR_VMWARE, consts::PCI_DEVICE_VMI),
            class_code: CLASS_BRIDGE_OTHER,
            version: (1, 0),
        }
    }
}

/// Where one call went.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CallEntry {
    /// The call.
    #[serde(skip)]
    pub call: Call,
    /// Call number.
    pub number: u8,
    /// Call name.
    pub name: &'static str,
    /// What GetRelocationInfo answers.
    pub answer: Answer,
    /// Image offset of its code (0 without code).
    pub offset: u32,
    /// Code size in bytes.
    pub size: u32,
    /// The backend's reason.
    pub note: &'static str,
}

/// A routine's place in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    /// Image offset.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A generated ROM and its layout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Generated {
    /// The finished image (checksummed).
    #[serde(skip)]
    pub image: Vec<u8>,
    /// Backend name.
    pub backend: String,
    /// Build id (see [`manifest`]).
    pub build_id: u32,
    /// Every call, by number.
    pub calls: Vec<CallEntry>,
    /// GetRelocationInfo table.
    pub table: Span,
    /// GetRelocationInfo code.
    pub get_reloc: Span,
    /// Init (32-bit).
    pub init32: Span,
    /// 16-bit init.
    pub init16: Span,
    /// The backend's helper routines.
    pub helpers: Vec<(&'static str, Span)>,
    /// The private-RAM block's layout (empty: none).
    pub ram: crate::ram::Layout,
    /// Backend private data, if any.
    pub data: Option<Span>,
}

fn span(offset: usize, size: usize) -> Span {
    Span {
        offset: offset as u32,
        size: size as u32,
    }
}

/// Checks an answer against the ABI (vmi-abi.md §3.5).
fn check_answer(backend: &str, call: Call, answer: Answer, code: &[u8]) -> Result<(), GenError> {
    let spec = call.spec();
    if !spec.allowed.contains(answer.reloc()) {
        return Err(GenError::ForbiddenAnswer {
            backend: backend.into(),
            call: spec.number,
            name: spec.name,
            answer: answer.reloc().name(),
            allowed: spec
                .allowed
                .iter()
                .map(RelocType::name)
                .collect::<Vec<_>>()
                .join("|"),
        });
    }
    let problem = match (answer.has_code(), code.is_empty()) {
        (true, true) => Some("answered with code but emitted none"),
        (false, false) => Some("emitted code but answered NONE or NOP"),
        _ => None,
    };
    match problem {
        Some(problem) => Err(GenError::Inconsistent {
            backend: backend.into(),
            call: spec.number,
            name: spec.name,
            problem,
        }),
        None => Ok(()),
    }
}

/// GetRelocationInfo: EAX = call number → EAX = absolute address, EDX = type (class C). An
/// entry flagged [`ram::NEEDS_RAM`](crate::ram::NEEDS_RAM) answers NONE while the ROM has no
/// private RAM (its 16-bit init never ran) or Init has not made it ready.
fn get_reloc_code(e: &mut Emit, table: u32) -> Result<(), GenError> {
    let has_ram = !e.shared().ram.regions.is_empty();
    let mut none = e.a.create_label();
    let mut no_addr = e.a.create_label();
    let mut plain = e.a.create_label();
    e.a.cmp(eax, NUM_CALLS as i32)?;
    e.a.jae(none)?;
    e.image_base(edx)?;
    e.a.mov(ecx, dword_ptr(edx + eax * 4 + table as i32))?;
    if has_ram {
        ram_gate(e, none, &mut plain)?;
    }
    e.a.set_label(&mut plain)?;
    e.a.mov(eax, ecx)?;
    e.a.shr(eax, 8)?;
    e.a.jz(no_addr)?;
    e.a.add(eax, edx)?;
    e.a.set_label(&mut no_addr)?;
    e.a.movzx(edx, cl)?;
    e.a.ret()?;
    e.a.set_label(&mut none)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.ret()?;
    Ok(())
}

/// For a NEEDS_RAM entry (ECX, image base in EDX): NONE unless the block exists and is ready;
/// otherwise clear the flag and go on at `plain`.
fn ram_gate(e: &mut Emit, none: CodeLabel, plain: &mut CodeLabel) -> Result<(), GenError> {
    use crate::ram::{NEEDS_RAM, NOP_ON_HYPERVISOR, ready};
    let mut check_hv = e.a.create_label();
    let mut as_nop = e.a.create_label();
    let mut flags_done = e.a.create_label();
    e.a.test(cl, (NEEDS_RAM | NOP_ON_HYPERVISOR) as i32)?;
    e.a.jz(*plain)?;
    let link = e.data_offset().ok_or(GenError::Inconsistent {
        backend: "generator".into(),
        call: 0,
        name: "-",
        problem: "a call needs private RAM but the image has no RAM link",
    })?;
    // The block: image base + link.
    e.a.mov(eax, dword_ptr(edx + link as i32))?;
    e.a.test(cl, NEEDS_RAM as i32)?;
    e.a.jz(check_hv)?;
    // NEEDS_RAM: the block must exist and be ready.
    e.a.test(eax, eax)?;
    e.a.jz(none)?;
    e.a.test(
        dword_ptr(edx + eax + crate::ram::off::READY as i32),
        ready::READY,
    )?;
    e.a.jz(none)?;
    e.a.set_label(&mut check_hv)?;
    // NOP_ON_HYPERVISOR: NOP once Init found the hypervisor the backend is for.
    e.a.test(cl, NOP_ON_HYPERVISOR as i32)?;
    e.a.jz(flags_done)?;
    e.a.test(eax, eax)?;
    e.a.jz(flags_done)?;
    e.a.test(
        dword_ptr(edx + eax + crate::ram::off::READY as i32),
        ready::HYPERVISOR,
    )?;
    e.a.jnz(as_nop)?;
    e.a.set_label(&mut flags_done)?;
    e.a.and(ecx, !u32::from(NEEDS_RAM | NOP_ON_HYPERVISOR) as i32)?;
    e.a.jmp(*plain)?;
    e.a.set_label(&mut as_nop)?;
    e.a.mov(ecx, vmi_abi::RelocType::Nop as i32)?;
    Ok(())
}

/// Appends one assembled routine at the next aligned offset.
fn place<T>(
    b: &mut ImageBuilder,
    what: &str,
    shared: &Shared,
    body: impl Fn(&mut Emit) -> Result<T, GenError>,
) -> Result<(Span, T), GenError> {
    b.align(CODE_ALIGN);
    let at = b.len();
    let (code, out) = assemble(what, at as u64, shared, body)?;
    if !code.is_empty() {
        b.append(&code, 1);
    }
    Ok((span(at, code.len()), out))
}

/// Generates a ROM with `backend` and audits it ([`crate::audit`]): an image that fails its
/// audit is an error.
pub fn generate(backend: &dyn Backend, opts: &BuildOptions) -> Result<Generated, GenError> {
    let g = generate_unaudited(backend, opts)?;
    let report = crate::audit::audit(&g.image);
    let fails: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == optionrom::validate::Severity::Fail)
        .map(|f| f.message.clone())
        .collect();
    if fails.is_empty() {
        Ok(g)
    } else {
        Err(GenError::Audit(fails.join("; ")))
    }
}

/// Generates a ROM without auditing it (tests use this to build deliberately broken ROMs).
pub fn generate_unaudited(
    backend: &dyn Backend,
    opts: &BuildOptions,
) -> Result<Generated, GenError> {
    let name = backend.name();
    let mut b = ImageBuilder::new(consts::HEADER_SIZE)?;
    let vendor = b.add_string(&opts.vendor)?;
    let product = b.add_string(&opts.product)?;
    let backend_name = b.add_string(&name)?;
    let mut pcir = Pcir::new(opts.pci_id.0, opts.pci_id.1, opts.class_code);
    pcir.code_revision = u16::from(opts.version.0) << 8 | u16::from(opts.version.1);
    b.set_pcir(Some(PCIR_AT), pcir)?;
    b.add_pnp(
        Some(PNP_AT),
        PnpHeader::new(vendor, product, opts.class_code),
    )?;

    // The table, filled in once every routine has its place.
    b.align(CODE_ALIGN);
    let table = b.append(&[0u8; 4 * NUM_CALLS], 1);
    let ram = crate::ram::Layout::of(&backend.ram()?)?;
    let data = match (backend.data_size(), ram.regions.is_empty()) {
        (0, true) => None,
        (0, false) => Some(crate::ram::LINK_SIZE),
        (n, true) => Some(n),
        (_, false) => {
            return Err(GenError::Inconsistent {
                backend: name,
                call: 0,
                name: "-",
                problem: "asks for image data and private RAM: the RAM link is the one data area",
            });
        }
    }
    .map(|n| {
        b.align(CODE_ALIGN);
        span(b.append(&vec![0u8; n], 1), n)
    });
    let ram_template = (!ram.regions.is_empty()).then(|| {
        let t = crate::ram::template(&ram);
        b.align(CODE_ALIGN);
        span(b.append(&t, 1), t.len())
    });
    let mut shared = Shared {
        data: data.map(|d| d.offset),
        ram: ram.clone(),
        helpers: Vec::new(),
    };
    let helpers = place_helpers(&mut b, backend, &mut shared)?;

    let (get_reloc, ()) = place(&mut b, "GetRelocationInfo", &shared, |e| {
        get_reloc_code(e, table as u32)
    })?;
    let (init32, ()) = place(&mut b, "Init", &shared, |e| backend.init32(e))?;
    b.align(CODE_ALIGN);
    let init16_at = b.len();
    let init16_code = assemble16(init16_at as u64, |a| {
        crate::ram::init16(a, &ram, &|a| backend.ram_init16(a, &ram))?;
        backend.init16(a)
    })?;
    b.append(&init16_code, 1);
    let init16 = span(init16_at, init16_code.len());
    b.set_init_entry(init16_at)?;

    let mut calls = Vec::with_capacity(NUM_CALLS);
    for call in CALL_IDS {
        let what = format!("call {} ({})", call as u8, call.spec().name);
        b.align(CODE_ALIGN);
        let at = b.len();
        let (code, answer) = assemble(&what, at as u64, &shared, |e| backend.emit(call, e))?;
        check_answer(&name, call, answer, &code)?;
        let offset = if code.is_empty() {
            0
        } else {
            b.append(&code, 1)
        };
        let mut entry = manifest::entry(answer.reloc(), offset as u32);
        if answer.has_code() && backend.needs_ram(call) {
            if ram.regions.is_empty() {
                return Err(GenError::Inconsistent {
                    backend: name,
                    call: call as u8,
                    name: call.spec().name,
                    problem: "needs private RAM but the backend declares none",
                });
            }
            entry |= u32::from(crate::ram::NEEDS_RAM);
        }
        if answer.has_code() && backend.nop_on_hypervisor(call) {
            entry |= u32::from(crate::ram::NOP_ON_HYPERVISOR);
        }
        b.write_at(table + 4 * call as usize, &entry.to_le_bytes())?;
        calls.push(CallEntry {
            call,
            number: call as u8,
            name: call.spec().name,
            answer,
            offset: offset as u32,
            size: code.len() as u32,
            note: backend.note(call),
        });
    }
    check_requires(&name, &calls)?;

    write_header(
        &mut b,
        &VmiHeaderSpec {
            virtual_top: opts.virtual_top,
            license: opts.license.clone(),
            ..VmiHeaderSpec::default()
        },
        init32.offset as usize,
        get_reloc.offset as usize,
    )?;
    write_manifest(&mut b, table, backend_name, data, ram_template)?;
    let mut image = b.finish(&Finish::default())?;
    let build_id = stamp_build_id(&mut image);
    Ok(Generated {
        image,
        backend: name,
        build_id,
        calls,
        table: span(table, 4 * NUM_CALLS),
        get_reloc,
        init32,
        init16,
        helpers,
        ram,
        data,
    })
}

/// Places the backend's helpers (two passes: a relative `call` has one size whatever its
/// target, so the first pass gives every helper's place) and records them in `shared`.
fn place_helpers(
    b: &mut ImageBuilder,
    backend: &dyn Backend,
    shared: &mut Shared,
) -> Result<Vec<(&'static str, Span)>, GenError> {
    let names = backend.helper_names();
    let mut at = b.len();
    shared.helpers = names.iter().map(|n| (*n, 0)).collect();
    for (i, name) in names.iter().enumerate() {
        at = at.next_multiple_of(CODE_ALIGN);
        if let Some(slot) = shared.helpers.get_mut(i) {
            slot.1 = at as u64;
        }
        let (code, ()) = assemble(name, at as u64, shared, |e| backend.emit_helper(name, e))?;
        at += code.len();
    }
    let mut placed = Vec::with_capacity(names.len());
    for name in names {
        let (span, ()) = place(b, name, shared, |e| backend.emit_helper(name, e))?;
        let planned = shared.helpers.iter().find(|(n, _)| *n == name).map(|h| h.1);
        if planned != Some(u64::from(span.offset)) {
            return Err(GenError::NoConvergence {
                what: format!("helper {name}"),
                passes: 2,
            });
        }
        placed.push((name, span));
    }
    Ok(placed)
}

/// 66 ⇒ 67–70: a call whose `requires` list is non-empty drags those calls along.
fn check_requires(backend: &str, calls: &[CallEntry]) -> Result<(), GenError> {
    for c in calls.iter().filter(|c| c.answer != Answer::None) {
        for &r in c.call.spec().requires {
            let dep = calls.get(usize::from(r));
            if dep.map(|d| d.answer) != Some(Answer::Call) {
                return Err(GenError::Inconsistent {
                    backend: backend.into(),
                    call: c.call as u8,
                    name: c.call.spec().name,
                    problem: "implemented without the calls it requires (66 needs 67-70 as CALL_REL)",
                });
            }
        }
    }
    Ok(())
}

fn write_manifest(
    b: &mut ImageBuilder,
    table: usize,
    backend_name: u16,
    data: Option<Span>,
    ram_template: Option<Span>,
) -> Result<(), GenError> {
    let mut block = vec![0u8; manifest::LAYOUT.size];
    let set = |block: &mut Vec<u8>, f: &vmi_abi::layout::Field, v: u64| {
        f.write(block, v).ok_or(optionrom::Error::Placement {
            what: f.name,
            offset: manifest::OFFSET + f.offset,
            len: f.size(),
            reason: "outside the manifest block",
        })
    };
    set(&mut block, &manifest::F_MAGIC, u64::from(manifest::MAGIC))?;
    set(
        &mut block,
        &manifest::F_VERSION,
        u64::from(manifest::VERSION),
    )?;
    set(&mut block, &manifest::F_COUNT, NUM_CALLS as u64)?;
    set(&mut block, &manifest::F_TABLE, table as u64)?;
    set(&mut block, &manifest::F_BACKEND, u64::from(backend_name))?;
    if let Some(d) = data {
        set(&mut block, &manifest::F_DATA, u64::from(d.offset))?;
        set(&mut block, &manifest::F_DATA_SIZE, u64::from(d.size))?;
    }
    if let Some(t) = ram_template {
        set(&mut block, &manifest::F_RAM, u64::from(t.offset))?;
    }
    b.write_at(manifest::OFFSET, &block)?;
    Ok(())
}

/// Writes the build id (FNV-1a of the image with the id field and the checksum byte zero) and
/// re-balances the checksum byte.
fn stamp_build_id(image: &mut [u8]) -> u32 {
    let at = manifest::OFFSET + manifest::F_BUILD_ID.offset;
    let last = image.len().saturating_sub(1);
    if let Some(b) = image.get_mut(last) {
        *b = 0;
    }
    let id = manifest::fnv1a(image);
    if let Some(f) = image.get_mut(at..at + 4) {
        f.copy_from_slice(&id.to_le_bytes());
    }
    let sum = optionrom::bytes::checksum(image);
    if let Some(b) = image.get_mut(last) {
        *b = 0u8.wrapping_sub(sum);
    }
    id
}

/// Verifies a build id: recomputes it from `image`.
pub fn verify_build_id(image: &[u8], id: u32) -> bool {
    let mut copy = image.to_vec();
    let at = manifest::OFFSET + manifest::F_BUILD_ID.offset;
    if let Some(f) = copy.get_mut(at..at + 4) {
        f.fill(0);
    }
    if let Some(b) = copy.last_mut() {
        *b = 0;
    }
    manifest::fnv1a(&copy) == id
}
