//! QEMU starts, SeaBIOS runs, and a multiboot guest ends the run through isa-debug-exit.

use vmi_harness::{multiboot, qemu};

#[test]
fn exit_stub_ends_the_run_with_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("exit.bin");
    std::fs::write(&kernel, multiboot::exit_stub(0x21)).unwrap();
    let run = qemu::run(&qemu::QemuConfig {
        kernel: Some(kernel),
        ..Default::default()
    })
    .unwrap();
    assert!(!run.timed_out, "QEMU did not exit: {}", run.stderr);
    assert_eq!(run.guest_exit_value(), Some(0x21));
    assert!(
        run.seabios_log.contains("SeaBIOS"),
        "no SeaBIOS log: {:?}",
        run.seabios_log
    );
}

#[test]
fn this_qemu_can_translate_one_instruction_per_block() {
    let opt = qemu::one_insn_per_tb().unwrap();
    assert!(opt == "-one-insn-per-tb" || opt == "-singlestep", "{opt}");
}
