//! The 32-bit test guest: generated at run time with iced-x86's assembler, booted by QEMU as a
//! multiboot kernel (or by the [KVM runner](crate::kvm)), it finds and probes a VMI ROM the
//! way Linux does, runs the host's call vectors against it, and streams
//! [records](crate::protocol) to the debug console.
//!
//! # Program
//!
//! A guest is a fixed boot sequence, the host-chosen [`Step`]s in order, and a fixed finish:
//!
//! 1. **Boot** (multiboot: 32-bit protected mode, paging off): write the stream header; load
//!    the GDT (Linux selectors: kernel CS `0x60`, kernel DS `0x68`, user CS `0x73`, user DS
//!    `0x7B`, TSS `0x80`, per-CPU `0xD8`; 32 entries); far-jump to reload CS; SS = `0x68`,
//!    DS = ES = `0x7B`, FS = `0xD8`, GS = 0 (Linux's kernel-mode segments); load the boot IDT;
//!    remap the 8259A PICs to vectors 0x20/0x28 and mask every line. With paging: CR3 = the
//!    page directory, CR4.PSE, CR0.PG|WP, jump to the `PAGE_OFFSET` alias of the next
//!    instruction. Then ESP = the linear stack top, reload GDTR/IDTR with linear bases, `ltr`
//!    the TSS, remember CR0/CR3/CR4, set up the [test area](layout::test) (second page
//!    directory, the test window's PTEs, frame markers, the ring-3 stub), and write `HELLO`.
//! 2. **Steps**: [`Step::Probe`] scans like `probe_vmi_rom` (every read through the linear
//!    map); [`Step::Init`] and [`Step::GetReloc`] near-call the ROM with ESP = the linear stack
//!    top, EFLAGS = 0x2 (IF = DF = 0), Linux's segments, the inputs in their registers and
//!    [canaries](crate::protocol::canary) in all others, then capture every GPR, EFLAGS and
//!    the segment registers (`CALL_RESULT`); GetReloc keeps each answer's EAX in a table.
//!    [`Step::Machine`] reports the native CPU (`MACHINE`: boot CRs, CPUID, trap-guarded
//!    native `rdpmc`, `rdmsr 0x1B`, local-APIC version, the ACPI PM timer found through the
//!    RSDP, RSDT and FADT). [`Step::Vector`] runs one
//!    [call vector](vector) through that table and reports `VECTOR_RESULT` (and `TRAP` for an
//!    expected trap). [`Step::Stress`] loops over checked calls while IRQ0 fires at a high rate
//!    and the timer handler calls the ROM too ([`stress`], `STRESS`). ROM steps, vectors and
//!    stress steps are skipped (and the run finishes) once the probe found nothing or Init
//!    returned non-zero, as Linux would. Every `call`/`jmp` to a relocation target is counted
//!    first, in RAM ([`Invocations`]).
//! 3. **Finish**: write `END`, then write [`EXIT_DONE`](crate::protocol::EXIT_DONE) to
//!    `isa-debug-exit`.
//!
//! # Interrupts and traps
//!
//! Every IDT vector has a stub. Exceptions and stray interrupts write an `EXCEPTION` record
//! (vector, error code, EIP, CS, EFLAGS, CR2, registers, the step that was running) and end the
//! run with a distinct exit value; a fault inside the handler ends it at once. Except:
//!
//! - while a trap is *armed* ([`var::TRAP_RESUME`](layout::var::TRAP_RESUME) ≠ 0, by a
//!   vector's [`Op::ArmTrap`] or the machine report's guarded instructions), the handler writes
//!   `TRAP` instead, disarms, resets ESP and the segments, and jumps to the resume point;
//! - vector 0x20 (IRQ0, the PIT) counts a tick, makes the active stress configuration's
//!   handler calls if a stress step runs, acknowledges the PIC and returns with every register
//!   intact; vector 0x27 (the master PIC's spurious IRQ7) just returns;
//! - while a vector records alarms ([`var::ALARM_MODE`](layout::var::ALARM_MODE) ≠ 0, set by
//!   [`Op::AlarmStart`]), every interrupt at 0x20–0xFF (but 0x27 and 0x80) goes to the alarm
//!   handler instead: it counts the expected vector, a reference timer's, and strays, keeps
//!   the TSC at its entry (the first hit's, and each hit's in the `SAMPLES` lists), which CPU
//!   took it and the in-service bit around its EOI, acknowledges (IRQ0 and the RTC at the
//!   PIC, the others natively or through APICWrite(0xB0) as the mode says), and returns with
//!   every register intact;
//! - vector 0x80 is a DPL-3 interrupt gate: the ring-3 stub (`int 0x80; jmp $`) comes back
//!   through it.
//!
//! # Memory map (physical; [`layout`])
//!
//! | Address | Size | What | Source |
//! |---|---|---|---|
//! | `0x0000_8000` | 256 B | the second CPU's real-mode trampoline (SIPI vector 0x08), copied there by a stress step that starts one | copied at run time |
//! | `0x0010_0000` | 32 B | multiboot header | image |
//! | `0x0010_1000` | 4 KiB | page directory: 4 MiB PSE pages, [0, 64 MiB) at 0 and at `PAGE_OFFSET`; the test window through a 4 KiB page table | image |
//! | `0x0010_2000` | 256 B | GDT (32 entries) | image |
//! | `0x0010_2100` | 4 × 8 B | GDTR boot/kernel, IDTR boot/kernel images | image |
//! | `0x0010_2200` | 104 B | TSS (SS0 = `0x68`, ESP0 = ring-0 stack top) | image |
//! | `0x0010_3000` | 2 KiB | boot IDT (physical handler addresses) | image |
//! | `0x0010_3800` | 2 KiB | kernel IDT (linear handler addresses; vector 0x80 DPL 3) | image |
//! | `0x0010_4000` | 2 KiB | guest variables ([`layout::var`]): probe state, trap/resume state, tick counter, boot CRs, the vector's 32 extra words at +0x100, GetRelocationInfo's EAX per call at +0x200, invocation counters at +0x400, invocation log at +0x600, relocation types at +0x700 | image (zero) |
//! | `0x0010_4800` | 2 KiB | per-CPU area (FS base) | image (zero) |
//! | `0x0010_5000` | 4 KiB | record buffer | image (zero) |
//! | `0x0010_6000` | 40 KiB | host data: stream header, license strings, pristine GDT (+0x100) and TSS (+0x200) copies ([`program::host_data`]) | image |
//! | `0x0011_0000` | ≤ 384 KiB | code: entry first, steps, subroutines, 256 interrupt stubs | image |
//! | `0x0017_0000` | 64 KiB | ring-0 stack for privilege changes (TSS.ESP0) | bss |
//! | `0x0018_0000` | 64 KiB | kernel stack (top `0x0019_0000`) | bss |
//! | `0x0019_0000` | 64 KiB | test area ([`layout::test`]): the test window's page table, a copy of the page directory, frames A/B/C, the ring-3 stub and stack, scratch descriptor tables and buffers, a second TSS, a copy of the IDT, the capture stack, the `SAMPLES` record the alarm handler fills | bss |
//! | `0x001A_0000` | 64 KiB | the second CPU's stack (top `0x001B_0000`), outside the image | — |
//!
//! The **test window** (4 MiB of linear space outside both maps, [`MemoryMap::window`]) holds
//! the ring-3 stub and stack (user pages), the TLB test pages (frame A, one of them global),
//! the local APIC (`0xFEE00000`, uncached), the entry SetPxE writes, and one the guest writes
//! itself. Without paging those are reached at their physical addresses.
//!
//! The ROM sees linear addresses (`PAGE_OFFSET + phys`): the code it returns to, the stack,
//! the GDTR/IDTR/TSS/FS bases, the tables and buffers the vectors pass. The guest's own data
//! accesses use physical addresses, valid in both phases because the identity map stays (as
//! it does in Linux when VMI activates). Without paging every linear address is physical.

pub mod gdt;
pub mod idt;
pub mod layout;
pub mod paging;
pub mod program;
pub mod stress;
pub mod vector;

pub use layout::{Invocations, MemoryMap};
pub use program::{GuestConfig, GuestImage, LAYOUT_VERSION, Step, build};
pub use stress::{CallSite, SiteRole, Stress};
pub use vector::{Invoke, Op, Val, Vector};
