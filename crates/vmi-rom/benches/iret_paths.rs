//! IRET's path length for Linux's usual frames, before (the `iret` executed inside the ROM,
//! faults reported there) and after the fault check (faults delivered at the call site), for
//! the native and the trace ROM, and the routine sizes. `cargo bench -p vmi-rom --bench
//! iret_paths`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_rom::generate::{BuildOptions, Generated, generate, generate_unaudited};
use vmi_rom::iret::{LinuxFrame, path};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;
use vmi_rom::{Answer, Backend, Override};

/// The native IRET before the fix.
fn iret_in_rom() -> Override<Native> {
    Override {
        base: Native,
        call: Call::IRET,
        emit: |e| {
            e.a.lea(esp, ptr(esp + 4))?;
            e.a.iretd()?;
            Ok(Answer::Call)
        },
    }
}

fn counts(g: &Generated) -> (usize, usize, u32) {
    let c = &g.calls[Call::IRET as usize];
    let code = &g.image[c.offset as usize..(c.offset + c.size) as usize];
    let n = |f| path(code, 0, f).map_or(0, |p| p.len());
    (n(LinuxFrame::Kernel), n(LinuxFrame::User), c.size)
}

fn row(what: &str, b: &dyn Backend, audited: bool) {
    let opts = BuildOptions::default();
    let g = if audited {
        generate(b, &opts).unwrap()
    } else {
        generate_unaudited(b, &opts).unwrap()
    };
    let (k, u, size) = counts(&g);
    println!("{what:<44} {k:>12} {u:>10} {size:>8}");
}

fn main() {
    println!(
        "{:<44} {:>12} {:>10} {:>8}",
        "IRET (instructions to the iret)", "kernel frame", "user frame", "bytes"
    );
    row(
        "native, before (iret inside the ROM)",
        &iret_in_rom(),
        false,
    );
    row("native, after (faults at the call site)", &Native, true);
    row("trace(native), before", &Trace::new(iret_in_rom()), false);
    row("trace(native), after", &Trace::new(Native), true);
}
