//! The `trace` backend: wraps any backend so that every call it implements is counted and
//! timed (TSC cycles) per call number, with an optional ring of the last N events.
//!
//! Where the counters live is described in [`area`]: the 16-bit init carves them out of
//! conventional memory and records their position relative to the ROM in the image's private
//! data word; a ROM whose 16-bit init never ran (no BIOS) finds that word 0 and counts nothing.
//!
//! Wrapper shapes (the inner routine follows its wrapper in the same routine):
//! - **returning calls** (class C and X): save what `rdtsc` would destroy — the argument
//!   registers EAX/EDX, and for class X everything — take the start TSC, reload the arguments,
//!   copy the stack arguments (the inner routine sees exactly the caller's frame), `call` the
//!   inner routine, then take the end TSC, add 1 and the cycles to the call's 64-bit counters
//!   with `lock add`/`lock adc` (no lost counts on SMP or when an interrupt re-enters the
//!   wrapper between any two instructions), restore, `ret`. Halt's time is its idle time.
//! - **calls that do not return** (IRET, SYSEXIT, and routines with no `ret`, e.g. Shutdown):
//!   count first (zero cycles), restore, and fall into the inner routine with the stack exactly
//!   as on entry.

pub mod area;

use crate::backend::{Answer, Backend};
use crate::emit::{Emit, assemble};
use crate::error::GenError;
use crate::manifest;
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_abi::calls::NUM_CALLS;
use vmi_abi::calls::{Loc, Reg, RegClass, RegSet};

/// Size of the private data the trace backend keeps in the image: the area's offset from the
/// ROM's own physical address (a u32, 0 = no area), then one byte that balances the image's
/// checksum after the 16-bit init wrote that offset (SeaBIOS checks ROMs again after their
/// init, when it collects boot vectors).
pub const DATA_SIZE: usize = 5;

/// The trace backend around `inner`.
#[derive(Debug, Clone, Copy)]
pub struct Trace<B> {
    /// The backend whose calls are traced.
    pub inner: B,
    /// Ring entries (0 = no ring; else a power of two, at most 65536).
    pub ring: u32,
}

impl<B: Backend> Trace<B> {
    /// Traces `inner` without an event ring.
    pub fn new(inner: B) -> Trace<B> {
        Trace { inner, ring: 0 }
    }

    /// The area layout this ROM writes.
    pub fn layout(&self) -> area::Layout {
        area::Layout {
            slots: NUM_CALLS as u32,
            ring: self.ring,
        }
    }
}

fn r32(r: Reg) -> AsmRegister32 {
    match r {
        Reg::Eax => eax,
        Reg::Ebx => ebx,
        Reg::Ecx => ecx,
        Reg::Edx => edx,
        Reg::Esi => esi,
        Reg::Edi => edi,
        Reg::Ebp => ebp,
    }
}

/// Loads the trace area's linear address plus the returned bias into ECX (address area offset
/// `o` as `[ecx + o - bias]`), or jumps to `skip` when there is no area.
fn area_pointer(e: &mut Emit, skip: CodeLabel) -> Result<i32, GenError> {
    let slot = e.data_offset().ok_or(GenError::Inconsistent {
        backend: "trace".into(),
        call: 0,
        name: "-",
        problem: "the trace backend needs its private data word",
    })? as i32;
    let bias = e.image_base_biased(ecx)? as i32;
    e.a.cmp(dword_ptr(ecx + (slot - bias)), 0)?;
    e.a.je(skip)?;
    e.a.add(ecx, dword_ptr(ecx + (slot - bias)))?;
    Ok(bias)
}

/// `lock add` 1 to the call's count (ECX = area + bias).
fn count_one(e: &mut Emit, layout: &area::Layout, call: Call, bias: i32) -> Result<(), GenError> {
    let at = layout.count_at(call as u32) as i32 - bias;
    e.a.lock().add(dword_ptr(ecx + at), 1)?;
    e.a.lock().adc(dword_ptr(ecx + at + 4), 0)?;
    Ok(())
}

