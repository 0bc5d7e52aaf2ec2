//! Static audit of a VMI ROM image (`vmirom check --profile vmi-audit`).
//!
//! Every routine reachable from the entry points (16-bit init, Init, GetRelocationInfo, and each
//! call the [manifest](crate::manifest) table lists with code) is decoded by following its
//! control flow, and abstractly executed: each general-purpose register holds either its value
//! on entry, a value some instruction produced, or a return address; the stack is tracked push
//! by push. That yields, per routine:
//! - whether it returns with every register its class must preserve intact (class X: all but
//!   the outputs; class C: EBX, ESI, EDI, EBP; IRET: all, with ESP at the frame or, delivering
//!   a fault at the call site, [`FAULT_DELIVERY_WORDS`] below the entry ESP; SYSEXIT: all but
//!   ECX/EDX), naming the instruction that clobbered a register;
//! - its maximum stack use (bounded, or the audit fails) and its path length in instructions;
//! - no x87/MMX/SSE/AVX instruction, no `std`, no segment-register load, no absolute memory
//!   operand, no far or indirect branch, no branch leaving the image.
//!
//! The table itself is checked against the ABI: each answer is one vmi-abi allows for the call,
//! 66 brings 67–70, and every CALL_REL/JUMP_REL target lies inside the image.
//!
//! Each finding names one of the [`rules`], declared with its explanation
//! (`vmirom check --explain RULE`).

pub mod rules;

use crate::manifest::Manifest;
use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory,
    Mnemonic, OpAccess, OpKind, Register,
};
use optionrom::validate::rule::Rule;
use optionrom::validate::{Finding, Severity};
use std::collections::{BTreeMap, VecDeque};
use vmi_abi::calls::{Reg, RegClass, RegSet};
use vmi_abi::{Call, RelocType, consts};

/// Profile name of the audit's findings.
pub const PROFILE: &str = "vmi-audit";
/// Most instructions explored per routine (bounds the work on hostile input).
pub const MAX_STATES: usize = 20_000;
/// Stack use above which a routine fails the audit (Linux runs on 4 KiB stacks).
pub const STACK_LIMIT: u32 = 256;
/// Words below its entry ESP at which a CALL_REL IRET may also leave: delivering a fault of
/// the return at the call site ([`crate::iret`]), an `iret` into the handler whose 3-word
/// frame sits on the 4-word exception frame the CPU would have pushed below the IRET frame
/// (where the return address was).
pub const FAULT_DELIVERY_WORDS: u32 = 6;

/// What the audit measured for one routine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RoutineStats {
    /// Routine name (`Init`, `GetRelocationInfo`, `init16`, or the call name).
    pub name: String,
    /// Call number, for call routines.
    pub call: Option<u8>,
    /// Image offset of its entry.
    pub offset: u32,
    /// Distinct instructions reached.
    pub instructions: u32,
    /// Bytes of code reached.
    pub bytes: u32,
    /// Deepest stack use in bytes below the entry ESP.
    pub max_stack: u32,
    /// Fewest instructions from entry to an exit.
    pub min_path: u32,
    /// Most instructions from entry to an exit without repeating a loop.
    pub max_path: u32,
}

/// The audit's verdicts and measurements.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// One finding per rule per routine.
    pub findings: Vec<Finding>,
    /// Per-routine figures.
    pub routines: Vec<RoutineStats>,
}

impl AuditReport {
    fn add(
        &mut self,
        severity: Severity,
        rule: &'static Rule,
        offset: Option<usize>,
        message: String,
    ) {
        self.findings.push(Finding {
            profile: rule.profile,
            rule: rule.id,
            severity,
            offset,
            message,
        });
    }

    /// Whether no rule failed.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Fail)
    }
}

/// An abstract register or stack value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// The entry value of this register.
    Orig(Reg),
    /// Produced by the instruction at this offset.
    Made(u32),
    /// A return address pushed by a `call` inside the routine: execution resumes here.
    Ret(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    regs: [Val; 7],
    /// Values pushed since entry (last = top). ESP = entry ESP − 4·len + 4·popped_above.
    stack: Vec<Val>,
    /// Words popped above the entry ESP (IRET drops its return address).
    above: u32,
}

impl State {
    fn get(&self, r: Reg) -> Val {
        // `Reg` discriminants are 0..7, the array's indices.
        self.regs.get(r as usize).copied().unwrap_or(Val::Made(0))
    }

    fn set(&mut self, r: Reg, v: Val) {
        if let Some(slot) = self.regs.get_mut(r as usize) {
            *slot = v;
        }
    }
}

