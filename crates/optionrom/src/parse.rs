//! Reading a ROM file into the [`Rom`] model. Never fails, never panics, never loops.

use crate::build::{BLOCK, PCIR_PTR, PNP_PTR};
use crate::bytes::{Mode, checksum, jump_target, u8_at, u16_at};
use crate::efi::EfiHeader;
use crate::image::{ChainEnd, Image, Rom, Slot};
use crate::pcir::{CodeType, Pcir};
use crate::pnp::{self, read_chain};
use crate::vmi::VmiHeader;

/// Parses every image of `data`. Whatever the bytes, the result describes them: malformed
/// pointers become [`Slot::OutOfBounds`], the walk ends with a [`ChainEnd`] reason.
pub fn parse(data: &[u8]) -> Rom {
    let mut rom = Rom {
        len: data.len(),
        images: Vec::new(),
        chain_end: ChainEnd::TooShort,
        next_offset: None,
        trailing: None,
    };
    if data.len() < 3 {
        return rom;
    }
    if u16_at(data, 0) != Some(vmi_abi::consts::ROM_SIGNATURE) {
        rom.chain_end = ChainEnd::NoSignature;
        return rom;
    }
    let max_images = data.len() / BLOCK + 1;
    let mut offset = 0usize;
    loop {
        let Some(tail) = data.get(offset..) else {
            rom.chain_end = ChainEnd::EndOfFile;
            break;
        };
        let image = parse_image(tail, offset, rom.images.len());
        let step = image.chain_len;
        let last = image.pcir.present().map(Pcir::is_last);
        let end_of_declared = offset + image.view_len();
        rom.images.push(image);
        let end = match last {
            None => Some(ChainEnd::NoPcir),
            Some(true) => Some(ChainEnd::LastImageBit),
            Some(false) if step == 0 => Some(ChainEnd::ZeroLength),
            Some(false) => None,
        };
        if let Some(end) = end {
            rom.chain_end = end;
            if end_of_declared < data.len() {
                rom.trailing = Some((end_of_declared, data.len() - end_of_declared));
            }
            break;
        }
        let next = offset.saturating_add(step);
        rom.next_offset = Some(next);
        if next >= data.len() {
            rom.chain_end = ChainEnd::EndOfFile;
            break;
        }
        if u16_at(data, next) != Some(vmi_abi::consts::ROM_SIGNATURE) {
            rom.chain_end = ChainEnd::NextNotAnImage;
            rom.trailing = Some((next, data.len() - next));
            break;
        }
        if rom.images.len() >= max_images {
            rom.chain_end = ChainEnd::TooManyImages;
            break;
        }
        offset = next;
    }
    rom
}

/// Parses one image; `img` holds the file's bytes from the image start to the file end.
fn parse_image(img: &[u8], offset: usize, index: usize) -> Image {
    let size_byte = u8_at(img, 2).unwrap_or(0);
    let pcir_ptr = u16_at(img, PCIR_PTR).unwrap_or(0);
    let pnp_ptr = u16_at(img, PNP_PTR).unwrap_or(0);
    let mut image = Image {
        index,
        offset,
        signature: u16_at(img, 0).unwrap_or(0),
        size_byte,
        declared_len: usize::from(size_byte) * BLOCK,
        available: img.len(),
        sum: None,
        init_entry: img.get(3..7.min(img.len())).unwrap_or_default().to_vec(),
        init_target: jump_target(img, 3, Mode::Bits16),
        pcir_ptr,
        pcir: Slot::Absent,
        pnp_ptr,
        pnp: Slot::Absent,
        vmi: None,
        efi: None,
        chain_len: 0,
    };
    // A PCIR code type of EFI changes how the length at offset 2 is read.
    let probe = slot(img, usize::from(pcir_ptr), 0x18, Pcir::read);
    if let Some(p) = probe.present()
        && p.code_type == CodeType::Efi
    {
        image.efi = EfiHeader::read(img);
        if let Some(e) = &image.efi {
            image.declared_len = usize::from(e.initialization_size) * BLOCK;
        }
    }
    let view = img.get(..image.view_len()).unwrap_or(img);
    image.sum = (image.declared_len > 0 && image.declared_len <= img.len()).then(|| checksum(view));
    image.pcir = slot(view, usize::from(pcir_ptr), 0x18, Pcir::read);
    image.pnp = slot(view, usize::from(pnp_ptr), pnp::LEN, |b, at| {
        Some(read_chain(b, at))
    });
    image.vmi = VmiHeader::read(view);
    image.chain_len = match image.pcir.present() {
        Some(p) if p.image_length != 0 => usize::from(p.image_length) * BLOCK,
        _ => image.declared_len,
    };
    image
}