/// Appends a ring entry (ECX = area + bias; EDX:EAX = cycles, clobbered; start TSC at
/// `[esp + start]`, caller's return address at `[esp + ret]`, both measured before this pushes).
fn log_event(
    e: &mut Emit,
    layout: &area::Layout,
    call: Call,
    start: Option<i32>,
    ret: i32,
    bias: i32,
) -> Result<(), GenError> {
    if layout.ring == 0 {
        return Ok(());
    }
    let ring = layout.ring_offset() as i32 - bias;
    e.a.push(ebx)?;
    e.a.mov(ebx, 1)?;
    e.a.lock()
        .xadd(dword_ptr(ecx + (area::off::RING_NEXT as i32 - bias)), ebx)?;
    e.a.and(ebx, (layout.ring - 1) as i32)?;
    e.a.shl(ebx, area::EVENT_SIZE.trailing_zeros())?;
    e.a.add(ebx, ecx)?;
    e.a.mov(dword_ptr(ebx + ring + 16), eax)?;
    e.a.mov(dword_ptr(ebx + ring + 20), edx)?;
    e.a.mov(dword_ptr(ebx + ring), call as i32)?;
    e.a.mov(eax, dword_ptr(esp + ret + 4))?;
    e.a.mov(dword_ptr(ebx + ring + 4), eax)?;
    match start {
        Some(s) => {
            e.a.mov(eax, dword_ptr(esp + s + 4))?;
            e.a.mov(dword_ptr(ebx + ring + 8), eax)?;
            e.a.mov(eax, dword_ptr(esp + s + 8))?;
            e.a.mov(dword_ptr(ebx + ring + 12), eax)?;
        }
        None => {
            e.a.rdtsc()?;
            e.a.mov(dword_ptr(ebx + ring + 8), eax)?;
            e.a.mov(dword_ptr(ebx + ring + 12), edx)?;
        }
    }
    e.a.pop(ebx)?;
    Ok(())
}

impl<B: Backend> Trace<B> {
    /// Count-only wrapper for a routine that does not return; falls into the inner code.
    fn no_return(&self, call: Call, e: &mut Emit) -> Result<(), GenError> {
        let layout = self.layout();
        let mut skip = e.a.create_label();
        e.a.pushfd()?;
        e.a.push(ecx)?;
        let saved = if layout.ring > 0 {
            vec![eax, edx]
        } else {
            Vec::new()
        };
        for r in &saved {
            e.a.push(*r)?;
        }
        let bias = area_pointer(e, skip)?;
        count_one(e, &layout, call, bias)?;
        let depth = 8 + 4 * saved.len() as i32;
        log_event(e, &layout, call, None, depth, bias)?;
        e.a.set_label(&mut skip)?;
        for r in saved.iter().rev() {
            e.a.pop(*r)?;
        }
        e.a.pop(ecx)?;
        e.a.popfd()?;
        Ok(())
    }