fn gpr(r: Register) -> Option<Reg> {
    match r.full_register32() {
        Register::EAX => Some(Reg::Eax),
        Register::EBX => Some(Reg::Ebx),
        Register::ECX => Some(Reg::Ecx),
        Register::EDX => Some(Reg::Edx),
        Register::ESI => Some(Reg::Esi),
        Register::EDI => Some(Reg::Edi),
        Register::EBP => Some(Reg::Ebp),
        _ => None,
    }
}

/// What a routine must keep, and how it may end.
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// Registers it may change.
    clobbers: RegSet,
    /// Class N: it leaves through IRET or SYSEXIT; ESP offset (words above entry) at IRET.
    no_return: Option<u32>,
    bitness: u32,
}

struct Walk<'a> {
    image: &'a [u8],
    name: String,
    rules: Rules,
    report: &'a mut AuditReport,
    /// Instruction at each explored offset.
    code: BTreeMap<u32, Instruction>,
    /// Successor offsets per instruction (for path lengths); exits have none.
    succ: BTreeMap<u32, Vec<u32>>,
    max_stack: u32,
    failed: bool,
    /// Whether some path returns to the caller.
    returned: bool,
    /// Registers changed at some `ret` of this routine (for a callee's summary).
    exit_changed: RegSet,
    /// Summaries of the routines it calls (by entry), computed once each.
    callees: BTreeMap<u32, Summary>,
    /// Extra path length of a call instruction: its callee's (min, max).
    weight: BTreeMap<u32, (u32, u32)>,
    /// Calls being summarised (a callee on this list is recursion).
    stack_of_calls: Vec<u32>,
}

/// What a `call` to a routine of the image does, seen from its call site.
#[derive(Clone, Copy, Debug)]
struct Summary {
    /// Registers it may change.
    changed: RegSet,
    /// Its stack use below the return address.
    max_stack: u32,
    /// Its shortest and longest path.
    paths: (u32, u32),
}

/// The instruction as AT&T text, for messages.
fn text(ins: &Instruction) -> String {
    use iced_x86::Formatter;
    let mut out = String::new();
    iced_x86::GasFormatter::new().format(ins, &mut out);
    out
}

