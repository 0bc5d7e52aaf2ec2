//! The audit is able to fail: deliberately broken backends and patched tables get the exact
//! rule and routine they violate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::code_asm::*;
use optionrom::validate::Severity;
use vmi_abi::Call;
use vmi_rom::audit::audit;
use vmi_rom::emit::Emit;
use vmi_rom::generate::{BuildOptions, generate, generate_unaudited};
use vmi_rom::manifest::Manifest;
use vmi_rom::native::Native;
use vmi_rom::{Answer, GenError, Override};

fn fails(call: Call, bad: fn(&mut Emit) -> Result<Answer, GenError>) -> Vec<(String, String)> {
    let g = generate_unaudited(
        &Override {
            base: Native,
            call,
            emit: bad,
        },
        &BuildOptions::default(),
    )
    .unwrap();
    audit(&g.image)
        .findings
        .into_iter()
        .filter(|f| f.severity == Severity::Fail)
        .map(|f| (f.rule.to_string(), f.message))
        .collect()
}

fn assert_one(found: &[(String, String)], rule: &str, needle: &str) {
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, rule, "{found:#?}");
    assert!(found[0].1.contains(needle), "{found:#?}");
}

#[test]
fn class_x_call_that_clobbers_ebx() {
    let f = fails(Call::DisableInterrupts, |e| {
        e.a.xor(ebx, ebx)?;
        e.a.cli()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "registers-preserved", "DisableInterrupts: returns at");
    assert!(f[0].1.contains("ebx (written at"), "{f:?}");
}

#[test]
fn class_x_call_that_clobbers_ecx_like_a_c_function() {
    let f = fails(Call::EnableInterrupts, |e| {
        e.a.mov(ecx, 1)?;
        e.a.sti()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "registers-preserved", "ecx");
}

#[test]
fn saving_and_restoring_a_register_is_fine() {
    let f = fails(Call::DisableInterrupts, |e| {
        e.a.push(ebx)?;
        e.a.push(ecx)?;
        e.a.xor(ebx, ebx)?;
        e.a.mov(ecx, ebx)?;
        e.a.pop(ecx)?;
        e.a.pop(ebx)?;
        e.a.cli()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn restoring_into_the_wrong_register_is_caught() {
    let f = fails(Call::GetCR3, |e| {
        e.a.push(ebx)?;
        e.a.push(esi)?;
        e.a.pop(ebx)?;
        e.a.pop(esi)?;
        e.a.mov(eax, cr3)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "registers-preserved", "ebx (holds entry esi)");
}

#[test]
fn c_class_call_clobbering_ebx_on_one_path_only() {
    let f = fails(Call::SetDR, |e| {
        let mut skip = e.a.create_label();
        e.a.test(eax, eax)?;
        e.a.jz(skip)?;
        e.a.mov(ebx, 7)?;
        e.a.set_label(&mut skip)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "registers-preserved", "ebx");
}

#[test]
fn fpu_and_sse_are_rejected() {
    let f = fails(Call::CLTS, |e| {
        e.a.fninit()?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "no-fpu-simd", "fninit");
    let f = fails(Call::CLTS, |e| {
        e.a.xorps(xmm0, xmm0)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "no-fpu-simd", "xorps");
}

#[test]
fn absolute_addresses_are_rejected() {
    let f = fails(Call::GetCR0, |e| {
        e.a.mov(eax, dword_ptr(0xC00C_0100u32))?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(
        &f,
        "position-independent",
        "absolute memory operand [0xc00c0100]",
    );
}

#[test]
fn unbalanced_stack_and_std_and_segment_loads() {
    let f = fails(Call::GetCR2, |e| {
        e.a.push(eax)?;
        e.a.mov(eax, cr2)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "stack-balanced", "not a return address");
    let f = fails(Call::GetCR2, |e| {
        e.a.std()?;
        e.a.mov(eax, cr2)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "df-clear", "std");
    let f = fails(Call::GetCR2, |e| {
        e.a.mov(fs, ax)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "segments-untouched", "segment register");
}

#[test]
fn iret_must_drop_exactly_its_return_address() {
    let f = fails(Call::IRET, |e| {
        e.a.iretd()?;
        Ok(Answer::Call)
    });
    assert_one(&f, "iret-frame", "iret at");
    let f = fails(Call::IRET, |e| {
        e.a.lea(esp, ptr(esp + 4))?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    assert!(f.iter().any(|(r, _)| r == "no-return"), "{f:#?}");
}

#[test]
fn generate_refuses_forbidden_answers_and_failing_audits() {
    let e = generate_unaudited(
        &Override {
            base: Native,
            call: Call::SetCR0,
            emit: |e| {
                e.a.mov(cr0, eax)?;
                e.a.ret()?;
                Ok(Answer::Jump)
            },
        },
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("call 15 (SetCR0) answered JUMP_REL, allowed: NONE|CALL_REL"),
        "{e}"
    );
    let e = generate(
        &Override {
            base: Native,
            call: Call::DisableInterrupts,
            emit: |e| {
                e.a.pop(ebx)?;
                e.a.push(ebx)?;
                e.a.cli()?;
                e.a.ret()?;
                Ok(Answer::Call)
            },
        },
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, GenError::Audit(_)), "{e}");
}

#[test]
fn patched_table_answers_are_judged_against_the_abi() {
    let g = generate(&Native, &BuildOptions::default()).unwrap();
    let m = Manifest::read(&g.image).unwrap().unwrap();
    let mut img = g.image.clone();
    // SetCR0 (15) answered JUMP_REL; GetCycleFrequency (66) answered CALL_REL pointing at
    // CPUID's code while 67-70 stay NONE; a type byte of 7.
    let at = |n: usize| usize::from(m.table) + 4 * n;
    img[at(15)] = 2;
    let cpuid_off = u32::from_le_bytes(img[at(0)..at(0) + 4].try_into().unwrap()) >> 8;
    img[at(66)..at(66) + 4].copy_from_slice(&((cpuid_off << 8) | 1).to_le_bytes());
    for n in 67..=70 {
        img[at(n)..at(n) + 4].copy_from_slice(&0u32.to_le_bytes());
    }
    img[at(28)] = 7;
    let r = audit(&img);
    let fails: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Fail)
        .map(|f| (f.rule, f.message.clone(), f.offset))
        .collect();
    assert!(fails.iter().any(|(r, m, o)| *r == "answer-allowed"
        && m.contains("SetCR0 (15) answers JUMP_REL")
        && *o == Some(at(15))));
    assert!(
        fails
            .iter()
            .any(|(r, m, _)| *r == "answer-allowed" && m.contains("CLTS answers type 7"))
    );
    for n in 67..=70 {
        assert!(
            fails.iter().any(|(r, m, _)| *r == "timer-group"
                && m.contains(&format!("call {n} must be CALL_REL"))),
            "{fails:#?}"
        );
    }
    // An out-of-image target.
    let mut img = g.image.clone();
    img[at(17)..at(17) + 4].copy_from_slice(&((0x00FF_FFFFu32 << 8) | 1).to_le_bytes());
    let r = audit(&img);
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "target-inside-image" && f.severity == Severity::Fail)
    );
}
