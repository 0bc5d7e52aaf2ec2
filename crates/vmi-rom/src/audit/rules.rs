//! The `vmi-audit` rules as declared items ([`optionrom::validate::rule::Rule`]): the id each
//! finding of [`audit`](super::audit) carries, its severity, summary and explanation with the
//! part of the ABI (vmi-abi.md) it enforces. The checks themselves are steps of the abstract
//! execution in [`super`]: each takes the rule it reports, so a finding's id is always declared
//! here. Unlike the option-ROM profiles, the audit reports a rule only where it is violated;
//! `routine` summarises each routine that broke none.

use super::PROFILE;
use optionrom::rule;
use optionrom::validate::rule::Rule;

#[cfg(test)]
use crate::Answer;
#[cfg(test)]
use iced_x86::code_asm::*;
#[cfg(test)]
use samples::{native, table, with};
#[cfg(test)]
use vmi_abi::Call;

/// A rule's example images: one it passes, one it flags.
#[cfg(test)]
type Examples = (Vec<u8>, Vec<u8>);

/// Every `vmi-audit` rule: the header and entry points, each instruction, the stack, the
/// registers and the way a routine leaves, the manifest and the GetRelocationInfo table.
pub static RULES: &[&Rule] = &[
    &VMI_HEADER,
    &ENTRY_SLOTS,
    &ROUTINE,
    &DECODABLE,
    &BOUNDED,
    &CALL_RETURNS,
    &BRANCH_INSIDE_IMAGE,
    &NO_FPU_SIMD,
    &DF_CLEAR,
    &POSITION_INDEPENDENT,
    &SEGMENTS_UNTOUCHED,
    &STACK_BALANCED,
    &STACK_BOUNDED,
    &REGISTERS_PRESERVED,
    &NO_RETURN,
    &IRET_FRAME,
    &MANIFEST,
    &ANSWER_ALLOWED,
    &TARGET_INSIDE_IMAGE,
    &TIMER_GROUP,
];

rule! {
    /// The file is an option ROM whose first image carries the VMI header (`"cVmi"` at 0x8).
    ///
    /// The audit finds the code through the VMI header's entry slots (vmi-abi.md §1.1): a
    /// file that is no option ROM, or whose image 0 has no `"cVmi"`, has nothing to audit and
    /// fails at once.
    pub static VMI_HEADER {
        profile: PROFILE,
        id: "vmi-header",
        severity: Fail,
        source: "vmi-abi.md §1.1",
    }
}

#[cfg(test)]
fn vmi_header_examples() -> Examples {
    let mut not_vmi = native();
    not_vmi[8..12].fill(0);
    (native(), not_vmi)
}

rule! {
    /// The Init (0x80) and GetRelocationInfo (0x88) slots hold a near `jmp` the audit can
    /// follow.
    ///
    /// Linux near-calls both slots (vmi-abi.md §1.1, §3.1, §3.2). The audit walks each from
    /// the target of the `jmp rel8`/`jmp rel32` in the slot; code executed in place in the slot
    /// cannot be located, so the routine is not audited and the rule fails.
    pub static ENTRY_SLOTS {
        profile: PROFILE,
        id: "entry-slots",
        severity: Fail,
        source: "vmi-abi.md §1.1, §3.1, §3.2",
    }
}

#[cfg(test)]
fn entry_slots_examples() -> Examples {
    let mut img = native();
    img[0x80..0x88].copy_from_slice(&[0x31, 0xC0, 0xC3, 0x90, 0x90, 0x90, 0x90, 0x90]);
    (native(), img)
}

rule! {
    /// A routine that broke no rule: its instructions, stack use and path lengths.
    ///
    /// For each routine the audit walked without a failure — Init, GetRelocationInfo, the
    /// 16-bit init and every call the manifest lists with code — one finding gives the
    /// instructions reached, the deepest stack use below the entry ESP and the shortest and
    /// longest path in instructions (a call counts its callee's path), and says its
    /// registers are kept as its class requires (vmi-abi.md §4.1). A routine that fails gets
    /// no such line.
    pub static ROUTINE {
        profile: PROFILE,
        id: "routine",
        severity: Info,
        source: "vmi-abi.md §4.1, §9",
    }
}