fn is_vector_or_fpu(ins: &Instruction) -> Option<String> {
    let bad = |f: &CpuidFeature| {
        let n = format!("{f:?}");
        [
            "FPU", "MMX", "SSE", "SSSE", "AVX", "FMA", "F16C", "D3NOW", "XOP", "FXSR", "XSAVE",
            "AES", "PCLMUL", "SHA", "CMOV_FPU",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    };
    if let Some(f) = ins.cpuid_features().iter().find(|f| bad(f)) {
        return Some(format!("{f:?}"));
    }
    (0..ins.op_count())
        .filter(|&i| ins.op_kind(i) == OpKind::Register)
        .map(|i| ins.op_register(i))
        .find(|r| r.is_st() || r.is_mm() || r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k())
        .map(|r| format!("{r:?} register"))
}

impl<'a> Walk<'a> {
    fn new(image: &'a [u8], name: String, rules: Rules, report: &'a mut AuditReport) -> Walk<'a> {
        Walk {
            image,
            name,
            rules,
            report,
            code: BTreeMap::new(),
            succ: BTreeMap::new(),
            max_stack: 0,
            failed: false,
            returned: false,
            exit_changed: RegSet::EMPTY,
            callees: BTreeMap::new(),
            weight: BTreeMap::new(),
            stack_of_calls: Vec::new(),
        }
    }

    /// The summary of the routine at `target` (a helper shared by several routines): walked
    /// once on its own, from a fresh state; it must return with its stack balanced. A callee
    /// that cannot be walked (outside the image, no `ret`) fails the audit and counts as
    /// changing every register.
    fn summary(&mut self, at: u32, target: u32) -> Summary {
        if let Some(s) = self.callees.get(&target) {
            return *s;
        }
        let everything = Summary {
            changed: RegSet::of(&Reg::ALL),
            max_stack: 0,
            paths: (1, 1),
        };
        if self.stack_of_calls.contains(&target) || self.stack_of_calls.len() > 8 {
            self.fail(
                &rules::BOUNDED,
                at,
                format!("call at {at:#x} to {target:#x}: recursion"),
            );
            return everything;
        }
        let rules = Rules {
            clobbers: RegSet::of(&Reg::ALL),
            no_return: None,
            bitness: self.rules.bitness,
        };
        let name = format!("{} (helper at {target:#x})", self.name);
        let mut calls = self.stack_of_calls.clone();
        calls.push(target);
        let (summary, failed) = {
            let mut w = Walk::new(self.image, name, rules, self.report);
            w.stack_of_calls = calls;
            w.callees = std::mem::take(&mut self.callees);
            w.run(target);
            let paths = w.paths(target);
            let s = Summary {
                changed: w.exit_changed,
                max_stack: w.max_stack,
                paths,
            };
            let ok = w.returned && !w.failed;
            self.callees = std::mem::take(&mut w.callees);
            (if ok { s } else { everything }, !ok)
        };
        if failed {
            self.fail(
                &rules::CALL_RETURNS,
                at,
                format!("call at {at:#x} to {target:#x}: the callee does not return cleanly"),
            );
        }
        self.callees.insert(target, summary);
        summary
    }

    fn fail(&mut self, rule: &'static Rule, at: u32, msg: String) {
        self.failed = true;
        let offset =
            (usize::try_from(at).unwrap_or(usize::MAX) < self.image.len()).then_some(at as usize);
        self.report.add(
            Severity::Fail,
            rule,
            offset,
            format!("{}: {msg}", self.name),
        );
    }

    fn decode(&mut self, at: u32) -> Option<Instruction> {
        if let Some(i) = self.code.get(&at) {
            return Some(*i);
        }
        let Some(bytes) = self.image.get(at as usize..) else {
            self.fail(
                &rules::BRANCH_INSIDE_IMAGE,
                at,
                format!("control reaches {at:#x}, outside the image"),
            );
            return None;
        };
        let mut d = Decoder::with_ip(
            self.rules.bitness,
            bytes,
            u64::from(at),
            DecoderOptions::NONE,
        );
        let ins = d.decode();
        if ins.is_invalid() {
            self.fail(
                &rules::DECODABLE,
                at,
                format!("invalid or truncated instruction at {at:#x}"),
            );
            return None;
        }
        self.code.insert(at, ins);
        Some(ins)
    }

    /// Static checks on one instruction, independent of state.
    fn check_instruction(&mut self, at: u32, ins: &Instruction) {
        if let Some(what) = is_vector_or_fpu(ins) {
            self.fail(
                &rules::NO_FPU_SIMD,
                at,
                format!("{} at {at:#x} uses {what}", text(ins)),
            );
        }
        if ins.mnemonic() == Mnemonic::Std {
            self.fail(
                &rules::DF_CLEAR,
                at,
                format!("std at {at:#x}: calls must return with DF = 0"),
            );
        }
        if ins.is_jmp_far()
            || ins.is_call_far()
            || ins.is_jmp_far_indirect()
            || ins.is_call_far_indirect()
        {
            self.fail(
                &rules::POSITION_INDEPENDENT,
                at,
                format!("far branch at {at:#x} (absolute address)"),
            );
        }
        if matches!(
            ins.flow_control(),
            FlowControl::IndirectBranch | FlowControl::IndirectCall
        ) {
            self.fail(
                &rules::POSITION_INDEPENDENT,
                at,
                format!("indirect branch at {at:#x} cannot be followed"),
            );
        }
        if self.rules.bitness == 32 {
            for i in 0..ins.op_count() {
                if ins.op_kind(i) == OpKind::Memory
                    && ins.memory_base() == Register::None
                    && ins.memory_index() == Register::None
                    && !matches!(ins.mnemonic(), Mnemonic::Lea)
                {
                    self.fail(
                        &rules::POSITION_INDEPENDENT,
                        at,
                        format!(
                            "absolute memory operand [{:#x}] at {at:#x}",
                            ins.memory_displacement32()
                        ),
                    );
                }
            }
        }
        let iret_like = matches!(
            ins.mnemonic(),
            Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Sysexit | Mnemonic::Retf
        );
        // Real-mode init code may load segment registers (to reach the BDA); it restores them.
        if !iret_like && self.rules.bitness == 32 {
            let mut f = InstructionInfoFactory::new();
            let seg_write = f.info(ins).used_registers().iter().any(|u| {
                u.register().is_segment_register()
                    && matches!(
                        u.access(),
                        OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite
                    )
            });
            if seg_write {
                self.fail(
                    &rules::SEGMENTS_UNTOUCHED,
                    at,
                    format!("{} at {at:#x} loads a segment register", text(ins)),
                );
            }
        }
    }

    /// Applies `ins` to `s`; returns the successor offsets with their states, or None at an exit.
    fn step(&mut self, at: u32, ins: &Instruction, mut s: State) -> Vec<(u32, State)> {
        let next = ins.next_ip() as u32;
        let made = Val::Made(at);
        let mn = ins.mnemonic();
        let reg_op = |i: u32| gpr(ins.op_register(i));
        match ins.flow_control() {
            FlowControl::Return if mn == Mnemonic::Ret => {
                return match s.stack.pop() {
                    Some(Val::Ret(to)) => vec![(to, s)],
                    Some(_) => {
                        self.fail(
                            &rules::STACK_BALANCED,
                            at,
                            format!(
                                "ret at {at:#x} returns to a value that is not a return address"
                            ),
                        );
                        Vec::new()
                    }
                    None => {
                        self.exit_checks(at, &s, "returns");
                        Vec::new()
                    }
                };
            }
            FlowControl::Return => {
                // iret, sysexit, retf: the routine leaves.
                self.leave_checks(at, mn, &s);
                return Vec::new();
            }
            FlowControl::Interrupt | FlowControl::Exception => return Vec::new(),
            FlowControl::Call if ins.near_branch32() == next => {
                // `call next; next: pop reg`: the position-independent base idiom.
                s.stack.push(Val::Ret(next));
                self.note_stack(&s);
                return vec![(next, s)];
            }
            FlowControl::Call => {
                let callee = self.summary(at, ins.near_branch32());
                for r in callee.changed.iter() {
                    s.set(r, made);
                }
                let depth = 4 * s.stack.len() as u32 + 4 + callee.max_stack;
                self.max_stack = self.max_stack.max(depth);
                self.weight.insert(at, callee.paths);
                return vec![(next, s)];
            }
            FlowControl::UnconditionalBranch => return vec![(ins.near_branch32(), s)],
            FlowControl::ConditionalBranch => {
                return vec![(ins.near_branch32(), s.clone()), (next, s)];
            }
            FlowControl::IndirectBranch | FlowControl::IndirectCall => return Vec::new(),
            _ => {}
        }
        match ins.code() {
            Code::Push_r32 | Code::Push_r16 | Code::Push_rm32 | Code::Push_rm16 => {
                let reg = (ins.op0_kind() == OpKind::Register)
                    .then(|| reg_op(0))
                    .flatten();
                s.stack.push(reg.map_or(made, |r| s.get(r)));
            }
            Code::Pushaw | Code::Pushad => {
                for r in [Reg::Eax, Reg::Ecx, Reg::Edx, Reg::Ebx] {
                    s.stack.push(s.get(r));
                }
                s.stack.push(made);
                for r in [Reg::Ebp, Reg::Esi, Reg::Edi] {
                    s.stack.push(s.get(r));
                }
            }
            Code::Popaw | Code::Popad => {
                let order = [
                    Some(Reg::Edi),
                    Some(Reg::Esi),
                    Some(Reg::Ebp),
                    None,
                    Some(Reg::Ebx),
                    Some(Reg::Edx),
                    Some(Reg::Ecx),
                    Some(Reg::Eax),
                ];
                for r in order {
                    match (s.stack.pop(), r) {
                        (None, _) => {
                            self.fail(
                                &rules::STACK_BALANCED,
                                at,
                                format!("popa at {at:#x} reads the caller's stack"),
                            );
                            break;
                        }
                        (Some(v), Some(r)) => s.set(r, v),
                        (Some(_), None) => {}
                    }
                }
            }
            Code::Pushw_ES
            | Code::Pushw_CS
            | Code::Pushw_SS
            | Code::Pushw_DS
            | Code::Pushw_FS
            | Code::Pushw_GS
            | Code::Pushd_ES
            | Code::Pushd_CS
            | Code::Pushd_SS
            | Code::Pushd_DS
            | Code::Pushd_FS
            | Code::Pushd_GS => s.stack.push(made),
            Code::Popw_ES
            | Code::Popw_SS
            | Code::Popw_DS
            | Code::Popw_FS
            | Code::Popw_GS
            | Code::Popd_ES
            | Code::Popd_SS
            | Code::Popd_DS
            | Code::Popd_FS
            | Code::Popd_GS => {
                if s.stack.pop().is_none() {
                    self.fail(
                        &rules::STACK_BALANCED,
                        at,
                        format!("pop at {at:#x} reads the caller's stack"),
                    );
                }
            }
            Code::Pop_rm32 | Code::Pop_rm16 if ins.op0_kind() == OpKind::Memory => {
                if s.stack.pop().is_none() {
                    self.fail(
                        &rules::STACK_BALANCED,
                        at,
                        format!("pop at {at:#x} reads the caller's stack"),
                    );
                }
            }
            Code::Pop_r32 | Code::Pop_r16 => {
                let v = s.stack.pop();
                match (reg_op(0), v) {
                    (Some(r), Some(v)) => s.set(r, v),
                    (_, None) => self.fail(
                        &rules::STACK_BALANCED,
                        at,
                        format!("pop at {at:#x} reads the caller's stack"),
                    ),
                    _ => {}
                }
            }
            Code::Pushfd
            | Code::Pushfw
            | Code::Pushd_imm32
            | Code::Pushd_imm8
            | Code::Push_imm16
            | Code::Pushw_imm8 => s.stack.push(made),
            Code::Popfd | Code::Popfw => {
                if s.stack.pop().is_none() {
                    self.fail(
                        &rules::STACK_BALANCED,
                        at,
                        format!("popf at {at:#x} reads the caller's stack"),
                    );
                }
            }
            Code::Mov_r32_rm32 | Code::Mov_rm32_r32 | Code::Mov_r16_rm16 | Code::Mov_rm16_r16
                if ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register =>
            {
                if let (Some(d), Some(src)) = (reg_op(0), reg_op(1)) {
                    // A 16-bit move keeps the upper half: only a full move copies identity.
                    let full = ins.op_register(0).size() == 4 || self.rules.bitness == 16;
                    let v = if full { s.get(src) } else { made };
                    s.set(d, v);
                } else {
                    self.writes(ins, &mut s, made);
                }
            }
            Code::Lea_r32_m if ins.op_register(0) == Register::ESP => {
                self.adjust_esp(
                    at,
                    ins.memory_base(),
                    ins.memory_displacement32() as i32,
                    &mut s,
                );
            }
            Code::Add_rm32_imm8
            | Code::Add_rm32_imm32
            | Code::Sub_rm32_imm8
            | Code::Sub_rm32_imm32
                if ins.op0_kind() == OpKind::Register && ins.op_register(0) == Register::ESP =>
            {
                let k = ins.immediate32() as i32;
                let k = if matches!(ins.code(), Code::Sub_rm32_imm8 | Code::Sub_rm32_imm32) {
                    -k
                } else {
                    k
                };
                self.adjust_esp(at, Register::ESP, k, &mut s);
            }
            _ => self.writes(ins, &mut s, made),
        }
        self.note_stack(&s);
        vec![(next, s)]
    }

    fn adjust_esp(&mut self, at: u32, base: Register, delta: i32, s: &mut State) {
        if base != Register::ESP || delta % 4 != 0 {
            self.fail(
                &rules::STACK_BALANCED,
                at,
                format!("ESP set to an untracked value at {at:#x}"),
            );
            return;
        }
        let words = delta / 4;
        if words < 0 {
            for _ in 0..-words {
                s.stack.push(Val::Made(at));
            }
        } else {
            for _ in 0..words {
                if s.stack.pop().is_none() {
                    s.above += 1;
                }
            }
        }
    }

    /// Marks every GPR `ins` writes as produced here (stack-pointer writes are checked).
    fn writes(&mut self, ins: &Instruction, s: &mut State, made: Val) {
        let mut f = InstructionInfoFactory::new();
        let info = f.info(ins);
        for u in info.used_registers() {
            if !matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::ReadWrite
                    | OpAccess::CondWrite
                    | OpAccess::ReadCondWrite
            ) {
                continue;
            }
            if let Some(r) = gpr(u.register()) {
                s.set(r, made);
            } else if u.register().full_register32() == Register::ESP
                && !matches!(
                    ins.mnemonic(),
                    Mnemonic::Push | Mnemonic::Pop | Mnemonic::Pushfd | Mnemonic::Popfd
                )
            {
                let at = ins.ip32();
                self.fail(
                    &rules::STACK_BALANCED,
                    at,
                    format!("{} at {at:#x} changes ESP in an untracked way", text(ins)),
                );
            }
        }
    }

    fn note_stack(&mut self, s: &State) {
        let depth = 4 * s.stack.len() as u32;
        self.max_stack = self.max_stack.max(depth);
    }

    fn changed(&self, s: &State, allowed: RegSet) -> Vec<String> {
        Reg::ALL
            .into_iter()
            .filter(|r| !allowed.contains(*r))
            .filter_map(|r| match s.get(r) {
                Val::Orig(o) if o == r => None,
                Val::Orig(o) => Some(format!("{r} (holds entry {o})")),
                Val::Made(at) => Some(format!("{r} (written at {at:#x})")),
                Val::Ret(_) => Some(format!("{r} (holds a return address)")),
            })
            .collect()
    }

    /// Fails `registers-preserved` when a register outside `allowed` does not hold its entry
    /// value at `at`.
    fn kept(&mut self, at: u32, what: &str, s: &State, allowed: RegSet) {
        let bad = self.changed(s, allowed);
        if !bad.is_empty() {
            self.fail(
                &rules::REGISTERS_PRESERVED,
                at,
                format!("{what} with {} changed", bad.join(", ")),
            );
        }
    }

    fn exit_checks(&mut self, at: u32, s: &State, how: &str) {
        self.returned = true;
        let changed: Vec<Reg> = Reg::ALL
            .into_iter()
            .filter(|r| s.get(*r) != Val::Orig(*r))
            .collect();
        self.exit_changed = self.exit_changed.union(RegSet::of(&changed));
        if self.rules.no_return.is_some() {
            self.fail(
                &rules::NO_RETURN,
                at,
                format!("{how} at {at:#x}: a no-return call must leave through iret/sysexit"),
            );
            return;
        }
        if s.above != 0 {
            self.fail(
                &rules::STACK_BALANCED,
                at,
                format!("{how} at {at:#x} with ESP above its entry value"),
            );
        }
        self.kept(at, &format!("{how} at {at:#x}"), s, self.rules.clobbers);
    }

    fn leave_checks(&mut self, at: u32, mn: Mnemonic, s: &State) {
        match (mn, self.rules.no_return) {
            (Mnemonic::Retf, None) if self.rules.bitness == 16 => {
                if !s.stack.is_empty() || s.above != 0 {
                    self.fail(
                        &rules::STACK_BALANCED,
                        at,
                        format!("retf at {at:#x} with the stack unbalanced"),
                    );
                }
                self.kept(at, &format!("retf at {at:#x}"), s, self.rules.clobbers);
            }
            (Mnemonic::Iret | Mnemonic::Iretd, Some(words)) => {
                let at_frame = s.stack.is_empty() && s.above == words;
                let delivers_fault =
                    words == 1 && s.above == 0 && s.stack.len() == FAULT_DELIVERY_WORDS as usize;
                if !at_frame && !delivers_fault {
                    self.fail(
                        &rules::IRET_FRAME,
                        at,
                        format!(
                            "iret at {at:#x} with ESP {} bytes from the frame",
                            4 * s.stack.len() as i64 - 4 * (i64::from(s.above) - i64::from(words))
                        ),
                    );
                }
                self.kept(at, &format!("iret at {at:#x}"), s, RegSet::EMPTY);
            }
            (Mnemonic::Sysexit, Some(_)) => {
                self.kept(
                    at,
                    &format!("sysexit at {at:#x}"),
                    s,
                    RegSet::of(&[Reg::Ecx, Reg::Edx]),
                );
            }
            _ => self.fail(
                &rules::NO_RETURN,
                at,
                format!("{mn:?} at {at:#x} leaves a routine that must return"),
            ),
        }
    }

    fn run(&mut self, entry: u32) {
        let init = State {
            regs: Reg::ALL.map(Val::Orig),
            stack: Vec::new(),
            above: 0,
        };
        let mut states: BTreeMap<u32, State> = BTreeMap::new();
        let mut work: VecDeque<(u32, State)> = VecDeque::from([(entry, init)]);
        let mut steps = 0usize;
        while let Some((at, s)) = work.pop_front() {
            steps += 1;
            if steps > MAX_STATES {
                self.fail(
                    &rules::BOUNDED,
                    at,
                    format!("more than {MAX_STATES} abstract steps"),
                );
                return;
            }
            let merged = match states.get(&at) {
                None => s,
                Some(old) => {
                    if old.stack.len() != s.stack.len() || old.above != s.above {
                        self.fail(
                            &rules::STACK_BALANCED,
                            at,
                            format!("paths reach {at:#x} with different stack depths"),
                        );
                        continue;
                    }
                    let mut m = old.clone();
                    for (a, b) in m.regs.iter_mut().zip(&s.regs) {
                        if *a != *b {
                            *a = merge(*a, *b, at);
                        }
                    }
                    for (a, b) in m.stack.iter_mut().zip(&s.stack) {
                        if *a != *b {
                            *a = merge(*a, *b, at);
                        }
                    }
                    if m == *old {
                        continue;
                    }
                    m
                }
            };
            states.insert(at, merged.clone());
            let Some(ins) = self.decode(at) else {
                continue;
            };
            if !self.succ.contains_key(&at) {
                self.check_instruction(at, &ins);
            }
            let next = self.step(at, &ins, merged);
            let targets: Vec<u32> = next.iter().map(|(t, _)| *t).collect();
            self.succ.entry(at).or_default().extend(targets);
            for (t, st) in next {
                if st.stack.len() as u32 * 4 > STACK_LIMIT * 4 {
                    self.fail(
                        &rules::STACK_BOUNDED,
                        at,
                        format!("stack grows without bound at {at:#x}"),
                    );
                    return;
                }
                work.push_back((t, st));
            }
        }
    }

    fn paths(&self, entry: u32) -> (u32, u32) {
        // Shortest: Dijkstra (an instruction costs 1, a call also its callee's path);
        // longest: DFS over the graph without back edges.
        let cost = |at: u32, longest: bool| {
            1 + self
                .weight
                .get(&at)
                .map_or(0, |(lo, hi)| if longest { *hi } else { *lo })
        };
        let mut dist: BTreeMap<u32, u32> = BTreeMap::new();
        let mut q =
            std::collections::BinaryHeap::from([std::cmp::Reverse((cost(entry, false), entry))]);
        let mut min = u32::MAX;
        while let Some(std::cmp::Reverse((d, at))) = q.pop() {
            if dist.contains_key(&at) {
                continue;
            }
            dist.insert(at, d);
            match self.succ.get(&at) {
                Some(v) if !v.is_empty() => q.extend(
                    v.iter()
                        .map(|t| std::cmp::Reverse((d + cost(*t, false), *t))),
                ),
                _ => min = min.min(d),
            }
        }
        let mut memo: BTreeMap<u32, u32> = BTreeMap::new();
        let max = longest(
            entry,
            &self.succ,
            &|at| cost(at, true),
            &mut memo,
            &mut Vec::new(),
        );
        (if min == u32::MAX { 0 } else { min }, max)
    }
}