/// Reads the structure of `need` bytes a pointer `ptr` designates, or says why it cannot.
fn slot<T>(
    view: &[u8],
    ptr: usize,
    need: usize,
    read: impl Fn(&[u8], usize) -> Option<T>,
) -> Slot<T> {
    if ptr == 0 {
        return Slot::Absent;
    }
    match read(view, ptr) {
        Some(t) if ptr + need <= view.len() => Slot::Present(t),
        _ => Slot::OutOfBounds {
            offset: ptr,
            need,
            have: view.len().saturating_sub(ptr),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageBuilder;
    use crate::build::Finish;

    fn image(last: bool, extra: usize) -> Vec<u8> {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.set_pcir(None, Pcir::new(0x10EC, 0x8139, 0x02_00_00))
            .unwrap();
        b.append(&vec![0x90; extra], 1);
        b.finish(&Finish {
            last_image: last,
            min_len: 0,
        })
        .unwrap()
    }

    #[test]
    fn walks_a_chain_by_pcir_length_and_last_bit() {
        let mut f = image(false, 600);
        f.extend(image(false, 10));
        f.extend(image(true, 10));
        let rom = parse(&f);
        assert_eq!(rom.images.len(), 3);
        assert_eq!(rom.images[1].offset, 1024);
        assert_eq!(rom.images[2].offset, 1536);
        assert_eq!(rom.chain_end, ChainEnd::LastImageBit);
        assert_eq!(rom.trailing, None);
        assert!(rom.images.iter().all(|i| i.sum == Some(0)));
    }

    #[test]
    fn odd_inputs_end_the_walk_with_a_reason() {
        assert_eq!(parse(&[]).chain_end, ChainEnd::TooShort);
        assert_eq!(parse(&[0x55, 0xAB, 0]).chain_end, ChainEnd::NoSignature);
        // Not last, but nothing follows.
        assert_eq!(parse(&image(false, 0)).chain_end, ChainEnd::EndOfFile);
        // Not last, garbage follows.
        let mut f = image(false, 0);
        f.extend([0u8; 100]);
        let r = parse(&f);
        assert_eq!(r.chain_end, ChainEnd::NextNotAnImage);
        assert_eq!(r.trailing, Some((512, 100)));
        // Zero length: size byte and PCIR length 0, not last.
        let mut z = image(false, 0);
        z[2] = 0;
        z[0x20 + 0x10] = 0;
        assert_eq!(parse(&z).chain_end, ChainEnd::ZeroLength);
    }

    #[test]
    fn pointers_outside_the_image_are_reported() {
        let mut f = image(true, 0);
        f[0x18..0x1A].copy_from_slice(&0x1F0u16.to_le_bytes());
        let r = parse(&f);
        assert_eq!(
            r.images[0].pcir,
            Slot::OutOfBounds {
                offset: 0x1F0,
                need: 0x18,
                have: 0x10
            }
        );
        assert_eq!(r.chain_end, ChainEnd::NoPcir);
    }

    #[test]
    fn truncated_image_has_no_sum() {
        let f = image(true, 0);
        let r = parse(&f[..300]);
        assert_eq!(r.images[0].sum, None);
        assert_eq!(r.images[0].view_len(), 300);
    }
}
