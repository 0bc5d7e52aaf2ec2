//! The files commands read and write, opened in one place so that every error names what is
//! really wrong with the path: no such file, permission denied, a directory, a device or a pipe
//! where a regular file is needed, empty, too large — never an `is_file()` guess.
//!
//! Messages read `LABEL PATH: PROBLEM`, where LABEL is `reading` for a positional input, the
//! option for an optional one (`--kernel bzImage: no such file`), and `writing` for an output.

use super::CliError;
use std::fs::{File, FileType, Metadata};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// 16 MiB: the largest PCI expansion ROM (its BAR decodes at most 16 MiB); anything longer is
/// not an option ROM.
pub const MAX_ROM_LEN: u64 = 16 << 20;

/// What a command expects at a path it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// How messages introduce the path: `reading`, or the option that named it (`--kernel`).
    pub label: &'static str,
    /// What the file should hold, for messages: `an option-ROM image`.
    pub holds: &'static str,
    /// The largest size accepted (None: any).
    pub max_len: Option<u64>,
    /// An empty file is an input error here (false: the command judges it itself).
    pub non_empty: bool,
    /// A named pipe (`<(…)`, `/dev/stdin` on a pipe) is accepted: vmirom reads it once itself.
    /// Files handed to QEMU, or read more than once, must be regular files.
    pub pipe_ok: bool,
}

impl Expect {
    /// A ROM that vmirom reads once and judges itself (`check`, `info`): empty is its verdict.
    pub const ROM: Expect = Expect {
        label: "reading",
        holds: "an option-ROM image",
        max_len: Some(MAX_ROM_LEN),
        non_empty: false,
        pipe_ok: true,
    };
    /// A ROM that QEMU loads (`test`, `trace run`): a regular, non-empty file.
    pub const QEMU_ROM: Expect = Expect {
        non_empty: true,
        pipe_ok: false,
        ..Expect::ROM
    };
    /// An ELF object for `pack` (the packer names an empty or non-ELF file itself).
    pub const OBJECT: Expect = Expect {
        label: "reading",
        holds: "an ELF32 i386 relocatable object",
        max_len: Some(256 << 20),
        non_empty: false,
        pipe_ok: true,
    };
    /// A guest-RAM image (`trace report --mem`); only its start is read.
    pub const RAM_IMAGE: Expect = Expect {
        label: "--mem",
        holds: "a guest-RAM image",
        max_len: None,
        non_empty: false,
        pipe_ok: true,
    };
    /// A file QEMU reads for an option (`--kernel`, `--initrd`).
    pub const fn for_qemu(label: &'static str, holds: &'static str) -> Expect {
        Expect {
            label,
            holds,
            max_len: None,
            non_empty: true,
            pipe_ok: false,
        }
    }

    fn error(&self, path: &Path, problem: impl std::fmt::Display) -> CliError {
        CliError(format!("{} {}: {problem}", self.label, path.display()))
    }
}

/// Checks that `path` can serve as `e` without reading it (a file another program opens).
pub fn check(path: &Path, e: &Expect) -> Result<(), CliError> {
    let meta = inspect(path, e)?;
    // Opening tells whether it can be read at all (permissions, ACLs, a FIFO is not opened).
    if meta.file_type().is_file() {
        File::open(path).map_err(|err| e.error(path, io_problem(path, &err)))?;
    }
    Ok(())
}

/// Reads the whole file at `path` as `e` expects it.
pub fn read(path: &Path, e: &Expect) -> Result<Vec<u8>, CliError> {
    let buf = read_limited(path, e, e.max_len.map(|m| m.saturating_add(1)))?;
    let len = buf.len() as u64;
    if let Some(max) = e.max_len.filter(|&m| len > m) {
        // Only a pipe gets here: a regular file's length was judged before it was read.
        let size = format!("more than {max} bytes from the pipe");
        return Err(e.error(path, too_large(&size, max, e)));
    }
    if e.non_empty && buf.is_empty() {
        return Err(e.error(path, empty(e)));
    }
    Ok(buf)
}