    /// Count-and-time wrapper for a returning routine; `inner` is the label of its code.
    fn returning(&self, call: Call, e: &mut Emit, inner: CodeLabel) -> Result<(), GenError> {
        let spec = call.spec();
        let layout = self.layout();
        let strict = spec.class == RegClass::X;
        let outputs = RegSet::of(spec.outputs);
        let input = |r: Reg| spec.args.iter().any(|a| a.loc == Loc::Reg(r));
        // Registers rdtsc destroys that must survive: arguments, and for class X every
        // register that is not an output (an output-only register is the inner call's to set).
        let pre: Vec<Reg> = [Reg::Eax, Reg::Edx]
            .into_iter()
            .filter(|r| input(*r) || (strict && !outputs.contains(*r)))
            .collect();
        for r in &pre {
            e.a.push(r32(*r))?;
        }
        e.a.rdtsc()?;
        e.a.push(edx)?;
        e.a.push(eax)?;
        // [esp] = start lo, [esp+4] = start hi, then `pre` (last pushed lowest).
        for (i, r) in pre.iter().rev().enumerate() {
            if input(*r) {
                e.a.mov(r32(*r), dword_ptr(esp + 8 + 4 * i as i32))?;
            }
        }
        let words = spec.stack_words() as i32;
        let frame = 8 + 4 * pre.len() as i32; // bytes between ESP and the return address
        for _ in 0..words {
            e.a.push(dword_ptr(esp + frame + 4 * words))?;
        }
        e.a.call(inner)?;
        if words > 0 {
            e.a.lea(esp, ptr(esp + 4 * words))?;
        }
        // Registers the accounting destroys that must survive: outputs, and ECX for class X.
        let post: Vec<Reg> = [Reg::Eax, Reg::Edx, Reg::Ecx]
            .into_iter()
            .filter(|r| outputs.contains(*r) || (strict && *r == Reg::Ecx))
            .collect();
        for r in &post {
            e.a.push(r32(*r))?;
        }
        let start = 4 * post.len() as i32;
        let mut skip = e.a.create_label();
        e.a.rdtsc()?;
        e.a.sub(eax, dword_ptr(esp + start))?;
        e.a.sbb(edx, dword_ptr(esp + start + 4))?;
        let bias = area_pointer(e, skip)?;
        count_one(e, &layout, call, bias)?;
        let cycles = layout.cycles_at(call as u32) as i32 - bias;
        e.a.lock().add(dword_ptr(ecx + cycles), eax)?;
        e.a.lock().adc(dword_ptr(ecx + cycles + 4), edx)?;
        log_event(e, &layout, call, Some(start), start + frame, bias)?;
        e.a.set_label(&mut skip)?;
        for r in post.iter().rev() {
            e.a.pop(r32(*r))?;
        }
        // Drop the start TSC, then restore (class X non-outputs) or drop the saved arguments.
        let mut drop = 8;
        for r in pre.iter().rev() {
            if strict && !outputs.contains(*r) {
                if drop > 0 {
                    e.a.lea(esp, ptr(esp + drop))?;
                    drop = 0;
                }
                e.a.pop(r32(*r))?;
            } else {
                drop += 4;
            }
        }
        if drop > 0 {
            e.a.lea(esp, ptr(esp + drop))?;
        }
        e.a.ret()?;
        Ok(())
    }
}

impl<B: Backend> Backend for Trace<B> {
    fn name(&self) -> String {
        format!("trace({})", self.inner.name())
    }

    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        // What does the inner backend do here, and can its routine return?
        let (probe, answer) = assemble("trace probe", 0, e.data_offset(), |s| {
            self.inner.emit(call, s)
        })?;
        if !answer.has_code() {
            return Ok(answer);
        }
        let returns = matches!(answer, Answer::Call)
            && call.spec().class != RegClass::N
            && crate::audit::may_return(&probe);
        let mut inner = e.a.create_label();
        if returns {
            self.returning(call, e, inner)?;
        } else {
            self.no_return(call, e)?;
        }
        e.a.set_label(&mut inner)?;
        // A zero-size anchor: the inner code may put a label on its own first instruction.
        e.a.zero_bytes()?;
        self.inner.emit(call, e)
    }

    fn note(&self, call: Call) -> &'static str {
        self.inner.note(call)
    }

    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        self.inner.init32(e)
    }

    fn init16(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        init16(a, &self.layout())?;
        self.inner.init16(a)
    }

    fn data_size(&self) -> usize {
        DATA_SIZE
    }
}

/// The magic as two little-endian words.
const MAGIC_LO: u32 = u32::from_le_bytes([b'V', b'M', b'I', b'T']);
/// Second half of the magic.
const MAGIC_HI: u32 = u32::from_le_bytes([b'R', b'A', b'C', b'E']);
const _: () = assert!(
    u64::from_le_bytes(area::MAGIC) == (MAGIC_LO as u64 | (MAGIC_HI as u64) << 32),
    "MAGIC_LO/HI spell area::MAGIC"
);

/// Offset of the private data word, known to the 16-bit init through the manifest.
fn manifest_field(f: &vmi_abi::layout::Field) -> u32 {
    (manifest::OFFSET + f.offset) as u32
}

