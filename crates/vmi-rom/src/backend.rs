//! The [`Backend`] trait: what a hypervisor port provides.
//!
//! A backend decides, per VMI call, what code the ROM runs and how Linux reaches it. The
//! generator ([`crate::generate`]) owns everything else: the header, the entry slots, the
//! GetRelocationInfo table and code, the image layout and the checksum. A new hypervisor port is
//! one new type implementing this trait.

use crate::emit::Emit;
use crate::error::{GenError, asm};
use iced_x86::code_asm::{CodeAssembler, ax, eax};
use vmi_abi::{Call, RelocType};

/// How a backend implements one call: the relocation type GetRelocationInfo answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// Code was emitted; Linux reaches it with `call` (CALL_REL).
    Call,
    /// Code was emitted; Linux reaches it with `jmp` (JUMP_REL; only IRET and SYSEXIT).
    Jump,
    /// Nothing is needed: Linux deletes the operation (NOP). No code.
    Nop,
    /// Not implemented: Linux keeps its native operation (NONE). No code.
    None,
}

impl Answer {
    /// The relocation type Linux sees.
    pub fn reloc(self) -> RelocType {
        match self {
            Answer::Call => RelocType::CallRel,
            Answer::Jump => RelocType::JumpRel,
            Answer::Nop => RelocType::Nop,
            Answer::None => RelocType::None,
        }
    }

    /// Whether the answer comes with code.
    pub fn has_code(self) -> bool {
        matches!(self, Answer::Call | Answer::Jump)
    }
}

/// A hypervisor port: the code of every VMI call.
pub trait Backend {
    /// Short name (`native`, `trace(native)`), recorded in the image.
    fn name(&self) -> String;

    /// Emits the implementation of `call` into `e` (nothing for NOP/NONE) and returns the
    /// answer. Called more than once per call (position-independent code is assembled until it
    /// settles), so it must be deterministic.
    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError>;

    /// One line saying why the backend answers what it does for `call`.
    fn note(&self, call: Call) -> &'static str;

    /// The 32-bit Init routine (ROM+0x80; must return 0 in EAX on success). Default: succeed.
    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        e.a.xor(eax, eax).map_err(asm("init32"))?;
        e.a.ret().map_err(asm("init32"))
    }

    /// The 16-bit real-mode init (offset 3, far-called by the BIOS at POST with the image still
    /// writable; must preserve every register but AX and return with `retf`). Default: AX = 0.
    fn init16(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        a.xor(ax, ax).map_err(asm("init16"))?;
        a.retf().map_err(asm("init16"))
    }

    /// Bytes of private data the backend wants reserved in the image (read-only after POST
    /// under SeaBIOS; the 16-bit init may still write it). Its offset is
    /// [`Emit::data_offset`]. A backend with private RAM ([`Backend::ram`]) asks for none:
    /// the RAM link is the image's one data area.
    fn data_size(&self) -> usize {
        0
    }

    /// The private-RAM regions the backend needs ([`crate::ram`]); none by default. An error
    /// when the backend's configuration cannot be laid out.
    fn ram(&self) -> Result<Vec<crate::ram::Region>, GenError> {
        Ok(Vec::new())
    }

    /// 16-bit code that initialises the backend's regions at POST (the block is zeroed and
    /// its header written): ES = the block's segment (region offsets from
    /// [`crate::ram::Layout::region`]), ECX = the build id, EDX = the ROM's physical address;
    /// it may change the general registers but must keep ES.
    fn ram_init16(
        &self,
        _a: &mut CodeAssembler,
        _layout: &crate::ram::Layout,
    ) -> Result<(), GenError> {
        Ok(())
    }

    /// Whether `call`'s code needs the private RAM: GetRelocationInfo then answers NONE for it
    /// when the ROM has none (no BIOS ran its 16-bit init).
    fn needs_ram(&self, _call: Call) -> bool {
        false
    }

    /// Whether `call` has nothing to do under the hypervisor this backend is for: its
    /// GetRelocationInfo answer becomes NOP once Init found that hypervisor (marked in the
    /// private RAM's ready word), and stays the emitted code elsewhere.
    fn nop_on_hypervisor(&self, _call: Call) -> bool {
        false
    }

    /// Routines shared by several calls (and Init), placed once in the image before the calls;
    /// code reaches one with a relative `call` to [`Emit::helper`].
    fn helper_names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Emits helper `name` (one of [`Backend::helper_names`]).
    fn emit_helper(&self, name: &str, _e: &mut Emit) -> Result<(), GenError> {
        Err(GenError::Inconsistent {
            backend: self.name(),
            call: 0,
            name: "-",
            problem: if name.is_empty() {
                "an unnamed helper"
            } else {
                "asked for a helper it does not have"
            },
        })
    }
}

/// Emits one call's code (for [`Override`]).
pub type EmitFn = fn(&mut Emit) -> Result<Answer, GenError>;

/// `base`, except that `call` gets its code from `emit`: for experiments — a variant of one
/// call measured against the rest of a known-good backend — and for building deliberately
/// broken ROMs that prove an audit or a test suite can fail.
#[derive(Debug, Clone, Copy)]
pub struct Override<B> {
    /// The backend every other call comes from.
    pub base: B,
    /// The call replaced.
    pub call: Call,
    /// Its code.
    pub emit: EmitFn,
}

impl<B: Backend> Backend for Override<B> {
    fn name(&self) -> String {
        format!("{}+override({})", self.base.name(), self.call.spec().name)
    }

    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        if call == self.call {
            (self.emit)(e)
        } else {
            self.base.emit(call, e)
        }
    }

    fn note(&self, call: Call) -> &'static str {
        if call == self.call {
            "replaced by an override"
        } else {
            self.base.note(call)
        }
    }

    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        self.base.init32(e)
    }

    fn init16(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        self.base.init16(a)
    }

    fn data_size(&self) -> usize {
        self.base.data_size()
    }

    fn ram(&self) -> Result<Vec<crate::ram::Region>, GenError> {
        self.base.ram()
    }

    fn ram_init16(
        &self,
        a: &mut CodeAssembler,
        layout: &crate::ram::Layout,
    ) -> Result<(), GenError> {
        self.base.ram_init16(a, layout)
    }

    fn needs_ram(&self, call: Call) -> bool {
        call != self.call && self.base.needs_ram(call)
    }

    fn nop_on_hypervisor(&self, call: Call) -> bool {
        call != self.call && self.base.nop_on_hypervisor(call)
    }

    fn helper_names(&self) -> Vec<&'static str> {
        self.base.helper_names()
    }

    fn emit_helper(&self, name: &str, e: &mut Emit) -> Result<(), GenError> {
        self.base.emit_helper(name, e)
    }
}