/// Reads at most the first `n` bytes of the file at `path`.
pub fn read_prefix(path: &Path, e: &Expect, n: u64) -> Result<Vec<u8>, CliError> {
    read_limited(path, e, Some(n))
}

fn read_limited(path: &Path, e: &Expect, limit: Option<u64>) -> Result<Vec<u8>, CliError> {
    inspect(path, e)?;
    let f = File::open(path).map_err(|err| e.error(path, io_problem(path, &err)))?;
    let mut buf = Vec::new();
    f.take(limit.unwrap_or(u64::MAX))
        .read_to_end(&mut buf)
        .map_err(|err| e.error(path, io_problem(path, &err)))?;
    Ok(buf)
}

/// Writes `data` to the file at `path` (created or replaced; devices and pipes are written to
/// as they are, so `-o /dev/stdout` works).
pub fn write(path: &Path, data: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, data).map_err(|err| {
        CliError(format!(
            "writing {}: {}",
            path.display(),
            output_problem(path, &err)
        ))
    })
}

/// What the path is, checked against `e` before it is opened.
fn inspect(path: &Path, e: &Expect) -> Result<Metadata, CliError> {
    let meta = std::fs::metadata(path).map_err(|err| e.error(path, io_problem(path, &err)))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(e.error(path, format!("is a directory; expected {}", e.holds)));
    }
    if ft.is_fifo() && e.pipe_ok {
        return Ok(meta);
    }
    if !ft.is_file() {
        return Err(e.error(
            path,
            format!(
                "not a regular file but {}; expected a file holding {}",
                kind(ft),
                e.holds
            ),
        ));
    }
    if let Some(max) = e.max_len.filter(|&m| meta.len() > m) {
        let size = format!("{} bytes", meta.len());
        return Err(e.error(path, too_large(&size, max, e)));
    }
    if e.non_empty && meta.len() == 0 {
        return Err(e.error(path, empty(e)));
    }
    Ok(meta)
}

/// What kind of file system object a non-regular, non-directory path is.
fn kind(ft: FileType) -> &'static str {
    if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a named pipe (QEMU reads the file itself, possibly more than once)"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

fn empty(e: &Expect) -> String {
    format!("the file is empty (0 bytes); expected {}", e.holds)
}

fn too_large(size: &str, max: u64, e: &Expect) -> String {
    format!(
        "{size}: too large for {}, which is at most {max} bytes ({} MiB)",
        e.holds,
        max >> 20
    )
}

/// The problem an I/O error on an input path stands for, in words.
pub fn io_problem(path: &Path, err: &io::Error) -> String {
    match err.kind() {
        ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(target) => format!(
                "no such file: a symbolic link to {}, which does not exist",
                target.display()
            ),
            Err(_) => "no such file".into(),
        },
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "is a directory".into(),
        ErrorKind::NotADirectory => match first_non_directory(path) {
            Some(p) => format!("no such file: {} is not a directory", p.display()),
            None => "no such file: a part of the path is not a directory".into(),
        },
        _ => err.to_string(),
    }
}

/// The problem an I/O error on an output path stands for, in words.
fn output_problem(path: &Path, err: &io::Error) -> String {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match err.kind() {
        ErrorKind::NotFound => match parent {
            Some(dir) if !dir.exists() => format!("the directory {} does not exist", dir.display()),
            _ => err.to_string(),
        },
        ErrorKind::NotADirectory => match first_non_directory(path) {
            Some(p) => format!("{} is not a directory", p.display()),
            None => "a part of the path is not a directory".into(),
        },
        ErrorKind::IsADirectory => "is a directory; expected a file name".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => err.to_string(),
    }
}