fn merge(a: Val, b: Val, at: u32) -> Val {
    match (a, b) {
        (Val::Made(x), _) | (_, Val::Made(x)) => Val::Made(x),
        _ => Val::Made(at),
    }
}

fn longest(
    at: u32,
    succ: &BTreeMap<u32, Vec<u32>>,
    cost: &dyn Fn(u32) -> u32,
    memo: &mut BTreeMap<u32, u32>,
    path: &mut Vec<u32>,
) -> u32 {
    if let Some(v) = memo.get(&at) {
        return *v;
    }
    if path.contains(&at) || path.len() > 4096 {
        return 0;
    }
    path.push(at);
    let mut best = 0;
    for t in succ.get(&at).map(Vec::as_slice).unwrap_or_default() {
        if !path.contains(t) {
            best = best.max(longest(*t, succ, cost, memo, path));
        }
    }
    path.pop();
    memo.insert(at, best + cost(at));
    best + cost(at)
}

#[allow(clippy::too_many_arguments)]
fn walk_routine(
    image: &[u8],
    report: &mut AuditReport,
    name: String,
    call: Option<u8>,
    entry: u32,
    rules: Rules,
) {
    let mut w = Walk::new(image, name.clone(), rules, report);
    w.run(entry);
    let (min_path, max_path) = w.paths(entry);
    let bytes: u32 = w.code.values().map(|i| i.len() as u32).sum();
    let stats = RoutineStats {
        name: name.clone(),
        call,
        offset: entry,
        instructions: w.code.len() as u32,
        bytes,
        max_stack: w.max_stack,
        min_path,
        max_path,
    };
    let failed = w.failed;
    if !failed {
        report.add(
            Severity::Pass,
            &rules::ROUTINE,
            usize::try_from(entry).ok().filter(|e| *e < image.len()),
            format!(
                "{name}: {} instructions, stack {} bytes, path {}..{} instructions, registers kept",
                stats.instructions, stats.max_stack, stats.min_path, stats.max_path
            ),
        );
    }
    report.routines.push(stats);
}

