//! The parsed model of a ROM: a chain of [`Image`]s, every field as stored.

use crate::efi::EfiHeader;
use crate::pcir::Pcir;
use crate::pnp::PnpHeader;
use crate::vmi::VmiHeader;
use serde::Serialize;

/// A structure a header points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "value")]
pub enum Slot<T> {
    /// The pointer is 0.
    Absent,
    /// The pointer leads (partly) outside the image.
    OutOfBounds {
        /// Offset of the structure from the image start.
        offset: usize,
        /// Bytes the structure needs.
        need: usize,
        /// Bytes of the image from that offset on.
        have: usize,
    },
    /// The structure, read.
    Present(T),
}

impl<T> Slot<T> {
    /// The structure, if present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Slot::Present(t) => Some(t),
            _ => None,
        }
    }
}

/// One image of a ROM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Position in the chain (0 = first).
    pub index: usize,
    /// Offset of the image in the file.
    pub offset: usize,
    /// u16 at offset 0 (0xAA55 when valid).
    pub signature: u16,
    /// Size byte at offset 2 (512-byte units; for EFI images the low byte of a u16).
    pub size_byte: u8,
    /// Length the header declares: size byte × 512 (EFI: initialization size × 512).
    pub declared_len: usize,
    /// Bytes the file holds from `offset` to its end.
    pub available: usize,
    /// Sum of the declared length mod 256 (0 = correct), if all of it is present.
    pub sum: Option<u8>,
    /// Bytes 3..7: the init entry code.
    pub init_entry: Vec<u8>,
    /// Where the init entry's `jmp` leads (image offset), if it starts with a near jump.
    pub init_target: Option<usize>,
    /// PCIR pointer at 0x18.
    pub pcir_ptr: u16,
    /// The PCI data structure.
    pub pcir: Slot<Pcir>,
    /// `$PnP` pointer at 0x1A.
    pub pnp_ptr: u16,
    /// The `$PnP` header chain (first header and those linked from it).
    pub pnp: Slot<Vec<PnpHeader>>,
    /// The VMI header, if the image carries `cVmi`.
    pub vmi: Option<VmiHeader>,
    /// The EFI fields, if the PCIR code type is EFI.
    pub efi: Option<EfiHeader>,
    /// Length used to find the next image (PCIR image length, else the declared length).
    pub chain_len: usize,
}

impl Image {
    /// Length of the bytes parsed as this image: the declared length, cut to what the file holds
    /// (all available bytes when the declared length is 0).
    pub fn view_len(&self) -> usize {
        if self.declared_len == 0 {
            self.available
        } else {
            self.declared_len.min(self.available)
        }
    }

    /// This image's bytes within the whole file.
    pub fn bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        file.get(self.offset..self.offset + self.view_len())
            .unwrap_or_default()
    }

    /// Whether the header signature is `55 AA`.
    pub fn signature_ok(&self) -> bool {
        self.signature == vmi_abi::consts::ROM_SIGNATURE
    }

    /// Short description of the image type.
    pub fn kind(&self) -> &'static str {
        match (&self.efi, &self.vmi, self.pcir.present()) {
            (Some(_), _, _) => "EFI",
            (_, Some(_), _) => "x86 legacy (VMI)",
            (_, _, Some(p)) => match p.code_type {
                crate::pcir::CodeType::X86 => "x86 legacy",
                crate::pcir::CodeType::OpenFirmware => "Open Firmware",
                crate::pcir::CodeType::PaRisc => "PA-RISC",
                crate::pcir::CodeType::Efi => "EFI",
                crate::pcir::CodeType::Other(_) => "unknown code type",
            },
            _ => "x86 legacy (no PCIR)",
        }
    }
}

/// Why the walk along the image chain stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainEnd {
    /// The file is empty or shorter than an option-ROM header.
    TooShort,
    /// The first image lacks the `55 AA` signature.
    NoSignature,
    /// The last image has the PCIR last-image bit set.
    LastImageBit,
    /// The image has no (readable) PCI data structure, so there is no chain.
    NoPcir,
    /// The image's length is 0 (size byte and PCIR image length), so the chain cannot advance.
    ZeroLength,
    /// The next image would start at or past the end of the file.
    EndOfFile,
    /// The bytes where the next image would start do not begin with `55 AA`.
    NextNotAnImage,
    /// The walk stopped after the most images a file of this size can hold.
    TooManyImages,
}

/// A parsed ROM file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rom {
    /// File length.
    pub len: usize,
    /// The images, in chain order. Empty only when the file does not start with an image.
    pub images: Vec<Image>,
    /// Why the chain ended.
    pub chain_end: ChainEnd,
    /// Offset where the chain said the next image would be (for `NextNotAnImage`/`EndOfFile`).
    pub next_offset: Option<usize>,
    /// Bytes after the last image's declared length: (offset, length).
    pub trailing: Option<(usize, usize)>,
}
