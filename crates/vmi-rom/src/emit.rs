//! Assembling one routine at a fixed image offset, position-independently.
//!
//! A routine is assembled with its image offset as instruction pointer, so internal branches
//! are PC-relative and exact. The one thing position-independent code needs at run time is the
//! image's own linear address; [`Emit::image_base`] computes it (`call L; L: pop r; sub r, L`)
//! and image data is then addressed as `[r + offset]`. The constant `L` is the routine's own
//! label, so the routine is assembled until every such label stops moving (two passes).

use crate::error::{GenError, asm};
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::{AsmRegister32, CodeAssembler, CodeLabel};

/// Most assembly passes before giving up.
const MAX_PASSES: usize = 4;

/// What every routine of one image may refer to besides its own code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    /// Image offset of the backend's private data in the image (the private-RAM link, or
    /// the data [`Backend::data_size`](crate::Backend::data_size) asked for).
    pub data: Option<u32>,
    /// The private-RAM block's layout (empty: the ROM has none).
    pub ram: crate::ram::Layout,
    /// The backend's helper routines and their image offsets
    /// ([`Backend::helper_names`](crate::Backend::helper_names)).
    pub helpers: Vec<(&'static str, u64)>,
}

/// The context a backend emits one 32-bit routine into.
pub struct Emit {
    /// The assembler; emit instructions with it directly.
    pub a: CodeAssembler,
    start: u64,
    bases: Vec<CodeLabel>,
    resolved: Vec<u64>,
    shared: Shared,
}

impl std::fmt::Debug for Emit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit")
            .field("start", &self.start)
            .field("instructions", &self.a.instructions().len())
            .field("image_bases", &self.bases.len())
            .finish()
    }
}

impl Emit {
    fn new(start: u64, resolved: Vec<u64>, shared: &Shared) -> Result<Emit, GenError> {
        Ok(Emit {
            a: CodeAssembler::new(32).map_err(asm("a 32-bit routine"))?,
            start,
            bases: Vec::new(),
            resolved,
            shared: shared.clone(),
        })
    }

    /// Image offset where this routine starts.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Image offset of the backend's private data area (see
    /// [`Backend::data_size`](crate::Backend::data_size)), if it asked for one.
    pub fn data_offset(&self) -> Option<u32> {
        self.shared.data
    }

    /// What the image's routines share (for assembling a nested routine the same way).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Image offset of helper `name`, for a direct `call` (`e.a.call(offset)`: a relative call,
    /// position-independent like a branch inside the routine).
    pub fn helper(&self, name: &str) -> Result<u64, GenError> {
        self.shared
            .helpers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, at)| *at)
            .ok_or_else(|| GenError::Inconsistent {
                backend: "generator".into(),
                call: 0,
                name: "-",
                problem: "a routine calls a helper its backend does not list",
            })
    }

    /// The private-RAM region tagged `tag`, or an error naming it when the layout lacks it.
    pub fn ram_region(&self, tag: &[u8; 4]) -> Result<crate::ram::Placed, GenError> {
        self.shared.ram.region(tag).ok_or_else(|| GenError::Ram {
            tag: String::from_utf8_lossy(tag).into_owned(),
            problem: "a routine uses a region the backend did not declare",
        })
    }

    /// Loads the image's run-time linear address into `reg` (`call L; L: pop reg; sub reg, L`).
    /// Uses 4 bytes of stack transiently and changes the arithmetic flags.
    pub fn image_base(&mut self, reg: AsmRegister32) -> Result<(), GenError> {
        let k = self.image_base_biased(reg)?;
        self.a.sub(reg, k as i32).map_err(asm("image_base"))?;
        Ok(())
    }

    /// Loads the image's run-time linear address **plus the returned bias** into `reg`
    /// (`call L; L: pop reg`), one instruction shorter than [`Emit::image_base`]: address image
    /// offset `o` as `[reg + o - bias]`. Until the routine settles the bias is the routine
    /// start (≥ 0x90, like the real value, so displacements keep their encoding size).
    pub fn image_base_biased(&mut self, reg: AsmRegister32) -> Result<u32, GenError> {
        let mut label = self.a.create_label();
        self.a.call(label).map_err(asm("image_base"))?;
        self.a.set_label(&mut label).map_err(asm("image_base"))?;
        self.a.pop(reg).map_err(asm("image_base"))?;
        let k = self
            .resolved
            .get(self.bases.len())
            .copied()
            .unwrap_or(self.start);
        self.bases.push(label);
        Ok(k as u32)
    }
}

/// Assembles the routine `body` writes, at image offset `start`. Returns its bytes (empty if it
/// emitted nothing) and what `body` returned.
pub fn assemble<T>(
    what: &str,
    start: u64,
    shared: &Shared,
    body: impl Fn(&mut Emit) -> Result<T, GenError>,
) -> Result<(Vec<u8>, T), GenError> {
    let mut resolved: Vec<u64> = Vec::new();
    for _ in 0..MAX_PASSES {
        let mut e = Emit::new(start, resolved.clone(), shared)?;
        let out = body(&mut e).map_err(|err| match err {
            GenError::Asm { what: w, source } if w == "an instruction" => GenError::Asm {
                what: format!("an instruction of {what}"),
                source,
            },
            other => other,
        })?;
        if e.a.instructions().is_empty() {
            return Ok((Vec::new(), out));
        }
        let res =
            e.a.assemble_options(start, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
                .map_err(asm(what))?;
        let ips = e
            .bases
            .iter()
            .map(|l| res.label_ip(l))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(asm(what))?;
        if ips == resolved || e.bases.is_empty() {
            return Ok((res.inner.code_buffer, out));
        }
        resolved = ips;
    }
    Err(GenError::NoConvergence {
        what: what.into(),
        passes: MAX_PASSES,
    })
}

/// Assembles 16-bit real-mode code at image offset `start` (CS = the image's segment, so image
/// offsets are CS-relative addresses).
pub fn assemble16(
    start: u64,
    body: impl Fn(&mut CodeAssembler) -> Result<(), GenError>,
) -> Result<Vec<u8>, GenError> {
    let mut a = CodeAssembler::new(16).map_err(asm("16-bit init"))?;
    body(&mut a)?;
    a.assemble(start).map_err(asm("16-bit init"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    #[test]
    fn image_base_resolves_to_the_label_offset() {
        let (code, ()) = assemble("t", 0x200, &Shared::default(), |e| {
            e.a.nop().map_err(asm("t"))?;
            e.image_base(edx)?;
            e.a.ret().map_err(asm("t"))?;
            Ok(())
        })
        .unwrap();
        // nop; call +0; pop edx; sub edx, 0x206; ret
        assert_eq!(
            code,
            [
                0x90, 0xE8, 0, 0, 0, 0, 0x5A, 0x81, 0xEA, 0x06, 0x02, 0, 0, 0xC3
            ]
        );
    }

    #[test]
    fn empty_routine_is_empty() {
        let (code, v) = assemble("t", 0x100, &Shared::default(), |_| Ok(7)).unwrap();
        assert!(code.is_empty());
        assert_eq!(v, 7);
    }
}