/// The first proper ancestor of `path` (from the root down) that exists but is not a directory.
fn first_non_directory(path: &Path) -> Option<&Path> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .find(|p| p.exists() && !p.is_dir())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn err(r: Result<impl std::fmt::Debug, CliError>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn each_kind_of_unusable_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let show = |p: &Path| p.display().to_string();
        let missing = d.join("missing.rom");
        assert_eq!(
            err(read(&missing, &Expect::ROM)),
            format!("reading {}: no such file", show(&missing))
        );
        assert_eq!(
            err(read(d, &Expect::ROM)),
            format!(
                "reading {}: is a directory; expected an option-ROM image",
                show(d)
            )
        );
        assert_eq!(
            err(read(Path::new("/dev/null"), &Expect::ROM)),
            "reading /dev/null: not a regular file but a character device; expected a file \
             holding an option-ROM image"
        );
        let empty_file = d.join("empty.rom");
        std::fs::write(&empty_file, b"").unwrap();
        assert_eq!(read(&empty_file, &Expect::ROM).unwrap(), b"");
        assert_eq!(
            err(check(&empty_file, &Expect::QEMU_ROM)),
            format!(
                "reading {}: the file is empty (0 bytes); expected an option-ROM image",
                show(&empty_file)
            )
        );
        let big = d.join("big.rom");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_ROM_LEN + 1).unwrap();
        assert_eq!(
            err(read(&big, &Expect::ROM)),
            format!(
                "reading {}: 16777217 bytes: too large for an option-ROM image, which is at \
                 most 16777216 bytes (16 MiB)",
                show(&big)
            )
        );
        let dangling = d.join("link.rom");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();
        assert_eq!(
            err(read(&dangling, &Expect::ROM)),
            format!(
                "reading {}: no such file: a symbolic link to {}, which does not exist",
                show(&dangling),
                show(&missing)
            )
        );
        let under_file = empty_file.join("x.rom");
        assert_eq!(
            err(read(
                &under_file,
                &Expect {
                    label: "--rom",
                    ..Expect::ROM
                }
            )),
            format!(
                "--rom {}: no such file: {} is not a directory",
                show(&under_file),
                show(&empty_file)
            )
        );
    }

    #[test]
    fn a_pipe_is_read_where_allowed_and_refused_for_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, b"\x55\xAA\x01").unwrap())
        };
        assert_eq!(read(&fifo, &Expect::ROM).unwrap(), b"\x55\xAA\x01");
        writer.join().unwrap();
        assert!(
            err(check(&fifo, &Expect::QEMU_ROM))
                .ends_with(": not a regular file but a named pipe (QEMU reads the file itself, possibly more than once); expected a file holding an option-ROM image")
        );
    }

    #[test]
    fn io_errors_become_words() {
        let p = Path::new("x.rom");
        let e = io::Error::from(ErrorKind::PermissionDenied);
        assert_eq!(io_problem(p, &e), "permission denied");
        assert_eq!(output_problem(p, &e), "permission denied");
        let e = io::Error::from(ErrorKind::ReadOnlyFilesystem);
        assert_eq!(output_problem(p, &e), "the file system is read-only");
    }

    #[test]
    fn outputs_name_the_missing_or_wrong_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("no/such/dir/x.rom");
        assert_eq!(
            err(write(&out, b"x")),
            format!(
                "writing {}: the directory {} does not exist",
                out.display(),
                d.join("no/such/dir").display()
            )
        );
        assert_eq!(
            err(write(d, b"x")),
            format!(
                "writing {}: is a directory; expected a file name",
                d.display()
            )
        );
        let file = d.join("f");
        write(&file, b"x").unwrap();
        let out = file.join("x.rom");
        assert_eq!(
            err(write(&out, b"x")),
            format!(
                "writing {}: {} is not a directory",
                out.display(),
                file.display()
            )
        );
        write(Path::new("/dev/null"), b"x").unwrap();
    }
}
