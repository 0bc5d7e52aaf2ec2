//! Assembling the guest program from host-chosen [`Step`]s.

mod executor;
mod stress;
mod timer;

use super::gdt;
use super::idt;
use super::layout::{self as l, MemoryMap, var};
use super::paging;
use super::stress::Stress;
use super::vector::{Op, Vector, slot_ok};
use crate::error::HarnessError;
use crate::protocol::{
    self as p, CALL_EFLAGS, EXIT_DONE, EXIT_EXCEPTION_BASE, EXIT_INTERRUPT, EXIT_NESTED, EndStatus,
    Outcome, StepId, canary,
};
use crate::qemu::{DEBUGCON_PORT, EXIT_PORT};
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;
use vmi_abi::calls::Reg;
use vmi_abi::consts::{
    ACCEPTED_LICENSES, ENTRY_GET_RELOC, ENTRY_INIT, INIT_SUCCESS, LICENSE_UNSPECIFIED,
    LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_PERCPU, LINUX_TSS, LINUX_USER_DS, PCI_DEVICE_VMI,
    PCI_VENDOR_VMWARE, ROM_SIGNATURE, SCAN_END, SCAN_START, SCAN_STRIDE, VMI_API_MAJOR,
    VMI_SIGNATURE,
};
use vmi_abi::layout::{pci, vrom};

/// Version of the memory map and program conventions (echoed in `HELLO`).
pub const LAYOUT_VERSION: u32 = 3;

/// One thing the guest does, in the order the host lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Scan 0xC0000–0xDFFFF in 2 KiB steps through the linear map like Linux's
    /// `probe_vmi_rom`, reporting every 55AA candidate with its outcome; the first accepted ROM
    /// ends the scan (later ones are not looked at, as in Linux) and is used by the ROM steps.
    Probe,
    /// `cli`, then near-call ROM + 0x80 with canaries in every register; a non-zero EAX
    /// skips the remaining ROM steps (Linux stays native).
    Init,
    /// EAX = the call number, canaries elsewhere, near-call ROM + 0x88. The answer's EAX is
    /// kept for call vectors (calls 0 .. [`RELOC_SLOTS`](l::var::RELOC_SLOTS)).
    GetReloc(u32),
    /// Run call vector `n` of [`GuestConfig::vectors`] (see [`super::vector`]); skipped like
    /// the ROM steps when no ROM is active.
    Vector(u32),
    /// Report what the CPU is natively (`MACHINE`): boot control registers, CPUID, and
    /// trap-guarded native `rdpmc`, `rdmsr 0x1B` and local-APIC read.
    Machine,
    /// Run stress configuration `n` of [`GuestConfig::stress`] (see [`super::stress`]);
    /// skipped like the ROM steps when no ROM is active.
    Stress(u32),
}

impl Step {
    /// The id the guest reports for this step.
    pub const fn id(self) -> StepId {
        match self {
            Step::Probe => StepId::Probe,
            Step::Init => StepId::Init,
            Step::GetReloc(n) => StepId::GetReloc(n),
            Step::Vector(n) => StepId::Vector(n),
            Step::Machine => StepId::Machine,
            Step::Stress(n) => StepId::Stress(n),
        }
    }
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// Linux's `PAGE_OFFSET` (the kernel linear map starts there).
    pub page_offset: u32,
    /// Enable paging (off: flat 32-bit protected mode, linear = physical).
    pub paging: bool,
    /// The program.
    pub steps: Vec<Step>,
    /// The call vectors [`Step::Vector`] refers to, by index.
    pub vectors: Vec<Vector>,
    /// The stress configurations [`Step::Stress`] refers to, by index.
    pub stress: Vec<Stress>,
    /// Echoed in `HELLO`, so a stream can be tied to the image that wrote it.
    pub nonce: u32,
    /// The guest's interrupt handlers return with `push [esp+8]; popfd; retf 4` instead of
    /// `iretd`: for an engine that cannot emulate a protected-mode `iret` (kvm-pvm, where
    /// KVM's instruction emulator runs every instruction and handles `iret` in real mode
    /// only). Same-privilege interrupts only (the guest takes none in ring 3).
    pub no_iret: bool,
}

impl GuestConfig {
    /// The Linux activation sequence: probe, Init, then GetRelocationInfo for each of `calls`.
    pub fn linux(page_offset: u32, paging: bool, calls: &[u32]) -> GuestConfig {
        let mut steps = vec![Step::Probe, Step::Init];
        steps.extend(calls.iter().map(|n| Step::GetReloc(*n)));
        GuestConfig {
            page_offset,
            paging,
            steps,
            vectors: Vec::new(),
            stress: Vec::new(),
            nonce: 0,
            no_iret: false,
        }
    }
}

/// A built guest.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// The multiboot image (boot it with `-kernel`).
    pub image: Vec<u8>,
    /// The memory map it runs with.
    pub map: MemoryMap,
    /// Physical address of the entry point.
    pub entry: u32,
    /// Size of the generated code.
    pub code_len: usize,
    /// Physical addresses of the 256 interrupt stubs.
    pub stubs: Vec<u32>,
    /// Every place the stress steps call the ROM from, by configuration, call and role.
    pub call_sites: Vec<super::CallSite>,
}

impl GuestImage {
    /// A System.map (`ADDRESS T NAME` lines, linear addresses) with a function at each stress
    /// call site's `call` instruction (6 bytes before its return address) named after who
    /// makes the call — `stress_loop_GetCR0`, `timer_handler_RDTSC`, `second_cpu_GetCR3`,
    /// `shared_site_RDTSC`, with `_2`, `_3` … for further sites of one name — and `_etext`
    /// after the last: a trace report then names each site `NAME+0x6`.
    pub fn system_map(&self) -> String {
        use super::SiteRole;
        let mut sites = self.call_sites.clone();
        sites.sort_by_key(|c| c.ret);
        let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
        let mut out = String::new();
        for c in &sites {
            let role = match c.role {
                SiteRole::Loop => "stress_loop",
                SiteRole::Handler => "timer_handler",
                SiteRole::SecondCpu => "second_cpu",
                SiteRole::Shared => "shared_site",
            };
            let name = format!("{role}_{}", c.call.spec().name);
            let n = seen.entry(name.clone()).or_insert(0);
            *n += 1;
            let suffix = if *n > 1 {
                format!("_{n}")
            } else {
                String::new()
            };
            out.push_str(&format!("{:08x} T {name}{suffix}\n", c.ret.wrapping_sub(6)));
        }
        if let Some(last) = sites.last() {
            out.push_str(&format!("{:08x} T _etext\n", last.ret.wrapping_add(64)));
        }
        out
    }
}

/// Offsets of the host data (from [`HOST_DATA`](l::HOST_DATA)).
pub mod host_data {
    /// The 8-byte stream header.
    pub const STREAM_HEADER: u32 = 0x000;
    /// "unspecified" (what Linux compares when `license_offs` is 0), padded to 32 bytes.
    pub const LICENSE_UNSPECIFIED: u32 = 0x020;
    /// The accepted license strings, one per 32-byte slot.
    pub const ACCEPTED_LICENSES: u32 = 0x040;
    /// Size of one string slot.
    pub const SLOT: u32 = 0x20;
    /// A pristine copy of the GDT (restored after every call vector).
    pub const GDT_PRISTINE: u32 = 0x100;
    /// A pristine copy of the TSS (restored after every call vector).
    pub const TSS_PRISTINE: u32 = 0x200;
    /// The second CPU's real-mode trampoline, copied to
    /// [`AP_TRAMPOLINE`](crate::guest::layout::AP_TRAMPOLINE) by a stress step that uses it.
    pub const AP_TRAMPOLINE: u32 = 0x300;
}