/// Offsets of every instruction reachable from `entry` in `image`, decoded as `bitness`-bit
/// code, in address order (for disassembly listings).
pub fn reachable(image: &[u8], entry: u32, bitness: u32) -> Vec<u32> {
    let mut scratch = AuditReport::default();
    let mut w = Walk::new(
        image,
        String::new(),
        Rules {
            clobbers: RegSet::of(&Reg::ALL),
            no_return: None,
            bitness,
        },
        &mut scratch,
    );
    w.run(entry);
    w.code.keys().copied().collect()
}

/// Whether 32-bit code assembled at offset 0 of `code` can return to its caller with `ret`
/// (false for routines that only leave through `iret`/`sysexit`, loop forever or fault).
pub fn may_return(code: &[u8]) -> bool {
    let mut scratch = AuditReport::default();
    let mut w = Walk::new(
        code,
        String::new(),
        Rules {
            clobbers: RegSet::of(&Reg::ALL),
            no_return: None,
            bitness: 32,
        },
        &mut scratch,
    );
    w.run(0);
    w.returned
}

/// Audits `image` (a whole ROM file; the first image is audited).
pub fn audit(image: &[u8]) -> AuditReport {
    let mut report = AuditReport::default();
    let rom = optionrom::parse(image);
    let Some(first) = rom.images.first() else {
        report.add(
            Severity::Fail,
            &rules::VMI_HEADER,
            None,
            "not an option ROM image".into(),
        );
        return report;
    };
    let img = first.bytes(image);
    let Some(vmi) = &first.vmi else {
        report.add(
            Severity::Fail,
            &rules::VMI_HEADER,
            None,
            "no \"cVmi\" header: not a VMI ROM".into(),
        );
        return report;
    };
    let c = RegSet::of(&[Reg::Eax, Reg::Ecx, Reg::Edx]);
    let rules32 = |clobbers| Rules {
        clobbers,
        no_return: None,
        bitness: 32,
    };
    match vmi.init_target {
        Some(t) => walk_routine(img, &mut report, "Init".into(), None, t as u32, rules32(c)),
        None => report.add(
            Severity::Fail,
            &rules::ENTRY_SLOTS,
            Some(consts::ENTRY_INIT),
            "Init slot at 0x80 is not a near jmp".into(),
        ),
    }
    match vmi.get_reloc_target {
        Some(t) => walk_routine(
            img,
            &mut report,
            "GetRelocationInfo".into(),
            None,
            t as u32,
            rules32(c),
        ),
        None => report.add(
            Severity::Fail,
            &rules::ENTRY_SLOTS,
            Some(consts::ENTRY_GET_RELOC),
            "GetRelocationInfo slot at 0x88 is not a near jmp".into(),
        ),
    }
    if let Some(t) = first.init_target {
        let rules = Rules {
            clobbers: RegSet::of(&[Reg::Eax]),
            no_return: None,
            bitness: 16,
        };
        walk_routine(img, &mut report, "init16".into(), None, t as u32, rules);
    }
    let manifest = match Manifest::read(img) {
        None => {
            report.add(
                Severity::Warn,
                &rules::MANIFEST,
                None,
                "no vmirom manifest at 0x60: the calls' code cannot be located statically; run `vmirom test` to execute GetRelocationInfo".into(),
            );
            return report;
        }
        Some(Err(e)) => {
            report.add(
                Severity::Fail,
                &rules::MANIFEST,
                Some(crate::manifest::OFFSET),
                e,
            );
            return report;
        }
        Some(Ok(m)) => m,
    };
    let entries = manifest.entries(img);
    for e in &entries {
        let Some(call) = Call::from_number(u32::from(e.call)) else {
            if e.reloc != Some(RelocType::None) {
                report.add(
                    Severity::Fail,
                    &rules::ANSWER_ALLOWED,
                    None,
                    format!(
                        "table entry {} is not a VMI call but answers type {}",
                        e.call, e.raw_type
                    ),
                );
            }
            continue;
        };
        let spec = call.spec();
        let entry_at = usize::from(manifest.table) + 4 * usize::from(e.call);
        let Some(reloc) = e.reloc else {
            report.add(
                Severity::Fail,
                &rules::ANSWER_ALLOWED,
                Some(entry_at),
                format!("{} answers type {} (types are 0-3)", spec.name, e.raw_type),
            );
            continue;
        };
        if !spec.allowed.contains(reloc) {
            let allowed: Vec<&str> = spec.allowed.iter().map(RelocType::name).collect();
            report.add(
                Severity::Fail,
                &rules::ANSWER_ALLOWED,
                Some(entry_at),
                format!(
                    "{} ({}) answers {reloc}; Linux tolerates only {}",
                    spec.name,
                    spec.number,
                    allowed.join("|")
                ),
            );
        }
        if !matches!(reloc, RelocType::CallRel | RelocType::JumpRel) {
            continue;
        }
        if e.offset == 0 || e.offset as usize >= img.len() {
            report.add(
                Severity::Fail,
                &rules::TARGET_INSIDE_IMAGE,
                Some(entry_at),
                format!(
                    "{} answers {reloc} with target offset {:#x}, outside the {}-byte image",
                    spec.name,
                    e.offset,
                    img.len()
                ),
            );
            continue;
        }
        let rules = Rules {
            clobbers: spec.clobbers(),
            no_return: match (spec.class, reloc) {
                (RegClass::N, RelocType::CallRel) => Some(1),
                (RegClass::N, _) => Some(0),
                _ => None,
            },
            bitness: 32,
        };
        walk_routine(
            img,
            &mut report,
            spec.name.into(),
            Some(spec.number),
            e.offset,
            rules,
        );
    }
    for e in &entries {
        let Some(call) = Call::from_number(u32::from(e.call)) else {
            continue;
        };
        if e.reloc == Some(RelocType::None) {
            continue;
        }
        for &r in call.spec().requires {
            let ok = entries
                .iter()
                .any(|d| d.call == r && d.reloc == Some(RelocType::CallRel));
            if !ok {
                report.add(
                    Severity::Fail,
                    &rules::TIMER_GROUP,
                    None,
                    format!("{} is implemented, so call {r} must be CALL_REL (Linux calls it without a NULL check)", call.spec().name),
                );
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{BuildOptions, generate};
    use crate::native::Native;

    #[test]
    fn native_rom_passes_and_reports_every_implemented_call() {
        let g = generate(&Native, &BuildOptions::default()).unwrap();
        let r = audit(&g.image);
        let fails: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .collect();
        assert!(fails.is_empty(), "{fails:#?}");
        let implemented = g.calls.iter().filter(|c| c.answer.has_code()).count();
        assert_eq!(
            r.routines.iter().filter(|s| s.call.is_some()).count(),
            implemented
        );
        let cpuid = r.routines.iter().find(|s| s.name == "CPUID").unwrap();
        assert_eq!((cpuid.instructions, cpuid.max_stack), (2, 0));
        let pxe = r.routines.iter().find(|s| s.name == "SetPxELong").unwrap();
        assert_eq!(pxe.max_stack, 8);
        let gr = r
            .routines
            .iter()
            .find(|s| s.name == "GetRelocationInfo")
            .unwrap();
        assert_eq!(gr.max_stack, 4);
    }
}