#[cfg(test)]
fn routine_examples() -> Examples {
    (native(), registers_preserved_examples().1)
}

rule! {
    /// Every byte control reaches decodes as a valid instruction.
    ///
    /// The audit decodes each reachable instruction (32-bit, or 16-bit for the init entry)
    /// with iced-x86; an invalid or truncated one would raise #UD in the kernel (or in the
    /// BIOS at POST), and nothing after it can be judged.
    pub static DECODABLE {
        profile: PROFILE,
        id: "decodable",
        severity: Fail,
        source: "vmi-abi.md §9 (the ROM's code runs in the kernel)",
    }
}

#[cfg(test)]
fn decodable_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        e.a.db(&[0x0F, 0x04])?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// A routine's exploration ends: no recursion, at most 20,000 abstract steps.
    ///
    /// Calls run on the kernel's stack from deep paths (vmi-abi.md §9, pitfall 6): a routine
    /// that calls itself, directly or through helpers (or nests helpers more than eight
    /// deep), has no bounded stack use, and a routine whose states do not settle within
    /// 20,000 steps (`MAX_STATES`) cannot be judged; both fail.
    pub static BOUNDED {
        profile: PROFILE,
        id: "bounded",
        severity: Fail,
        source: "vmi-abi.md §9 pitfall 6",
    }
}

#[cfg(test)]
fn bounded_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        let mut top = e.a.create_label();
        e.a.set_label(&mut top)?;
        e.a.call(top)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// A helper routine a call reaches returns to its caller cleanly.
    ///
    /// Shared helpers (vmi_rom's RAM and time helpers, a compiler's functions) are walked once
    /// on their own and summarised by the registers they change, their stack use and path
    /// lengths. A helper that does not return with `ret` and a balanced stack, or that fails
    /// a rule itself, makes its call site fail: the caller's state after the call is
    /// unknown. Calls follow the i386 convention Linux uses (vmi-abi.md §4.1).
    pub static CALL_RETURNS {
        profile: PROFILE,
        id: "call-returns",
        severity: Fail,
        source: "vmi-abi.md §4.1",
    }
}

#[cfg(test)]
fn call_returns_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        let mut helper = e.a.create_label();
        e.a.call(helper)?;
        e.a.ret()?;
        e.a.set_label(&mut helper)?;
        e.a.jmp(helper)?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// Control never leaves the image.
    ///
    /// The ROM runs where the kernel mapped it (PAGE_OFFSET + its physical address, or the
    /// hole above virtual_top) and nothing beyond its image is its own (vmi-abi.md §9,
    /// pitfall 3): a branch, call or fall-through that reaches an offset outside the image
    /// executes whatever memory holds.
    pub static BRANCH_INSIDE_IMAGE {
        profile: PROFILE,
        id: "branch-inside-image",
        severity: Fail,
        source: "vmi-abi.md §9 pitfall 3",
    }
}

#[cfg(test)]
fn branch_inside_image_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        e.a.db(&[0xE9, 0x00, 0x00, 0x10, 0x00])?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// No x87, MMX, SSE or AVX instruction, and no such register.
    ///
    /// Linux never saves the user's FPU state around a paravirtual call, and CR0.TS may be set
    /// when one arrives (vmi-abi.md §9, pitfall 4): an x87/MMX/SSE/AVX instruction would
    /// corrupt user state or raise #NM in the kernel.
    pub static NO_FPU_SIMD {
        profile: PROFILE,
        id: "no-fpu-simd",
        severity: Fail,
        source: "vmi-abi.md §9 pitfall 4",
    }
}