/// Builds the guest image for `cfg`.
pub fn build(cfg: &GuestConfig) -> Result<GuestImage, HarnessError> {
    let map = MemoryMap::new(cfg.page_offset, cfg.paging)?;
    if let Some(Step::GetReloc(n)) = cfg
        .steps
        .iter()
        .find(|s| matches!(s, Step::GetReloc(n) if *n > StepId::MAX_ARG))
    {
        return Err(HarnessError::InvalidConfig {
            reason: format!(
                "call number {n} does not fit a step id (max {})",
                StepId::MAX_ARG
            ),
        });
    }
    validate(cfg)?;
    // Label addresses feed back into the code (far jump, the jump to the PAGE_OFFSET alias)
    // without changing any instruction size, so the second pass is final; check it anyway.
    let mut syms = Symbols::default();
    let mut out = None;
    for _ in 0..3 {
        let (code, next) = assemble(cfg, &map, &syms)?;
        if next == syms {
            out = Some(code);
            break;
        }
        syms = next;
    }
    let code = out.ok_or_else(|| HarnessError::InvalidConfig {
        reason: "guest label addresses did not converge".into(),
    })?;
    if code.len() > (l::CODE_END - l::CODE) as usize {
        return Err(HarnessError::InvalidConfig {
            reason: format!(
                "guest code is {} bytes; the code area holds {}",
                code.len(),
                l::CODE_END - l::CODE
            ),
        });
    }
    let mut mem = Memory::default();
    mem.put(l::PAGE_DIR, &words(&paging::page_directory(&map)));
    let gdt_bytes = qwords(&gdt::linux_gdt(map.va(l::TSS), map.va(l::PERCPU)));
    mem.put(l::GDT, &gdt_bytes);
    mem.put(l::HOST_DATA + host_data::GDT_PRISTINE, &gdt_bytes);
    let gdt_len = l::GDT_ENTRIES * 8;
    let idt_len = l::IDT_ENTRIES * 8;
    mem.put(l::GDTR_BOOT, &gdt::pseudo_descriptor(l::GDT, gdt_len));
    mem.put(
        l::GDTR_KERNEL,
        &gdt::pseudo_descriptor(map.va(l::GDT), gdt_len),
    );
    mem.put(l::IDTR_BOOT, &gdt::pseudo_descriptor(l::IDT_BOOT, idt_len));
    mem.put(
        l::IDTR_KERNEL,
        &gdt::pseudo_descriptor(map.va(l::IDT_KERNEL), idt_len),
    );
    let tss = gdt::tss(LINUX_KERNEL_DS, map.va(l::RING0_STACK_TOP));
    mem.put(l::TSS, &tss);
    mem.put(l::HOST_DATA + host_data::TSS_PRISTINE, &tss);
    // Every gate is DPL 0 except the one the ring-3 stub returns through.
    let attr = |v: usize| {
        if v == usize::from(l::test::USER_RETURN_VECTOR) {
            idt::USER_INTERRUPT_GATE
        } else {
            idt::INTERRUPT_GATE
        }
    };
    let boot: Vec<u64> = syms
        .stubs
        .iter()
        .enumerate()
        .map(|(v, s)| idt::gate_with(LINUX_KERNEL_CS, *s, attr(v)))
        .collect();
    let kernel: Vec<u64> = syms
        .stubs
        .iter()
        .enumerate()
        .map(|(v, s)| idt::gate_with(LINUX_KERNEL_CS, map.va(*s), attr(v)))
        .collect();
    mem.put(l::IDT_BOOT, &qwords(&boot));
    mem.put(l::IDT_KERNEL, &qwords(&kernel));
    mem.put(l::HOST_DATA + host_data::STREAM_HEADER, &p::stream_header());
    mem.put(
        l::HOST_DATA + host_data::LICENSE_UNSPECIFIED,
        &cstr(LICENSE_UNSPECIFIED),
    );
    for (i, lic) in ACCEPTED_LICENSES.iter().enumerate() {
        mem.put(license_slot(i), &cstr(lic));
    }
    let ap_vector = cfg.vectors.iter().any(|v| {
        v.pre
            .iter()
            .chain(&v.post)
            .any(|op| matches!(op, Op::ApAlarmStart { .. }))
    });
    if ap_vector || cfg.stress.iter().any(|s| s.ap_loops > 0) {
        mem.put(
            l::HOST_DATA + host_data::AP_TRAMPOLINE,
            &stress::ap_trampoline(&map)?,
        );
    }
    mem.put(l::CODE, &code);
    let body = mem.0.get(crate::multiboot::HEADER_LEN..).unwrap_or(&[]);
    let load_end = l::IMAGE_BASE as usize + mem.0.len();
    let bss = (l::GUEST_END as usize).saturating_sub(load_end) as u32;
    let entry_off = l::CODE - l::IMAGE_BASE - crate::multiboot::HEADER_LEN as u32;
    Ok(GuestImage {
        image: crate::multiboot::image(l::IMAGE_BASE, body, entry_off, bss),
        map,
        entry: l::CODE,
        code_len: code.len(),
        stubs: syms.stubs,
        call_sites: syms.call_sites,
    })
}

/// Rejects vectors the guest cannot run.
fn validate(cfg: &GuestConfig) -> Result<(), HarnessError> {
    let bad = |reason: String| Err(HarnessError::InvalidConfig { reason });
    for step in &cfg.steps {
        if let Step::Vector(n) = step {
            if *n as usize >= cfg.vectors.len() || *n > StepId::MAX_ARG {
                return bad(format!(
                    "step vector {n}: the program has {} vectors",
                    cfg.vectors.len()
                ));
            }
        }
        if let Step::Stress(n) = step {
            if *n as usize >= cfg.stress.len() || *n > StepId::MAX_ARG {
                return bad(format!(
                    "step stress {n}: the program has {} stress configurations",
                    cfg.stress.len()
                ));
            }
        }
    }
    for (k, s) in cfg.stress.iter().enumerate() {
        if let Some(why) = s.problem() {
            return bad(format!("stress {k}: {why}"));
        }
    }
    for (k, v) in cfg.vectors.iter().enumerate() {
        if u32::from(v.call) >= l::var::RELOC_SLOTS {
            return bad(format!(
                "vector {k}: call {} has no relocation slot",
                v.call
            ));
        }
        for op in v.pre.iter().chain(&v.post) {
            // (control register, debug register)
            let (cr, dr) = match *op {
                Op::ReadCr { cr, .. } | Op::WriteCr { cr, .. } => (Some(cr), None),
                Op::ReadDr { dr, .. } | Op::WriteDr { dr, .. } => (None, Some(dr)),
                _ => (None, None),
            };
            if let Some((slot, n)) = op.writes() {
                if !slot_ok(slot.saturating_add(n - 1)) {
                    return bad(format!("vector {k}: {op:?} writes past the extra words"));
                }
            }
            if op.reads64().iter().any(|s| !slot_ok(s.saturating_add(1)))
                || op.reads32().iter().any(|s| !slot_ok(*s))
            {
                return bad(format!("vector {k}: {op:?} reads past the extra words"));
            }
            if let Some(why) = timer::problem(op) {
                return bad(format!("vector {k}: {op:?}: {why}"));
            }
            if cr.is_some_and(|c| !matches!(c, 0 | 2 | 3 | 4)) {
                return bad(format!("vector {k}: {op:?}: no such control register"));
            }
            if dr.is_some_and(|d| !matches!(d, 0..=3 | 6 | 7)) {
                return bad(format!("vector {k}: {op:?}: no such debug register"));
            }
        }
    }
    Ok(())
}