/// The 16-bit part: take memory below 640 KiB, write the area header, record the position.
/// Runs at POST with CS = the ROM's segment and the image writable; preserves every register.
fn init16(a: &mut CodeAssembler, layout: &area::Layout) -> Result<(), GenError> {
    let kib = layout.kib();
    let mut done = a.create_label();
    a.pushad()?;
    a.push(ds)?;
    a.push(es)?;
    a.cld()?;
    // Where is the private data word? The manifest says (its offset field at 0x70).
    a.xor(ebx, ebx)?;
    a.mov(bx, word_ptr(manifest_field(&manifest::F_DATA)).cs())?;
    a.test(bx, bx)?;
    a.jz(done)?;
    // Already initialised (a second call as a boot-connection vector): keep the first area.
    a.cmp(dword_ptr(bx).cs(), 0)?;
    a.jne(done)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(ax, word_ptr(0x413))?;
    a.sub(ax, kib as i32)?;
    a.jc(done)?;
    a.mov(word_ptr(0x413), ax)?;
    a.shl(ax, 6)?;
    a.mov(es, ax)?;
    a.xor(di, di)?;
    a.mov(cx, (kib * 512) as i32)?;
    a.xor(ax, ax)?;
    a.rep().stosw()?;
    let constants = [
        (area::off::VERSION, area::VERSION),
        (area::off::HEADER_SIZE, area::HEADER_SIZE),
        (area::off::SLOTS, layout.slots),
        (area::off::COUNTERS, layout.counters()),
        (area::off::SLOT_SIZE, area::SLOT_SIZE),
        (area::off::RING, layout.ring_offset()),
        (area::off::RING_ENTRIES, layout.ring),
        (area::off::EVENT_SIZE, area::EVENT_SIZE),
        (area::off::AREA_SIZE, kib * 1024),
    ];
    for (off, v) in constants {
        a.mov(dword_ptr(off).es(), v as i32)?;
    }
    // Build id from the manifest, ROM physical address from CS.
    a.mov(eax, dword_ptr(manifest_field(&manifest::F_BUILD_ID)).cs())?;
    a.mov(dword_ptr(area::off::BUILD_ID).es(), eax)?;
    a.xor(edx, edx)?;
    a.mov(dx, cs)?;
    a.shl(edx, 4)?;
    a.mov(dword_ptr(area::off::ROM_PHYS).es(), edx)?;
    // Check word: ~(constant words + build id + ROM address).
    let fixed: u32 = constants
        .iter()
        .filter(|(o, _)| area::CHECKED.contains(o))
        .fold(0u32, |s, (_, v)| s.wrapping_add(*v));
    a.add(eax, edx)?;
    a.add(eax, fixed as i32)?;
    a.not(eax)?;
    a.mov(dword_ptr(area::off::CHECK).es(), eax)?;
    // Magic last: a host never sees a signed but half-written header.
    a.mov(dword_ptr(0).es(), MAGIC_LO as i32)?;
    a.mov(dword_ptr(4).es(), MAGIC_HI as i32)?;
    // Private data word := area physical − ROM physical; the byte after it := minus the sum
    // of its bytes, so the image still sums to zero.
    a.xor(eax, eax)?;
    a.mov(ax, es)?;
    a.shl(eax, 4)?;
    a.sub(eax, edx)?;
    a.mov(dword_ptr(bx).cs(), eax)?;
    a.mov(dl, al)?;
    a.add(dl, ah)?;
    a.shr(eax, 16)?;
    a.add(dl, al)?;
    a.add(dl, ah)?;
    a.neg(dl)?;
    a.mov(byte_ptr(bx + 4).cs(), dl)?;
    a.set_label(&mut done)?;
    a.pop(es)?;
    a.pop(ds)?;
    a.popad()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::audit;
    use crate::generate::{BuildOptions, generate};
    use crate::native::Native;
    use optionrom::validate::Severity;

    #[test]
    fn trace_rom_passes_its_audit_and_answers_like_native() {
        for ring in [0, 64] {
            let t = generate(
                &Trace {
                    inner: Native,
                    ring,
                },
                &BuildOptions::default(),
            )
            .unwrap();
            let n = generate(&Native, &BuildOptions::default()).unwrap();
            for (a, b) in t.calls.iter().zip(&n.calls) {
                assert_eq!(a.answer, b.answer, "{}", a.name);
            }
            assert_eq!(t.backend, "trace(native)");
            let r = audit(&t.image);
            assert!(
                r.passed(),
                "{:#?}",
                r.findings
                    .iter()
                    .filter(|f| f.severity == Severity::Fail)
                    .collect::<Vec<_>>()
            );
            assert!(t.data.is_some());
        }
    }
}