#[cfg(test)]
fn no_fpu_simd_examples() -> Examples {
    let bad = with(Call::CLTS, |e| {
        e.a.fninit()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// No `std`: every call returns with the direction flag clear.
    ///
    /// The kernel's C code assumes DF = 0 after every call (vmi-abi.md §4.1 class C, §9
    /// pitfall 4); the audit rejects any `std`.
    pub static DF_CLEAR {
        profile: PROFILE,
        id: "df-clear",
        severity: Fail,
        source: "vmi-abi.md §4.1, §9 pitfall 4",
    }
}

#[cfg(test)]
fn df_clear_examples() -> Examples {
    let bad = with(Call::GetCR2, |e| {
        e.a.std()?;
        e.a.mov(eax, cr2)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// No absolute address: no far branch, no indirect branch, no absolute memory operand.
    ///
    /// The image runs at PAGE_OFFSET + its physical address, and PAGE_OFFSET differs between
    /// kernels (0xC0000000 by default, also 0x80000000, 0x40000000, 0xB0000000) (vmi-abi.md
    /// §9, pitfall 3): code must compute every address EIP-relative. A far or indirect branch
    /// (which the audit also cannot follow) and a 32-bit memory operand with neither base nor
    /// index fail.
    pub static POSITION_INDEPENDENT {
        profile: PROFILE,
        id: "position-independent",
        severity: Fail,
        source: "vmi-abi.md §9 pitfall 3",
    }
}

#[cfg(test)]
fn position_independent_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        e.a.mov(eax, dword_ptr(0xC00C_0100u32))?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// 32-bit code loads no segment register.
    ///
    /// Only CS and SS can be trusted in many calls, DS/ES may hold user selectors, and Linux
    /// keeps per-CPU data in FS and the stack canary or TLS in GS (vmi-abi.md §4.1, §9 pitfall
    /// 7): 32-bit routines must not load a segment register (the 16-bit init may, to reach the
    /// BIOS data area, and restores them).
    pub static SEGMENTS_UNTOUCHED {
        profile: PROFILE,
        id: "segments-untouched",
        severity: Fail,
        source: "vmi-abi.md §4.1, §9 pitfall 7",
    }
}

#[cfg(test)]
fn segments_untouched_examples() -> Examples {
    let bad = with(Call::GetCR2, |e| {
        e.a.mov(fs, ax)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// The stack is balanced: every `ret` finds its return address, no pop reads the caller's
    /// stack, ESP changes only in tracked ways.
    ///
    /// The caller pops its stack arguments and expects a plain `ret` (vmi-abi.md §4.1): a
    /// routine must pop exactly what it pushed. The audit tracks every push and pop and fails
    /// a `ret` to a value that is not a return address, a pop or `popa` above the entry ESP,
    /// an ESP set from an untracked value, paths that reach an instruction with different
    /// stack depths, and a return with ESP above its entry value.
    pub static STACK_BALANCED {
        profile: PROFILE,
        id: "stack-balanced",
        severity: Fail,
        source: "vmi-abi.md §4.1",
    }
}

#[cfg(test)]
fn stack_balanced_examples() -> Examples {
    let bad = with(Call::GetCR2, |e| {
        e.a.push(eax)?;
        e.a.mov(eax, cr2)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// No path pushes more than 256 words.
    ///
    /// Calls arrive on 4 KiB or 8 KiB kernel stacks from deep paths (vmi-abi.md §9, pitfall
    /// 6); the audit stops a path whose stack grows past `STACK_LIMIT` (256) words and fails
    /// it.
    pub static STACK_BOUNDED {
        profile: PROFILE,
        id: "stack-bounded",
        severity: Fail,
        source: "vmi-abi.md §9 pitfall 6",
    }
}

#[cfg(test)]
fn stack_bounded_examples() -> Examples {
    let bad = with(Call::GetCR0, |e| {
        for _ in 0..300 {
            e.a.push(eax)?;
        }
        for _ in 0..300 {
            e.a.pop(eax)?;
        }
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// Every exit keeps the registers the call's class must preserve.
    ///
    /// The vmi-abi call table gives each call its class (vmi-abi.md §4.1): class X (the
    /// interrupt-flag calls, patched inline over sites that save nothing, §3.4) preserves
    /// every register but its outputs; class C preserves EBX, ESI, EDI and EBP; IRET keeps
    /// everything, SYSEXIT everything but ECX and EDX; Init and GetRelocationInfo are class C,
    /// the 16-bit init may change only AX. The finding names each register changed and the
    /// instruction that wrote it (or the register whose entry value it holds).
    pub static REGISTERS_PRESERVED {
        profile: PROFILE,
        id: "registers-preserved",
        severity: Fail,
        source: "vmi-abi.md §3.4, §4.1, §9 pitfall 1",
    }
}

#[cfg(test)]
fn registers_preserved_examples() -> Examples {
    let bad = with(Call::DisableInterrupts, |e| {
        e.a.xor(ebx, ebx)?;
        e.a.cli()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// A routine leaves the way its class says: IRET and SYSEXIT never return, the others
    /// always do.
    ///
    /// Class N calls (IRET, SYSEXIT) leave through `iret`/`sysexit`; Linux jumps or calls them
    /// in place of the instruction and nothing follows (vmi-abi.md §3.5, §4.1). Every other
    /// routine must return with `ret` (the 16-bit init with `retf`); an `iret`, `sysexit` or
    /// `retf` in it fails.
    pub static NO_RETURN {
        profile: PROFILE,
        id: "no-return",
        severity: Fail,
        source: "vmi-abi.md §3.5, §4.1",
    }
}

#[cfg(test)]
fn no_return_examples() -> Examples {
    let bad = with(Call::IRET, |e| {
        e.a.ret()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// IRET's `iret` runs with ESP at the interrupt frame.
    ///
    /// Reached by `call` (CALL_REL), the IRET routine must drop its return address and run
    /// `iret` with ESP at the frame the caller built; reached by `jmp`, with ESP where it
    /// came in (vmi-abi.md §3.3, §4.2). Delivering a fault of the return at the call site,
    /// it may instead `iret` into the handler from `FAULT_DELIVERY_WORDS` (6) words below
    /// (`vmi_rom::iret`). Any other ESP fails.
    pub static IRET_FRAME {
        profile: PROFILE,
        id: "iret-frame",
        severity: Fail,
        source: "vmi-abi.md §3.3, §4.2 (33 IRET)",
    }
}

#[cfg(test)]
fn iret_frame_examples() -> Examples {
    let bad = with(Call::IRET, |e| {
        e.a.iretd()?;
        Ok(Answer::Call)
    });
    (native(), bad)
}

rule! {
    /// The vmirom manifest at 0x60 is there and reads whole.
    ///
    /// The audit locates each call's code through the manifest a vmirom-built ROM carries at
    /// 0x60 (`vmi_rom::manifest`: "VMRM", the GetRelocationInfo table's offset and length).
    /// A ROM without one (another tool's) is only warned about: its calls can be located by
    /// running GetRelocationInfo (`vmirom test`). A damaged manifest — another version, a
    /// table past the image end, an unreadable backend name — fails.
    pub static MANIFEST {
        profile: PROFILE,
        id: "manifest",
        severity: Fail,
        source: "vmi_rom::manifest",
    }
}

#[cfg(test)]
fn manifest_examples() -> Examples {
    let mut damaged = native();
    damaged[crate::manifest::OFFSET + 4] = 99;
    (native(), damaged)
}

rule! {
    /// Each call answers a relocation type Linux tolerates for it.
    ///
    /// How Linux treats CALL_REL, JUMP_REL, NOP and NONE depends on how it uses the call
    /// (vmi-abi.md §3.3, §3.5): JUMP_REL only for IRET and SYSEXIT (elsewhere a kernel BUG),
    /// never NOP for a value-returning call, never NONE or NOP for IRET/SYSEXIT. The vmi-abi
    /// call table lists each call's allowed answers; a table entry outside them, a type byte
    /// above 3, or an answer for a number that is no VMI call fails.
    pub static ANSWER_ALLOWED {
        profile: PROFILE,
        id: "answer-allowed",
        severity: Fail,
        source: "vmi-abi.md §3.3, §3.5; vmi_abi::calls",
    }
}

#[cfg(test)]
fn answer_allowed_examples() -> Examples {
    // SetCR0 (15) answered JUMP_REL.
    (native(), table(|img, at| img[at(15)] = 2))
}

rule! {
    /// Each CALL_REL/JUMP_REL answer's target lies inside the image.
    ///
    /// GetRelocationInfo answers a call with the address Linux calls or jumps to, or patches
    /// into its call sites (vmi-abi.md §3.2, §3.3); a target offset of 0 or past the image
    /// sends the kernel outside the ROM.
    pub static TARGET_INSIDE_IMAGE {
        profile: PROFILE,
        id: "target-inside-image",
        severity: Fail,
        source: "vmi-abi.md §3.2, §3.3",
    }
}

#[cfg(test)]
fn target_inside_image_examples() -> Examples {
    // SetCR3 (17) answered CALL_REL at offset 0xFFFFFF.
    let bad = table(|img, at| {
        let far = (0x00FF_FFFFu32 << 8) | 1;
        img[at(17)..at(17) + 4].copy_from_slice(&far.to_le_bytes())
    });
    (native(), bad)
}

rule! {
    /// A call that is implemented has the calls Linux then uses without checking.
    ///
    /// When GetCycleFrequency (66) answers anything but NONE, Linux turns the VMI timer on and
    /// calls GetCycleCounter, GetWallclockTime, WallclockUpdated and SetAlarm (67–70) without
    /// a NULL check (vmi-abi.md §3.5, §5.2): each must be CALL_REL. The vmi-abi call table's
    /// `requires` lists such groups.
    pub static TIMER_GROUP {
        profile: PROFILE,
        id: "timer-group",
        severity: Fail,
        source: "vmi-abi.md §3.5, §5.2; vmi_abi::calls",
    }
}

#[cfg(test)]
fn timer_group_examples() -> Examples {
    // GetCycleFrequency answered CALL_REL (at CPUID's code), 67–70 NONE.
    let bad = table(|img, at| {
        let cpuid = u32::from_le_bytes(img[at(0)..at(0) + 4].try_into().unwrap()) >> 8;
        img[at(66)..at(66) + 4].copy_from_slice(&((cpuid << 8) | 1).to_le_bytes());
        for n in 67..=70 {
            img[at(n)..at(n) + 4].fill(0);
        }
    });
    (native(), bad)
}

#[cfg(test)]
mod samples {
    //! The images the rules' examples start from.

    use crate::emit::Emit;
    use crate::generate::{BuildOptions, generate, generate_unaudited};
    use crate::manifest::Manifest;
    use crate::native::Native;
    use crate::{Answer, GenError, Override};
    use vmi_abi::Call;

    pub(super) fn native() -> Vec<u8> {
        generate(&Native, &BuildOptions::default()).unwrap().image
    }

    /// The native ROM with `call`'s routine replaced by `emit`, not audited.
    pub(super) fn with(call: Call, emit: fn(&mut Emit) -> Result<Answer, GenError>) -> Vec<u8> {
        let backend = Override {
            base: Native,
            call,
            emit,
        };
        generate_unaudited(&backend, &BuildOptions::default())
            .unwrap()
            .image
    }

    /// The native ROM with its GetRelocationInfo table changed by `f` (given the offset of
    /// entry `n`).
    pub(super) fn table(f: fn(&mut Vec<u8>, &dyn Fn(usize) -> usize)) -> Vec<u8> {
        let mut img = native();
        let m = Manifest::read(&img).unwrap().unwrap();
        f(&mut img, &|n| usize::from(m.table) + 4 * n);
        img
    }

    /// A VMI ROM from another tool: no manifest; Init and GetRelocationInfo return 0.
    pub(super) fn foreign() -> Vec<u8> {
        use optionrom::ImageBuilder;
        use optionrom::build::Finish;
        use optionrom::vmi::{VmiHeaderSpec, write_header};
        let mut b = ImageBuilder::new(vmi_abi::consts::HEADER_SIZE).unwrap();
        let init = b.append(&[0x31, 0xC0, 0xC3], 16);
        let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
        write_header(&mut b, &VmiHeaderSpec::default(), init, reloc).unwrap();
        b.finish(&Finish::default()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    //! Every rule has its two images, declared next to it: the native ROM passes every
    //! rule; a broken image per rule is flagged.

    use super::*;
    use optionrom::validate::{Finding, Severity, worst};

    /// A rule and the function that builds its examples.
    type Pair = (&'static Rule, fn() -> Examples);

    /// Every rule, with its examples.
    const EXAMPLES: &[Pair] = &[
        (&VMI_HEADER, vmi_header_examples),
        (&ENTRY_SLOTS, entry_slots_examples),
        (&ROUTINE, routine_examples),
        (&DECODABLE, decodable_examples),
        (&BOUNDED, bounded_examples),
        (&CALL_RETURNS, call_returns_examples),
        (&BRANCH_INSIDE_IMAGE, branch_inside_image_examples),
        (&NO_FPU_SIMD, no_fpu_simd_examples),
        (&DF_CLEAR, df_clear_examples),
        (&POSITION_INDEPENDENT, position_independent_examples),
        (&SEGMENTS_UNTOUCHED, segments_untouched_examples),
        (&STACK_BALANCED, stack_balanced_examples),
        (&STACK_BOUNDED, stack_bounded_examples),
        (&REGISTERS_PRESERVED, registers_preserved_examples),
        (&NO_RETURN, no_return_examples),
        (&IRET_FRAME, iret_frame_examples),
        (&MANIFEST, manifest_examples),
        (&ANSWER_ALLOWED, answer_allowed_examples),
        (&TARGET_INSIDE_IMAGE, target_inside_image_examples),
        (&TIMER_GROUP, timer_group_examples),
    ];

    fn of(rule: &Rule, image: &[u8]) -> Vec<Finding> {
        super::super::audit(image)
            .findings
            .into_iter()
            .filter(|f| f.rule == rule.id)
            .collect()
    }

    #[test]
    fn every_rule_passes_the_native_rom_and_flags_a_broken_one() {
        for rule in RULES {
            let n = EXAMPLES
                .iter()
                .filter(|(r, _)| std::ptr::eq(*r, *rule))
                .count();
            assert_eq!(n, 1, "{}: {n} example pairs", rule.qualified());
        }
        assert_eq!(EXAMPLES.len(), RULES.len());
        for (rule, examples) in EXAMPLES {
            let (passes, flags) = examples();
            let pass = of(rule, &passes);
            assert_eq!(
                worst(&pass),
                Severity::Pass,
                "{}: {pass:#?}",
                rule.qualified()
            );
            let flagged = of(rule, &flags);
            assert_eq!(
                worst(&flagged),
                rule.severity.verdict(),
                "{}: {:#?}",
                rule.qualified(),
                super::super::audit(&flags).findings
            );
            if rule.severity == optionrom::validate::rule::Level::Info {
                let said = |f: &[Finding]| f.iter().map(|x| x.message.clone()).collect::<Vec<_>>();
                assert!(!pass.is_empty(), "{}", rule.qualified());
                assert_ne!(said(&pass), said(&flagged), "{}", rule.qualified());
            }
        }
    }

    #[test]
    fn every_rule_is_documented() {
        assert_eq!(
            optionrom::validate::rule::undocumented(RULES),
            Vec::<String>::new()
        );
        assert!(RULES.iter().all(|r| r.profile == PROFILE));
    }

    #[test]
    fn a_rom_without_a_manifest_is_only_warned_about() {
        let f = of(&MANIFEST, &samples::foreign());
        assert_eq!(worst(&f), Severity::Warn, "{f:#?}");
    }

    #[test]
    fn every_finding_carries_a_declared_rule() {
        for (_, examples) in EXAMPLES {
            let (a, b) = examples();
            for f in super::super::audit(&a)
                .findings
                .into_iter()
                .chain(super::super::audit(&b).findings)
            {
                assert!(
                    RULES
                        .iter()
                        .any(|r| r.id == f.rule && r.profile == f.profile),
                    "{f:?}"
                );
            }
        }
    }
}