fn license_slot(i: usize) -> u32 {
    l::HOST_DATA + host_data::ACCEPTED_LICENSES + host_data::SLOT * i as u32
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn qwords(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The image's bytes from `IMAGE_BASE` on.
#[derive(Default)]
struct Memory(Vec<u8>);

impl Memory {
    fn put(&mut self, phys: u32, data: &[u8]) {
        let at = (phys - l::IMAGE_BASE) as usize;
        let end = at + data.len();
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        if let Some(dst) = self.0.get_mut(at..end) {
            dst.copy_from_slice(data);
        }
    }
}

/// Label addresses of one assembly pass (physical).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Symbols {
    boot_reload: u32,
    kernel_entry: u32,
    stubs: Vec<u32>,
    /// Each vector's call site, by vector index (physical; 0 for vectors not in the program).
    sites: Vec<u32>,
    call_sites: Vec<super::CallSite>,
}

/// Address of a word in the record buffer's payload.
const fn rec_word(i: usize) -> u32 {
    l::RECORD_BUF + p::RECORD_HEADER_LEN as u32 + 4 * i as u32
}

const fn vars(off: u32) -> u32 {
    l::VARS + off
}

fn d(addr: u32) -> AsmMemoryOperand {
    dword_ptr(addr)
}

fn u(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn i(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

struct Gen<'a> {
    a: CodeAssembler,
    map: &'a MemoryMap,
    prev: &'a Symbols,
    finish: CodeLabel,
    emit: CodeLabel,
    step_begin: CodeLabel,
    snapshot: CodeLabel,
    /// Subroutines of the call-vector executor ([`executor`]).
    x: executor::Subs,
    /// The stress configurations (the timer handler serves them).
    stress: &'a [Stress],
    /// The call-site label of each vector emitted, by vector index.
    vector_sites: Vec<(u32, CodeLabel)>,
    /// Where the stress code calls the ROM from.
    sites: stress::Sites,
    /// [`GuestConfig::no_iret`].
    no_iret: bool,
}

/// Returns from an interrupt handler whose frame (EIP, CS, EFLAGS) is at ESP: `iretd`, or
/// with `no_iret` ([`GuestConfig::no_iret`]) EFLAGS restored by `popfd` and EIP:CS by
/// `retf 4`, which drops the frame's EFLAGS (an interrupt that arrives in between nests
/// below the frame and returns to the `retf`).
fn irq_return(a: &mut CodeAssembler, no_iret: bool) -> Result<(), HarnessError> {
    if no_iret {
        a.push(dword_ptr(esp + 8))?;
        a.popfd()?;
        a.retf_1(4)?;
    } else {
        a.iretd()?;
    }
    Ok(())
}

fn assemble(
    cfg: &GuestConfig,
    map: &MemoryMap,
    prev: &Symbols,
) -> Result<(Vec<u8>, Symbols), HarnessError> {
    let mut a = CodeAssembler::new(32)?;
    let finish = a.create_label();
    let emit = a.create_label();
    let step_begin = a.create_label();
    let snapshot = a.create_label();
    let x = executor::Subs::new(&mut a);
    let mut g = Gen {
        a,
        map,
        prev,
        finish,
        emit,
        step_begin,
        snapshot,
        x,
        stress: &cfg.stress,
        vector_sites: Vec::new(),
        sites: stress::Sites::default(),
        no_iret: cfg.no_iret,
    };
    let (mut boot_reload, mut kernel_entry) = g.boot()?;
    g.hello(cfg)?;
    for step in &cfg.steps {
        match *step {
            Step::Probe => g.probe()?,
            Step::Init => g.rom_call(StepId::Init, ENTRY_INIT, &[], true)?,
            Step::GetReloc(n) => g.rom_call(
                StepId::GetReloc(n),
                ENTRY_GET_RELOC,
                &[(Reg::Eax, n)],
                false,
            )?,
            Step::Vector(n) => {
                let v = cfg
                    .vectors
                    .get(n as usize)
                    .ok_or_else(|| HarnessError::InvalidConfig {
                        reason: format!("step vector {n}: no such vector"),
                    })?;
                g.vector(n, v)?
            }
            Step::Machine => g.machine()?,
            Step::Stress(n) => {
                let s = cfg
                    .stress
                    .get(n as usize)
                    .ok_or_else(|| HarnessError::InvalidConfig {
                        reason: format!("step stress {n}: no such configuration"),
                    })?;
                g.stress(n, s)?
            }
        }
    }
    g.finish()?;
    g.subroutines()?;
    g.executor_subroutines()?;
    let mut stubs = g.handlers()?;
    let res = g.a.assemble_options(
        u64::from(l::CODE),
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let ip = |lab: &mut CodeLabel| -> Result<u32, HarnessError> { Ok(res.label_ip(lab)? as u32) };
    let mut sites = vec![0u32; cfg.vectors.len()];
    for (n, lab) in &mut g.vector_sites {
        if let Some(slot) = sites.get_mut(*n as usize) {
            *slot = ip(lab)?;
        }
    }
    let syms = Symbols {
        boot_reload: ip(&mut boot_reload)?,
        kernel_entry: ip(&mut kernel_entry)?,
        stubs: stubs.iter_mut().map(ip).collect::<Result<_, _>>()?,
        sites,
        call_sites: g.sites.resolve(&res, map)?,
    };
    Ok((res.inner.code_buffer, syms))
}

impl Gen<'_> {
    /// Entry: GDT, segments, IDT, PIC, paging, jump to the alias. Returns the labels whose
    /// addresses the next pass needs.
    fn boot(&mut self) -> Result<(CodeLabel, CodeLabel), HarnessError> {
        let a = &mut self.a;
        let mut boot_reload = a.create_label();
        let mut kernel_entry = a.create_label();
        a.cli()?;
        a.cld()?;
        // First sign of life: the stream header (DS is the loader's flat segment).
        a.mov(esi, l::HOST_DATA + host_data::STREAM_HEADER)?;
        a.mov(ecx, u(p::STREAM_HEADER_LEN))?;
        a.mov(dx, u32::from(DEBUGCON_PORT))?;
        a.rep().outsb()?;
        a.lgdt(dword_ptr(l::GDTR_BOOT))?;
        a.jmp_far(LINUX_KERNEL_CS, self.prev.boot_reload)?;
        a.set_label(&mut boot_reload)?;
        a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
        a.mov(ss, ax)?;
        a.mov(esp, l::STACK_TOP)?;
        Self::linux_data_segments(a)?;
        a.lidt(dword_ptr(l::IDTR_BOOT))?;
        // 8259A: vectors 0x20/0x28 like Linux, every line masked.
        for (port, val) in [
            (0x20, 0x11),
            (0xA0, 0x11),
            (0x21, 0x20),
            (0xA1, 0x28),
            (0x21, 0x04),
            (0xA1, 0x02),
            (0x21, 0x01),
            (0xA1, 0x01),
            (0x21, 0xFF),
            (0xA1, 0xFF),
        ] {
            a.mov(al, val)?;
            a.out(port, al)?;
        }
        if self.map.paging() {
            a.mov(eax, l::PAGE_DIR)?;
            a.mov(cr3, eax)?;
            a.mov(eax, cr4)?;
            a.or(eax, paging::CR4_PSE as i32)?;
            a.mov(cr4, eax)?;
            a.mov(eax, cr0)?;
            a.or(eax, (paging::CR0_PG | paging::CR0_WP) as i32)?;
            a.mov(cr0, eax)?;
            // Continue at the PAGE_OFFSET alias, like a kernel leaving its identity map.
            a.mov(eax, self.map.va(self.prev.kernel_entry))?;
            a.jmp(eax)?;
        }
        a.set_label(&mut kernel_entry)?;
        a.mov(esp, self.map.va(l::STACK_TOP))?;
        a.lgdt(dword_ptr(l::GDTR_KERNEL))?;
        a.lidt(dword_ptr(l::IDTR_KERNEL))?;
        a.mov(ax, u32::from(LINUX_TSS))?;
        a.ltr(ax)?;
        self.setup_test_area()?;
        Ok((boot_reload, kernel_entry))
    }

    /// DS = ES = `__USER_DS`, FS = per-CPU, GS = 0: Linux's kernel-mode data segments.
    fn linux_data_segments(a: &mut CodeAssembler) -> Result<(), HarnessError> {
        a.mov(ax, u32::from(LINUX_USER_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ax, u32::from(LINUX_PERCPU))?;
        a.mov(fs, ax)?;
        a.xor(eax, eax)?;
        a.mov(gs, ax)?;
        Ok(())
    }

    /// Writes the record header for `tag` and calls `emit`.
    fn send(&mut self, tag: u16) -> Result<(), HarnessError> {
        let len = p::payload_len(tag).unwrap_or(0);
        let header = u32::from(tag) | (u(len) << 16);
        self.a.mov(d(l::RECORD_BUF), header)?;
        self.a.mov(ecx, u(p::RECORD_HEADER_LEN + len))?;
        self.a.call(self.emit)?;
        Ok(())
    }

    fn hello(&mut self, cfg: &GuestConfig) -> Result<(), HarnessError> {
        let flags = if self.map.paging() {
            p::hello::FLAG_PAGING
        } else {
            0
        };
        for (idx, v) in [
            (p::hello::PAGE_OFFSET, self.map.page_offset()),
            (p::hello::FLAGS, flags),
            (p::hello::NONCE, cfg.nonce),
            (p::hello::LAYOUT_VERSION, LAYOUT_VERSION),
            (p::hello::STEPS, u(cfg.steps.len())),
        ] {
            self.a.mov(d(rec_word(idx)), v)?;
        }
        self.send(p::tag::HELLO)
    }

    fn begin(&mut self, id: StepId) -> Result<(), HarnessError> {
        self.a.mov(eax, id.code())?;
        self.a.call(self.step_begin)?;
        Ok(())
    }

    /// Linux's `probe_vmi_rom` + `check_vmi_rom` (vmi-abi.md §2.1), reading every candidate
    /// through the linear map and reporting each 55AA candidate.
    fn probe(&mut self) -> Result<(), HarnessError> {
        use p::candidate as c;
        self.begin(StepId::Probe)?;
        let va = |x: u32| self.map.va(x);
        let (scan_start, scan_end, lin_off) = (va(SCAN_START), va(SCAN_END), va(0));
        let a = &mut self.a;
        let mut scan = a.create_label();
        let mut next = a.create_label();
        let mut done = a.create_label();
        let mut report = a.create_label();
        let mut accepted = a.create_label();
        let mut not_vmi = a.create_label();
        let mut version = a.create_label();
        let mut no_pci = a.create_label();
        let mut ids_ok = a.create_label();
        let mut ids_bad = a.create_label();
        let mut lic_default = a.create_label();
        let mut lic_have = a.create_label();
        let off = |f: &vmi_abi::layout::Field| i(f.offset);
        a.mov(d(vars(var::ROM_BASE)), 0u32)?;
        a.mov(d(vars(var::CANDIDATES)), 0u32)?;
        a.mov(ebx, scan_start)?;
        a.set_label(&mut scan)?;
        a.movzx(eax, word_ptr(ebx + off(&vrom::ROM_SIGNATURE)))?;
        a.cmp(eax, u32::from(ROM_SIGNATURE))?;
        a.jne(next)?;
        // A 55AA candidate: clear the record, capture the header fields.
        a.mov(edi, l::RECORD_BUF)?;
        a.xor(eax, eax)?;
        a.mov(ecx, u(1 + c::WORDS))?;
        a.rep().stosd()?;
        a.inc(d(vars(var::CANDIDATES)))?;
        a.mov(eax, ebx)?;
        a.sub(eax, lin_off)?;
        a.mov(d(rec_word(c::BASE)), eax)?;
        for (field, idx) in [
            (&vrom::ROM_LENGTH, c::ROM_LENGTH),
            (&vrom::API_VERSION_MAJ, c::API_MAJOR),
            (&vrom::API_VERSION_MIN, c::API_MINOR),
        ] {
            a.movzx(eax, byte_ptr(ebx + off(field)))?;
            a.mov(d(rec_word(idx)), eax)?;
        }
        for (field, idx) in [
            (&vrom::PCI_HEADER_OFFS, c::PCI_HEADER_OFFS),
            (&vrom::PNP_HEADER_OFFS, c::PNP_HEADER_OFFS),
            (&vrom::LICENSE_OFFS, c::LICENSE_OFFS),
        ] {
            a.movzx(eax, word_ptr(ebx + off(field)))?;
            a.mov(d(rec_word(idx)), eax)?;
        }
        a.mov(eax, dword_ptr(ebx + off(&vrom::VROM_SIGNATURE)))?;
        a.mov(d(rec_word(c::VMI_SIGNATURE)), eax)?;
        // 2: the VMI signature.
        a.cmp(eax, VMI_SIGNATURE)?;
        a.jne(not_vmi)?;
        // 3: major version (every minor passes: `min + 1 < 0 + 1` is never true).
        a.cmp(
            byte_ptr(ebx + off(&vrom::API_VERSION_MAJ)),
            u32::from(VMI_API_MAJOR),
        )?;
        a.jne(version)?;
        // 4: a PCI data structure.
        a.movzx(esi, word_ptr(ebx + off(&vrom::PCI_HEADER_OFFS)))?;
        a.test(esi, esi)?;
        a.jz(no_pci)?;
        a.add(esi, ebx)?;
        // 5: PCI ids (a warning only).
        a.movzx(eax, word_ptr(esi + off(&pci::VENDOR_ID)))?;
        a.mov(d(rec_word(c::VENDOR)), eax)?;
        a.movzx(ecx, word_ptr(esi + off(&pci::DEVICE_ID)))?;
        a.mov(d(rec_word(c::DEVICE)), ecx)?;
        a.cmp(eax, u32::from(PCI_VENDOR_VMWARE))?;
        a.jne(ids_bad)?;
        a.cmp(ecx, u32::from(PCI_DEVICE_VMI))?;
        a.je(ids_ok)?;
        a.set_label(&mut ids_bad)?;
        a.or(d(rec_word(c::FLAGS)), c::FLAG_UNKNOWN_MANUFACTURER)?;
        a.set_label(&mut ids_ok)?;
        // 7: the license pointer ("unspecified" when license_offs is 0).
        a.or(d(rec_word(c::FLAGS)), c::FLAG_LICENSE_READ)?;
        a.movzx(edx, word_ptr(ebx + off(&vrom::LICENSE_OFFS)))?;
        a.test(edx, edx)?;
        a.jz(lic_default)?;
        a.add(edx, ebx)?;
        a.jmp(lic_have)?;
        a.set_label(&mut lic_default)?;
        a.or(d(rec_word(c::FLAGS)), c::FLAG_LICENSE_UNSPECIFIED)?;
        a.mov(edx, l::HOST_DATA + host_data::LICENSE_UNSPECIFIED)?;
        a.set_label(&mut lic_have)?;
        a.mov(esi, edx)?;
        a.mov(edi, rec_word(c::LICENSE))?;
        a.mov(ecx, u(c::LICENSE_BYTES))?;
        a.rep().movsb()?;
        // 9: strcmp against each accepted license.
        for k in 0..ACCEPTED_LICENSES.len() {
            let mut cmp = a.create_label();
            let mut miss = a.create_label();
            a.mov(esi, edx)?;
            a.mov(edi, license_slot(k))?;
            a.set_label(&mut cmp)?;
            a.mov(al, byte_ptr(esi))?;
            a.cmp(al, byte_ptr(edi))?;
            a.jne(miss)?;
            a.test(al, al)?;
            a.jz(accepted)?;
            a.inc(esi)?;
            a.inc(edi)?;
            a.jmp(cmp)?;
            a.set_label(&mut miss)?;
        }
        a.mov(d(rec_word(c::OUTCOME)), Outcome::NonGplLicense.code())?;
        a.jmp(report)?;
        for (label, outcome) in [
            (&mut not_vmi, Outcome::NotVmi),
            (&mut version, Outcome::VersionMismatch),
            (&mut no_pci, Outcome::NoPciHeader),
        ] {
            a.set_label(label)?;
            a.mov(d(rec_word(c::OUTCOME)), outcome.code())?;
            a.jmp(report)?;
        }
        a.set_label(&mut accepted)?;
        a.mov(d(rec_word(c::OUTCOME)), Outcome::Accepted.code())?;
        a.mov(d(vars(var::ROM_BASE)), ebx)?;
        a.lea(eax, dword_ptr(ebx + i(ENTRY_INIT)))?;
        a.mov(d(vars(var::INIT_PTR)), eax)?;
        a.lea(eax, dword_ptr(ebx + i(ENTRY_GET_RELOC)))?;
        a.mov(d(vars(var::RELOC_PTR)), eax)?;
        a.set_label(&mut report)?;
        self.send(p::tag::CANDIDATE)?;
        let a = &mut self.a;
        // First accepted ROM wins.
        a.cmp(d(vars(var::ROM_BASE)), 0)?;
        a.jne(done)?;
        a.set_label(&mut next)?;
        a.add(ebx, SCAN_STRIDE)?;
        a.cmp(ebx, scan_end)?;
        a.jb(scan)?;
        a.set_label(&mut done)?;
        let mut found = a.create_label();
        let mut out = a.create_label();
        a.mov(eax, d(vars(var::ROM_BASE)))?;
        a.mov(d(rec_word(p::probe_done::LINEAR)), eax)?;
        a.test(eax, eax)?;
        a.jnz(found)?;
        a.mov(d(rec_word(p::probe_done::FOUND)), 0u32)?;
        a.mov(d(rec_word(p::probe_done::BASE)), 0u32)?;
        a.mov(d(vars(var::END_STATUS)), EndStatus::NoRom.code())?;
        a.jmp(out)?;
        a.set_label(&mut found)?;
        a.mov(d(rec_word(p::probe_done::FOUND)), 1u32)?;
        a.sub(eax, lin_off)?;
        a.mov(d(rec_word(p::probe_done::BASE)), eax)?;
        a.set_label(&mut out)?;
        a.mov(eax, d(vars(var::CANDIDATES)))?;
        a.mov(d(rec_word(p::probe_done::CANDIDATES)), eax)?;
        self.send(p::tag::PROBE_DONE)
    }

    /// Calls the ROM entry at `entry` with `inputs` and canaries in every other register,
    /// EFLAGS = [`CALL_EFLAGS`], ESP = the kernel stack top, Linux's segments; then reports
    /// the registers. `init`: a non-zero EAX ends the ROM steps.
    fn rom_call(
        &mut self,
        id: StepId,
        entry: usize,
        inputs: &[(Reg, u32)],
        init: bool,
    ) -> Result<(), HarnessError> {
        self.begin(id)?;
        self.skip_unless_active()?;
        let stack_top = self.map.va(l::STACK_TOP);
        let a = &mut self.a;
        a.mov(esp, stack_top)?;
        Self::linux_data_segments(a)?;
        a.push(CALL_EFLAGS as i32)?;
        a.popfd()?;
        a.cli()?;
        let ptr = if entry == ENTRY_INIT {
            var::INIT_PTR
        } else {
            var::RELOC_PTR
        };
        for reg in Reg::ALL {
            let v = inputs
                .iter()
                .find(|(r, _)| *r == reg)
                .map_or(canary(reg), |(_, v)| *v);
            a.mov(gpr(reg), v)?;
        }
        a.call(d(vars(ptr)))?;
        // Capture before anything changes: GPRs, EFLAGS, segments.
        a.pushad()?;
        a.pushfd()?;
        for s in [cs, ss, ds, es, fs, gs] {
            a.push(s)?;
        }
        a.mov(ax, u32::from(LINUX_USER_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.cld()?;
        a.mov(d(rec_word(p::call_result::STEP)), id.code())?;
        a.call(self.snapshot)?;
        a.add(esp, i(SNAPSHOT_STACK_BYTES))?;
        self.send(p::tag::CALL_RESULT)?;
        if let StepId::GetReloc(n) = id {
            if n < var::RELOC_SLOTS {
                let eax_word = rec_word(p::call_result::REGS + p::snap::EAX);
                self.a.mov(eax, d(eax_word))?;
                self.a.mov(d(vars(var::RELOC_EIPS) + 4 * n), eax)?;
                let edx_word = rec_word(p::call_result::REGS + p::snap::EDX);
                self.a.mov(eax, d(edx_word))?;
                self.a.mov(byte_ptr(vars(var::RELOC_TYPES) + n), al)?;
            }
        }
        if init {
            let a = &mut self.a;
            let mut ok = a.create_label();
            let eax_word = rec_word(p::call_result::REGS + p::snap::EAX);
            a.cmp(d(eax_word), INIT_SUCCESS)?;
            a.je(ok)?;
            a.mov(d(vars(var::END_STATUS)), EndStatus::InitFailed.code())?;
            a.set_label(&mut ok)?;
        }
        Ok(())
    }

    /// Ends the step (jumps to the finish) when an earlier step found no ROM or Init failed.
    fn skip_unless_active(&mut self) -> Result<(), HarnessError> {
        let finish = self.finish;
        let a = &mut self.a;
        let mut go = a.create_label();
        a.cmp(d(vars(var::END_STATUS)), 0)?;
        a.jne(finish)?;
        a.cmp(d(vars(var::ROM_BASE)), 0)?;
        a.jne(go)?;
        a.mov(d(vars(var::END_STATUS)), EndStatus::NoRom.code())?;
        a.jmp(finish)?;
        a.set_label(&mut go)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), HarnessError> {
        let mut finish = self.finish;
        let a = &mut self.a;
        // The previous step may end with a label of its own (Init's `ok`); two labels cannot
        // name one instruction.
        a.nop()?;
        a.set_label(&mut finish)?;
        a.mov(esp, self.map.va(l::STACK_TOP))?;
        Self::linux_data_segments(a)?;
        a.cld()?;
        a.mov(eax, d(vars(var::END_STATUS)))?;
        a.mov(d(rec_word(p::end::STATUS)), eax)?;
        self.send(p::tag::END)?;
        self.exit_with_al(Some(EXIT_DONE))
    }

    /// `out EXIT_PORT, al` (after loading `value` if given), then halt forever.
    fn exit_with_al(&mut self, value: Option<u8>) -> Result<(), HarnessError> {
        let a = &mut self.a;
        if let Some(v) = value {
            a.mov(al, u32::from(v))?;
        }
        a.out(u32::from(EXIT_PORT), al)?;
        halt_forever(a)
    }

    fn subroutines(&mut self) -> Result<(), HarnessError> {
        let (mut emit, mut step_begin, mut snapshot) = (self.emit, self.step_begin, self.snapshot);
        // emit: ECX = bytes of the record in the buffer; streams them to the debug console.
        let a = &mut self.a;
        a.set_label(&mut emit)?;
        a.mov(esi, l::RECORD_BUF)?;
        a.mov(dx, u32::from(DEBUGCON_PORT))?;
        a.rep().outsb()?;
        a.ret()?;
        // step_begin: EAX = step id; records it as the current step and announces it.
        a.set_label(&mut step_begin)?;
        a.mov(d(vars(var::CUR_STEP)), eax)?;
        a.mov(d(rec_word(p::step::ID)), eax)?;
        self.send(p::tag::STEP)?;
        self.a.ret()?;
        // snapshot: copies the registers pushed after a ROM call into the CALL_RESULT record.
        let a = &mut self.a;
        a.set_label(&mut snapshot)?;
        for (idx, at) in SNAPSHOT_STACK {
            a.mov(eax, dword_ptr(esp + i(4 + at)))?;
            a.mov(d(rec_word(p::call_result::REGS + idx)), eax)?;
        }
        a.ret()?;
        Ok(())
    }

    /// 256 stubs (push a dummy error code where the CPU pushes none, push the vector) and the
    /// common handler that reports an `EXCEPTION` record and ends the run.
    fn handlers(&mut self) -> Result<Vec<CodeLabel>, HarnessError> {
        use p::exception as x;
        let with_stress = !self.stress.is_empty();
        let no_iret = self.no_iret;
        let a = &mut self.a;
        let mut common = a.create_label();
        let mut stress_timer = a.create_label();
        let mut external = a.create_label();
        let mut alarm = a.create_label();
        let mut timer_alarm = a.create_label();
        let mut stubs = Vec::with_capacity(l::IDT_ENTRIES);
        for v in 0..=u8::MAX {
            let mut s = a.create_label();
            a.set_label(&mut s)?;
            match v {
                TIMER_VECTOR => {
                    // IRQ0: count it, acknowledge it, return (every register intact); while
                    // a stress step runs, make its handler calls first.
                    a.inc(dword_ptr(vars(var::TICKS)).ss())?;
                    if with_stress {
                        a.cmp(dword_ptr(vars(var::STRESS_ACTIVE)).ss(), 0)?;
                        a.jne(stress_timer)?;
                    }
                    a.cmp(dword_ptr(vars(var::ALARM_MODE)).ss(), 0)?;
                    a.jne(timer_alarm)?;
                    a.push(eax)?;
                    a.mov(al, 0x20)?;
                    a.out(0x20, al)?;
                    a.pop(eax)?;
                    irq_return(a, no_iret)?;
                }
                SPURIOUS_VECTOR => irq_return(a, no_iret)?,
                v if v > TIMER_VECTOR && v != l::test::USER_RETURN_VECTOR => {
                    // An external interrupt: the alarm handler's while it records.
                    a.push(0)?;
                    a.push(i32::from(v))?;
                    a.jmp(external)?;
                }
                _ => {
                    if !idt::has_error_code(v) {
                        a.push(0)?;
                    }
                    a.push(i32::from(v))?;
                    a.jmp(common)?;
                }
            }
            stubs.push(s);
        }
        // Flags untouched on the way: the common handler reports them as the gate left them.
        let mut fatal_external = a.create_label();
        a.set_label(&mut external)?;
        a.push(ecx)?;
        a.mov(ecx, dword_ptr(vars(var::ALARM_MODE)).ss())?;
        a.jecxz(fatal_external)?;
        a.pop(ecx)?;
        a.jmp(alarm)?;
        a.set_label(&mut fatal_external)?;
        a.pop(ecx)?;
        a.jmp(common)?;
        a.set_label(&mut timer_alarm)?;
        a.push(0)?;
        a.push(i32::from(TIMER_VECTOR))?;
        a.jmp(alarm)?;
        a.set_label(&mut common)?;
        a.pushad()?;
        for s in [ds, es, fs, gs] {
            a.push(s)?;
        }
        // Nothing so far changed a flag: this is EFLAGS as the gate entered the handler.
        a.pushfd()?;
        a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.pop(d(rec_word(x::HANDLER_EFLAGS)))?;
        a.cld()?;
        let nested = a.create_label();
        a.cmp(d(vars(var::IN_HANDLER)), 0)?;
        a.jne(nested)?;
        a.mov(d(vars(var::IN_HANDLER)), 1u32)?;
        a.mov(eax, d(vars(var::CUR_STEP)))?;
        a.mov(d(rec_word(x::STEP)), eax)?;
        // Stack: gs fs es ds | edi esi ebp esp ebx edx ecx eax | vector error eip cs eflags
        // [esp ss].
        for (idx, at) in [
            (x::GS, 0),
            (x::FS, 4),
            (x::ES, 8),
            (x::DS, 12),
            (x::EDI, 16),
            (x::ESI, 20),
            (x::EBP, 24),
            (x::HANDLER_ESP, 28),
            (x::EBX, 32),
            (x::EDX, 36),
            (x::ECX, 40),
            (x::EAX, 44),
            (x::VECTOR, 48),
            (x::ERROR_CODE, 52),
            (x::EIP, 56),
            (x::CS, 60),
            (x::EFLAGS, 64),
            (x::FRAME_ESP, 68),
            (x::FRAME_SS, 72),
        ] {
            a.mov(eax, dword_ptr(esp + at))?;
            a.mov(d(rec_word(idx)), eax)?;
        }
        a.mov(eax, cr2)?;
        a.mov(d(rec_word(x::CR2)), eax)?;
        a.mov(eax, ss)?;
        a.mov(d(rec_word(x::SS)), eax)?;
        // An expected trap: report it and go on at the resume point.
        let mut fatal = a.create_label();
        a.cmp(d(vars(var::TRAP_RESUME)), 0)?;
        a.je(fatal)?;
        self.send(p::tag::TRAP)?;
        let stack_top = self.map.va(l::STACK_TOP);
        let a = &mut self.a;
        a.mov(eax, dword_ptr(esp + 48))?;
        a.mov(d(vars(var::LAST_TRAP)), eax)?;
        a.mov(edx, d(vars(var::TRAP_RESUME)))?;
        a.mov(d(vars(var::TRAP_RESUME)), 0u32)?;
        a.mov(d(vars(var::IN_HANDLER)), 0u32)?;
        a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
        a.mov(ss, ax)?;
        a.mov(esp, stack_top)?;
        Self::linux_data_segments(a)?;
        // A far return: the trap may have come from code running in another code segment
        // (an IRET frame's CS), whose limit need not cover the resume point.
        a.push(u32::from(LINUX_KERNEL_CS))?;
        a.push(edx)?;
        a.retf()?;
        a.set_label(&mut fatal)?;
        self.send(p::tag::EXCEPTION)?;
        let a = &mut self.a;
        let mut interrupt = a.create_label();
        let mut out = a.create_label();
        a.mov(eax, dword_ptr(esp + 48))?;
        a.cmp(eax, u32::from(idt::EXCEPTION_VECTORS))?;
        a.jae(interrupt)?;
        a.or(al, u32::from(EXIT_EXCEPTION_BASE))?;
        a.jmp(out)?;
        a.set_label(&mut interrupt)?;
        a.mov(al, u32::from(EXIT_INTERRUPT))?;
        a.set_label(&mut out)?;
        self.exit_with_al(None)?;
        let mut nested = nested;
        self.a.set_label(&mut nested)?;
        self.exit_with_al(Some(EXIT_NESTED))?;
        if with_stress {
            self.stress_timer(&mut stress_timer)?;
            self.sites.emit_shared(&mut self.a)?;
        }
        self.alarm_handler(&mut alarm)?;
        Ok(stubs)
    }
}

/// IRQ0 after the PIC remap: the timer handler counts it.
const TIMER_VECTOR: u8 = 0x20;
/// IRQ7: the master PIC's spurious vector, ignored.
const SPURIOUS_VECTOR: u8 = 0x27;

/// Bytes pushed after a ROM call: `pushad`, `pushfd`, six segment registers.
const SNAPSHOT_STACK_BYTES: usize = 4 * (8 + 1 + 6);

/// Where each snapshot word sits on the stack after those pushes (gs at 0 … eax at 56).
const SNAPSHOT_STACK: [(usize, usize); p::snap::WORDS] = [
    (p::snap::GS, 0),
    (p::snap::FS, 4),
    (p::snap::ES, 8),
    (p::snap::DS, 12),
    (p::snap::SS, 16),
    (p::snap::CS, 20),
    (p::snap::EFLAGS, 24),
    (p::snap::EDI, 28),
    (p::snap::ESI, 32),
    (p::snap::EBP, 36),
    (p::snap::ESP, 40),
    (p::snap::EBX, 44),
    (p::snap::EDX, 48),
    (p::snap::ECX, 52),
    (p::snap::EAX, 56),
];

/// `cli; hlt` for good (an NMI or SMI wake-up halts again).
fn halt_forever(a: &mut CodeAssembler) -> Result<(), HarnessError> {
    let mut halt = a.create_label();
    a.set_label(&mut halt)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(halt)?;
    Ok(())
}

fn gpr(r: Reg) -> AsmRegister32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    fn linux(po: u32, paging: bool) -> GuestImage {
        build(&GuestConfig::linux(
            po,
            paging,
            &(0..=80).collect::<Vec<_>>(),
        ))
        .unwrap()
    }

    /// A guest with one stress step of `s`.
    fn stressed(s: Stress) -> GuestImage {
        let mut cfg = GuestConfig::linux(0xC000_0000, true, &[]);
        cfg.steps.push(Step::Stress(0));
        cfg.stress = vec![s];
        build(&cfg).unwrap()
    }

    #[test]
    fn every_stress_call_site_is_the_return_address_of_a_call_to_its_slot() {
        use crate::guest::{SiteRole, stress::CallSite};
        let at = |phys: u32| (phys - l::IMAGE_BASE) as usize;
        let s = Stress::with_second_cpu(10, 1, 10);
        let g = stressed(s.clone());
        let roles = |r| g.call_sites.iter().filter(|c| c.role == r).count();
        // The mix's DisableInterrupts brings an EnableInterrupts of its own.
        assert_eq!(roles(SiteRole::Loop), s.mix.len() + 1);
        assert_eq!(roles(SiteRole::Handler), s.handler.len());
        assert_eq!(roles(SiteRole::SecondCpu), s.ap_mix.len());
        let mut rets: Vec<u32> = g.call_sites.iter().map(|c| c.ret).collect();
        rets.sort_unstable();
        rets.dedup();
        assert_eq!(rets.len(), g.call_sites.len(), "distinct sites");
        // `call dword [RELOC_EIPS + 4 * call]` (FF 15 disp32) ends at each return address.
        let ends_a_call_to_its_slot = |g: &GuestImage, c: &CallSite| {
            let end = at(c.ret - 0xC000_0000);
            let slot = l::VARS + var::RELOC_EIPS + 4 * c.call as u32;
            g.image[end - 6..end - 4] == [0xFF, 0x15] && g.image[end - 4..end] == slot.to_le_bytes()
        };
        assert!(g.call_sites.iter().all(|c| ends_a_call_to_its_slot(&g, c)));
        let map = g.system_map();
        for name in [
            "stress_loop_EnableInterrupts",
            "stress_loop_EnableInterrupts_2",
            "timer_handler_RDTSC",
            "second_cpu_GetCR3",
        ] {
            assert_eq!(
                map.matches(&format!(" T {name}\n")).count(),
                1,
                "{name}: {map}"
            );
        }
        // Shared sites: one per call number, each `call [slot]` inside its subroutine.
        let g = stressed(Stress {
            shared_sites: true,
            ..s.clone()
        });
        let mut calls: Vec<vmi_abi::Call> = s.calls().collect();
        calls.sort();
        calls.dedup();
        assert_eq!(g.call_sites.len(), calls.len());
        assert!(g.call_sites.iter().all(|c| c.role == SiteRole::Shared));
        assert!(g.call_sites.iter().all(|c| ends_a_call_to_its_slot(&g, c)));
        let map = g.system_map();
        assert_eq!(map.lines().count(), calls.len() + 1);
        assert!(map.contains(" T shared_site_RDTSC\n") && map.ends_with(" T _etext\n"));
    }

    #[test]
    fn deterministic_and_placed() {
        let g = linux(0xC000_0000, true);
        assert_eq!(g.image, linux(0xC000_0000, true).image);
        assert_eq!(g.entry, l::CODE);
        assert_eq!(g.stubs.len(), 256);
        let at = |phys: u32| (phys - l::IMAGE_BASE) as usize;
        // Multiboot header, then the host data at their fixed addresses.
        assert_eq!(&g.image[..4], &crate::multiboot::MAGIC.to_le_bytes());
        assert_eq!(&g.image[at(l::HOST_DATA)..at(l::HOST_DATA) + 4], &p::MAGIC);
        assert_eq!(
            &g.image[at(license_slot(1))..at(license_slot(1)) + 7],
            b"GPL v2\0"
        );
        let pde = |i: usize| {
            let o = at(l::PAGE_DIR) + 4 * i;
            u32::from_le_bytes(g.image[o..o + 4].try_into().unwrap())
        };
        assert_eq!((pde(0), pde(0x300)), (0xE3, 0xE3));
        // The kernel IDT points at the PAGE_OFFSET alias of the stubs.
        let o = at(l::IDT_KERNEL) + 6 * 8;
        let gate = u64::from_le_bytes(g.image[o..o + 8].try_into().unwrap());
        assert_eq!(gate, idt::gate(0x60, 0xC000_0000 + g.stubs[6]));
        // The code decodes without invalid instructions up to the stubs.
        let code = &g.image[at(l::CODE)..at(l::CODE) + g.code_len];
        let mut dec = Decoder::with_ip(32, code, u64::from(l::CODE), DecoderOptions::NONE);
        assert!(dec.iter().all(|ins| ins.code() != Code::INVALID));
    }

    #[test]
    fn page_offset_and_paging_change_the_code() {
        let a = linux(0xC000_0000, true);
        let b = linux(0x8000_0000, true);
        let c = linux(0x8000_0000, false);
        assert_ne!(a.image, b.image);
        assert_ne!(b.image, c.image);
        assert!(c.code_len < b.code_len);
        assert!(build(&GuestConfig::linux(0xC010_0000, true, &[])).is_err());
        assert!(build(&GuestConfig::linux(0xC000_0000, true, &[1 << 24])).is_err());
    }

    #[test]
    fn init_may_be_the_last_step() {
        // Init's `ok` label and the finish used to land on the same instruction.
        for paging in [true, false] {
            build(&GuestConfig::linux(0xC000_0000, paging, &[])).unwrap();
        }
        let mut cfg = GuestConfig::linux(0xC000_0000, true, &[]);
        cfg.steps.push(Step::Machine);
        build(&cfg).unwrap();
    }

    fn with_vectors(vectors: Vec<Vector>) -> GuestConfig {
        let mut cfg = GuestConfig::linux(0xC000_0000, true, &[17]);
        cfg.steps.insert(0, Step::Machine);
        cfg.steps
            .extend((0..vectors.len() as u32).map(Step::Vector));
        cfg.vectors = vectors;
        cfg
    }

    #[test]
    fn vectors_assemble_and_are_validated() {
        use crate::guest::vector::{Invoke, Val};
        let every_op = vec![
            Op::Store {
                addr: l::test::PSEUDO,
                value: Val::Imm(1),
            },
            Op::Store {
                addr: l::test::PSEUDO,
                value: Val::Resume,
            },
            Op::Load {
                addr: l::test::PSEUDO,
                slot: 0,
            },
            Op::Copy {
                src: l::GDT,
                dst: l::test::GDT2,
                dwords: 64,
            },
            Op::Fill {
                dst: l::test::PSEUDO,
                value: 7,
                dwords: 2,
            },
            Op::Hash {
                addr: l::GDT,
                dwords: 64,
                slot: 1,
            },
            Op::Or {
                addr: l::test::PSEUDO,
                bits: 1,
            },
            Op::And {
                addr: l::test::PSEUDO,
                mask: 1,
            },
            Op::ReadCr { cr: 4, slot: 2 },
            Op::WriteCr {
                cr: 2,
                value: Val::Mem(super::super::vector::xslot(2)),
            },
            Op::ReadDr { dr: 7, slot: 3 },
            Op::WriteDr {
                dr: 0,
                value: Val::Imm(0),
            },
            Op::Rdmsr {
                msr: 0x175,
                slot: 4,
            },
            Op::Wrmsr {
                msr: 0x175,
                lo: Val::Imm(0),
                hi: Val::Imm(0),
            },
            Op::Cpuid {
                leaf: 1,
                subleaf: 0,
                slot: 6,
            },
            Op::Rdtsc { slot: 10 },
            Op::Invlpg { addr: 0x0400_2000 },
            Op::ReloadCr3,
            Op::Lldt { selector: 0 },
            Op::Ltr { selector: 0x80 },
            Op::Out {
                port: 0x80,
                value: 1,
            },
            Op::Out {
                port: 0x3F8,
                value: 1,
            },
            Op::In {
                port: 0x21,
                slot: 12,
            },
            Op::In {
                port: 0x3F8,
                slot: 13,
            },
            Op::StartTimer { divisor: 1193 },
            Op::StopTimer,
            Op::WaitIrq0Pending { spins: 10 },
            Op::Cli,
            Op::Sti,
            Op::ArmTrap,
        ];
        let v = Vector {
            call: 33,
            invoke: Invoke::Jump,
            regs: vec![
                (Reg::Eax, Val::Mem(l::test::PSEUDO)),
                (Reg::Edx, Val::Resume),
            ],
            stack: vec![Val::Resume, Val::Imm(0x60), Val::Mem(l::test::PSEUDO)],
            eflags: 0x2,
            pre: every_op.clone(),
            post: every_op,
        };
        let g = build(&with_vectors(vec![
            v.clone(),
            Vector::call(17, &[(Reg::Eax, 1)], 2),
        ]))
        .unwrap();
        let code = &g.image[(l::CODE - l::IMAGE_BASE) as usize..][..g.code_len];
        let mut dec = Decoder::with_ip(32, code, u64::from(l::CODE), DecoderOptions::NONE);
        assert!(dec.iter().all(|ins| ins.code() != Code::INVALID));
        // The user-return gate is DPL 3, the others DPL 0.
        let at = |phys: u32| (phys - l::IMAGE_BASE) as usize;
        let gate = |v: usize| {
            let o = at(l::IDT_KERNEL) + 8 * v;
            u64::from_le_bytes(g.image[o..o + 8].try_into().unwrap())
        };
        assert_eq!(gate(0x80) >> 40 & 0xFF, 0xEE);
        assert_eq!(gate(0x30) >> 40 & 0xFF, 0x8E);
        // The pristine copies match the live tables.
        let gdt = &g.image[at(l::GDT)..at(l::GDT) + 256];
        let pristine = at(l::HOST_DATA + host_data::GDT_PRISTINE);
        assert_eq!(gdt, &g.image[pristine..pristine + 256]);

        let bad = |v: Vector, what: &str| {
            let e = build(&with_vectors(vec![v])).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        let mut w = v.clone();
        w.post = vec![Op::Cpuid {
            leaf: 0,
            subleaf: 0,
            slot: 30,
        }];
        bad(w, "writes past the extra words");
        let mut w = v.clone();
        w.pre = vec![Op::ReadCr { cr: 1, slot: 0 }];
        bad(w, "no such control register");
        let mut w = v.clone();
        w.pre = vec![Op::WriteDr {
            dr: 5,
            value: Val::Imm(0),
        }];
        bad(w, "no such debug register");
        let mut w = v.clone();
        w.call = 200;
        bad(w, "has no relocation slot");
        let mut cfg = with_vectors(vec![v]);
        cfg.steps.push(Step::Vector(9));
        let e = build(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("step vector 9: the program has 1 vectors"),
            "{e}"
        );
    }
}
