//! The `trace` backend: wraps any backend so that every call it implements is counted and
//! timed (TSC cycles) per call site — the call number and the return address the caller
//! pushed — with an optional ring of the last N events.
//!
//! Where the counters live is described in [`area`]: a region of the ROM's private RAM
//! ([`crate::ram`], taken from conventional memory at POST), after the regions of the backend
//! it wraps; a ROM whose 16-bit init never ran (no BIOS) has no private RAM and counts
//! nothing.
//!
//! Wrapper shapes (the inner routine follows its wrapper in the same routine):
//! - **returning calls** (class C and X): save what `rdtsc` would destroy — the argument
//!   registers EAX/EDX, and for class X everything — take the start TSC, reload the arguments,
//!   copy the stack arguments (the inner routine sees exactly the caller's frame), `call` the
//!   inner routine, then take the end TSC and account for the call (below), restore, `ret`.
//!   Halt's time is its idle time.
//! - **calls that do not return** (IRET, SYSEXIT, and routines with no `ret`, e.g. Shutdown):
//!   account for the call with zero cycles, restore, and fall into the inner routine with the
//!   stack exactly as on entry.
//!
//! Accounting adds 1 and the cycles to one pair of 64-bit counters with `lock add`/`lock adc`:
//! the call site's slot in the call-site table, or the call's own counter slot when the ROM
//! has no table, the site finds no slot, or the call was reached by `jmp` (JUMP_REL: no
//! return address). The common path — the site already owns the first slot its lookup tries —
//! is straight-line: hash the return address (`imul`, `shr`, `and`), compare the slot's caller
//! and tag, four locked adds. Everything else (probing on, claiming a free slot with
//! `lock cmpxchg`, overflow) is out of line after the wrapper. [`area`] explains why the counts
//! stay exact on SMP and when an interrupt re-enters the ROM between any two instructions.

pub mod area;

use crate::backend::{Answer, Backend};
use crate::emit::{Emit, assemble};
use crate::error::GenError;
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_abi::calls::NUM_CALLS;
use vmi_abi::calls::{Loc, Reg, RegClass, RegSet};

/// Tag of the trace area's private-RAM region.
pub const REGION: [u8; 4] = *b"trce";

/// The trace backend around `inner`.
#[derive(Debug, Clone, Copy)]
pub struct Trace<B> {
    /// The backend whose calls are traced.
    pub inner: B,
    /// Ring entries (0 = no ring; else a power of two, at most 65536).
    pub ring: u32,
    /// Call-site slots (0 = no call-site table; else a power of two, at most
    /// [`area::MAX_SITES`]).
    pub sites: u32,
}

impl<B: Backend> Trace<B> {
    /// Traces `inner` without an event ring, with [`area::DEFAULT_SITES`] call-site slots.
    pub fn new(inner: B) -> Trace<B> {
        Trace {
            inner,
            ring: 0,
            sites: area::DEFAULT_SITES,
        }
    }

    /// The area layout this ROM writes.
    pub fn layout(&self) -> area::Layout {
        area::Layout {
            slots: NUM_CALLS as u32,
            ring: self.ring,
            sites: self.sites,
        }
    }

    /// Whether the ring and site sizes are ones the area layout allows.
    fn check_sizes(&self) -> Result<(), GenError> {
        let bad = |problem| {
            Err(GenError::Inconsistent {
                backend: "trace".into(),
                call: 0,
                name: "-",
                problem,
            })
        };
        if self.ring != 0 && !(self.ring.is_power_of_two() && self.ring <= 1 << 16) {
            return bad("the ring size must be 0 or a power of two up to 65536");
        }
        if self.sites != 0 && !(self.sites.is_power_of_two() && self.sites <= area::MAX_SITES) {
            return bad("the call-site slots must be 0 or a power of two up to 1024");
        }
        if self.layout().kib() > area::MAX_KIB {
            return bad(
                "the trace area would not fit in the 63 KiB of conventional memory SeaBIOS keeps \
                 (it clears everything below 0x90000 before booting): fewer call-site slots or \
                 a smaller ring",
            );
        }
        Ok(())
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
/// `o` as `[ecx + o - bias]`), or jumps to `skip` when there is no private RAM.
fn area_pointer(e: &mut Emit, skip: CodeLabel) -> Result<i32, GenError> {
    let region = e.ram_region(&REGION)?.offset as i32;
    Ok(crate::ram::pointer(e, ecx, skip)? - region)
}

/// [`area_pointer`] when the area is known to exist (ECX := area + the returned bias).
fn reload_area(e: &mut Emit) -> Result<i32, GenError> {
    let region = e.ram_region(&REGION)?.offset as i32;
    let link = e.data_offset().ok_or(GenError::Inconsistent {
        backend: "trace".into(),
        call: 0,
        name: "-",
        problem: "the trace backend needs the private-RAM link",
    })? as i32;
    let bias = e.image_base_biased(ecx)? as i32;
    e.a.add(ecx, dword_ptr(ecx + (link - bias)))?;
    Ok(bias - region)
}

/// `lock add` 1, and the cycles in EDX:EAX if `cycles`, to the 64-bit counter pair at
/// `[base + at]` (count, then cycles 8 bytes on).
fn add_counts(e: &mut Emit, base: AsmMemoryOperand, cycles: bool) -> Result<(), GenError> {
    e.a.lock().add(dword_ptr(base), 1)?;
    e.a.lock().adc(dword_ptr(base + 4), 0)?;
    if cycles {
        e.a.lock().add(dword_ptr(base + 8), eax)?;
        e.a.lock().adc(dword_ptr(base + 12), edx)?;
    }
    Ok(())
}

/// How one wrapper accounts for its call.
struct Account {
    call: Call,
    /// Whether EDX:EAX holds cycles to add (returning calls) or there are none.
    cycles: bool,
    /// Where the caller's return address is, as `[esp + ret]` when accounting starts; `None`
    /// when there is none (JUMP_REL): the call is counted unattributed.
    ret: Option<i32>,
}

/// The out-of-line part of a call-site lookup, emitted after the wrapper (see [`slow_path`]).
struct SlowPath {
    entry: CodeLabel,
    found: CodeLabel,
    done: CodeLabel,
    bias: i32,
}

/// Adds the call to its counters (ECX = area + `bias`; EDX:EAX = cycles if `acc.cycles`, kept).
/// Leaves ECX changed, every other register as it was; returns the out-of-line part to emit
/// later, if any.
fn account(
    e: &mut Emit,
    layout: &area::Layout,
    acc: &Account,
    bias: i32,
) -> Result<Option<SlowPath>, GenError> {
    let own = layout.count_at(acc.call as u32) as i32 - bias;
    let Some(ret) = acc.ret.filter(|_| layout.sites > 0) else {
        return add_counts(e, ecx + own, acc.cycles).map(|()| None);
    };
    let table = layout.sites_offset() as i32 - bias;
    let tag = (area::SITE_TAG + acc.call as u32) as i32;
    let mut p = SlowPath {
        entry: e.a.create_label(),
        found: e.a.create_label(),
        done: e.a.create_label(),
        bias,
    };
    e.a.push(ebx)?;
    // EBX := the first slot's byte offset; ECX := its address (+ bias); EBX := the caller.
    e.a.imul_3(ebx, dword_ptr(esp + ret + 4), area::HASH_MULTIPLIER as i32)?;
    slot_offset(e, layout, ebx)?;
    e.a.add(ecx, ebx)?;
    e.a.mov(ebx, dword_ptr(esp + ret + 4))?;
    e.a.cmp(dword_ptr(ecx + table), ebx)?;
    e.a.jne(p.entry)?;
    e.a.cmp(dword_ptr(ecx + table + 4), tag)?;
    e.a.jne(p.entry)?;
    e.a.set_label(&mut p.found)?;
    add_counts(e, ecx + table + area::site_off::COUNT as i32, acc.cycles)?;
    e.a.set_label(&mut p.done)?;
    e.a.pop(ebx)?;
    Ok(Some(p))
}

/// `reg := (reg >> (27 − bits)) & ((slots − 1) << 5)`: from `caller × HASH_MULTIPLIER` to the
/// byte offset of the caller's first slot ([`area::site_hash`]).
fn slot_offset(e: &mut Emit, layout: &area::Layout, reg: AsmRegister32) -> Result<(), GenError> {
    e.a.shr(reg, 27 - layout.site_bits())?;
    e.a.and(reg, ((layout.sites - 1) * area::SITE_SIZE) as i32)?;
    Ok(())
}

/// The lookup's out-of-line part, entered when the first slot tried is not the site's: EBX =
/// the caller, ECX = area + bias + that slot's offset, the caller's EBX on the stack, cycles in
/// EDX:EAX. Probes on (wrapping), claims a free slot with `lock cmpxchg` on its caller word
/// then tags it, and jumps back to `found` with ECX = area + bias + the slot's offset — or,
/// after [`area::Layout::probes`] slots or for caller 0, adds to the call's own counters
/// (overflow) and jumps back to `done`. Never waits on anything another context does.
fn slow_path(
    e: &mut Emit,
    layout: &area::Layout,
    acc: &Account,
    mut p: SlowPath,
) -> Result<(), GenError> {
    let table = layout.sites_offset() as i32 - p.bias;
    let slot = ecx + esi + table;
    let tag = (area::SITE_TAG + acc.call as u32) as i32;
    let mut probe = e.a.create_label();
    let mut check = e.a.create_label();
    let mut next = e.a.create_label();
    let mut overflow = e.a.create_label();
    let mut claimed = e.a.create_label();
    let mut hit = e.a.create_label();
    e.a.set_label(&mut p.entry)?;
    e.a.push(eax)?;
    e.a.push(edx)?;
    e.a.push(esi)?;
    e.a.imul_3(esi, ebx, area::HASH_MULTIPLIER as i32)?;
    slot_offset(e, layout, esi)?;
    e.a.sub(ecx, esi)?;
    e.a.test(ebx, ebx)?;
    e.a.jz(overflow)?;
    e.a.mov(edx, layout.probes() as i32)?;
    e.a.set_label(&mut probe)?;
    e.a.mov(eax, dword_ptr(slot))?;
    e.a.cmp(eax, ebx)?;
    e.a.je(check)?;
    e.a.test(eax, eax)?;
    e.a.jnz(next)?;
    // Free (EAX = 0): claim it; if another context was first, EAX is its caller.
    e.a.lock().cmpxchg(dword_ptr(slot), ebx)?;
    e.a.je(claimed)?;
    e.a.cmp(eax, ebx)?;
    e.a.jne(next)?;
    e.a.set_label(&mut check)?;
    e.a.cmp(dword_ptr(slot + 4), tag)?;
    e.a.je(hit)?;
    e.a.set_label(&mut next)?;
    e.a.add(esi, area::SITE_SIZE as i32)?;
    e.a.and(esi, ((layout.sites - 1) * area::SITE_SIZE) as i32)?;
    e.a.dec(edx)?;
    e.a.jnz(probe)?;
    e.a.set_label(&mut overflow)?;
    e.a.pop(esi)?;
    e.a.pop(edx)?;
    e.a.pop(eax)?;
    let own = layout.count_at(acc.call as u32) as i32 - p.bias;
    add_counts(e, ecx + own, acc.cycles)?;
    e.a.jmp(p.done)?;
    e.a.set_label(&mut claimed)?;
    e.a.mov(dword_ptr(slot + 4), tag)?;
    e.a.set_label(&mut hit)?;
    e.a.add(ecx, esi)?;
    e.a.pop(esi)?;
    e.a.pop(edx)?;
    e.a.pop(eax)?;
    e.a.jmp(p.found)?;
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
    /// Count-only wrapper for a routine that does not return; falls into the inner code at
    /// `inner` with the stack and every register as on entry. `jumped`: reached by `jmp`
    /// (JUMP_REL), so there is no return address on the stack.
    fn no_return(
        &self,
        call: Call,
        e: &mut Emit,
        inner: CodeLabel,
        jumped: bool,
    ) -> Result<(), GenError> {
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
        let depth = 8 + 4 * saved.len() as i32;
        let acc = Account {
            call,
            cycles: false,
            ret: (!jumped).then_some(depth),
        };
        let slow = account(e, &layout, &acc, bias)?;
        if layout.ring > 0 {
            // (a site lookup leaves ECX elsewhere)
            let bias = if slow.is_some() {
                reload_area(e)?
            } else {
                bias
            };
            log_event(e, &layout, call, None, depth, bias)?;
        }
        e.a.set_label(&mut skip)?;
        for r in saved.iter().rev() {
            e.a.pop(*r)?;
        }
        e.a.pop(ecx)?;
        e.a.popfd()?;
        if let Some(p) = slow {
            e.a.jmp(inner)?;
            slow_path(e, &layout, &acc, p)?;
        }
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
        let acc = Account {
            call,
            cycles: true,
            ret: Some(start + frame),
        };
        let slow = account(e, &layout, &acc, bias)?;
        if layout.ring > 0 {
            // (a site lookup leaves ECX elsewhere)
            let bias = if slow.is_some() {
                reload_area(e)?
            } else {
                bias
            };
            log_event(e, &layout, call, Some(start), start + frame, bias)?;
        }
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
        if let Some(p) = slow {
            slow_path(e, &layout, &acc, p)?;
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Trace<B> {
    fn name(&self) -> String {
        format!("trace({})", self.inner.name())
    }

    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        self.check_sizes()?;
        // What does the inner backend do here, and can its routine return?
        let (probe, answer) = assemble("trace probe", 0, &e.shared().clone(), |s| {
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
            self.no_return(call, e, inner, answer == Answer::Jump)?;
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
        self.inner.init16(a)
    }

    fn ram(&self) -> Result<Vec<crate::ram::Region>, GenError> {
        self.check_sizes()?;
        let mut regions = self.inner.ram()?;
        regions.push(crate::ram::Region {
            tag: REGION,
            size: self.layout().kib() * 1024,
            align: area::ALIGN as u32,
            per_cpu: false,
        });
        Ok(regions)
    }

    fn ram_init16(
        &self,
        a: &mut CodeAssembler,
        layout: &crate::ram::Layout,
    ) -> Result<(), GenError> {
        a.push(ecx)?;
        a.push(edx)?;
        self.inner.ram_init16(a, layout)?;
        a.pop(edx)?;
        a.pop(ecx)?;
        let at = layout
            .region(&REGION)
            .ok_or(GenError::Ram {
                tag: "trce".into(),
                problem: "the trace area's region is missing from the layout",
            })?
            .offset;
        init16(a, &self.layout(), at)
    }

    fn needs_ram(&self, call: Call) -> bool {
        self.inner.needs_ram(call)
    }

    fn nop_on_hypervisor(&self, call: Call) -> bool {
        self.inner.nop_on_hypervisor(call)
    }

    fn helper_names(&self) -> Vec<&'static str> {
        self.inner.helper_names()
    }

    fn emit_helper(&self, name: &str, e: &mut Emit) -> Result<(), GenError> {
        self.inner.emit_helper(name, e)
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

/// The area's header, written by the private-RAM init at POST (ES = the block's segment, the
/// area at `at` in it, ECX = the build id, EDX = the ROM's physical address).
fn init16(a: &mut CodeAssembler, layout: &area::Layout, at: u32) -> Result<(), GenError> {
    let kib = layout.kib();
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
        (area::off::SITES, layout.sites_offset()),
        (area::off::SITE_SLOTS, layout.sites),
        (area::off::PROBES, layout.probes()),
        (area::off::SITE_SIZE, area::SITE_SIZE),
    ];
    let w = |off: u32| dword_ptr(at + off).es();
    for (off, v) in constants {
        a.mov(w(off), v as i32)?;
    }
    a.mov(w(area::off::BUILD_ID), ecx)?;
    a.mov(w(area::off::ROM_PHYS), edx)?;
    // Check word: ~(constant words + build id + ROM address).
    let fixed: u32 = constants
        .iter()
        .filter(|(o, _)| area::CHECKED.contains(o))
        .fold(0u32, |s, (_, v)| s.wrapping_add(*v));
    a.mov(eax, ecx)?;
    a.add(eax, edx)?;
    a.add(eax, fixed as i32)?;
    a.not(eax)?;
    a.mov(w(area::off::CHECK), eax)?;
    // Magic last: a host never sees a signed but half-written header.
    a.mov(w(0), MAGIC_LO as i32)?;
    a.mov(w(4), MAGIC_HI as i32)?;
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
        for (ring, sites) in [
            (0, 0),
            (64, 0),
            (0, area::DEFAULT_SITES),
            (512, 1024),
            (64, 16),
            (0, 1),
        ] {
            let t = generate(
                &Trace {
                    inner: Native,
                    ring,
                    sites,
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

    #[test]
    fn a_layout_seabios_would_wipe_or_the_area_cannot_hold_is_refused() {
        for (ring, sites, why) in [
            (2048, 0, "63 KiB"),
            (1024, 1024, "63 KiB"),
            (0, 2048, "up to 1024"),
            (0, 12, "up to 1024"),
            (3, 0, "ring size"),
        ] {
            let e = generate(
                &Trace {
                    inner: Native,
                    ring,
                    sites,
                },
                &BuildOptions::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "ring {ring}, sites {sites}: {e}");
        }
    }

    #[test]
    fn a_jump_rel_iret_is_wrapped_without_a_lookup_and_keeps_its_frame() {
        use crate::backend::Override;
        let jumped = Override {
            base: Native,
            call: Call::IRET,
            emit: |e| {
                e.a.iretd()?;
                Ok(Answer::Jump)
            },
        };
        for (ring, sites) in [(0, 0), (0, 64), (64, 64)] {
            let t = generate(
                &Trace {
                    inner: jumped,
                    ring,
                    sites,
                },
                &BuildOptions::default(),
            )
            .unwrap();
            let iret = &t.calls[Call::IRET as usize];
            assert_eq!(iret.answer, Answer::Jump);
            // No return address to look up: counted as IRET's unattributed calls.
            let code = &t.image[iret.offset as usize..(iret.offset + iret.size) as usize];
            let decoded: Vec<iced_x86::Instruction> =
                iced_x86::Decoder::with_ip(32, code, 0, iced_x86::DecoderOptions::NONE)
                    .into_iter()
                    .collect();
            assert!(
                decoded
                    .iter()
                    .all(|i| i.mnemonic() != iced_x86::Mnemonic::Imul)
            );
            assert!(decoded.iter().any(|i| i.has_lock_prefix()));
        }
    }
}
