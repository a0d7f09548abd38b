//! What a bundle ships of a freestanding binary, and what it keeps beside it.
//!
//! The boot module (and the hypervisor image) is the linked ELF without symbols and debug
//! information (`objcopy --strip-all`): only what GRUB, the hypervisor and domB load, which is
//! also all that is measured. The linked file itself, unchanged, is kept as the debug file in
//! the bundle's `debug/` directory, under its ISO file name (`debug/<file>.debug`) and under
//! the GNU build id both files carry (`debug/.build-id/<xx>/<rest>.debug`, where gdb looks when
//! `debug-file-directory` names `debug/`), so an address from a backtrace maps to a source line
//! (README, "Debugging").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use elf::ElfBytes;
use elf::abi::PT_NOTE;
use elf::endian::AnyEndian;
use elf::note::Note;

/// The directory of a built bundle that holds the debug files.
pub const DEBUG_DIR: &str = "debug";
/// The suffix of a debug file (gdb's convention for build-id lookups).
pub const DEBUG_SUFFIX: &str = ".debug";

/// Why a binary could not be shipped.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The linked file is not an ELF the `elf` crate reads.
    #[error("{path}: not a readable ELF file: {reason}")]
    NotElf { path: PathBuf, reason: String },
    /// The linked file has no GNU build id note in a PT_NOTE segment (its link arguments or its
    /// linker script lost it).
    #[error(
        "{path}: no GNU build id note in a PT_NOTE segment (linked without --build-id=sha1, or \
         the linker script drops .note.gnu.build-id)"
    )]
    NoBuildId { path: PathBuf },
    /// `objcopy` changed the build id (it must only drop non-loaded sections).
    #[error("{path}: stripping changed the build id from {before} to {after}")]
    BuildIdChanged {
        path: PathBuf,
        before: String,
        after: String,
    },
    /// `objcopy` could not run.
    #[error("cannot run objcopy (binutils): {0} (run `cargo xtask setup`)")]
    Objcopy(std::io::Error),
    /// `objcopy` failed.
    #[error("objcopy --strip-all {path} failed:\n{stderr}")]
    Strip { path: PathBuf, stderr: String },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShipError {
    let path = path.to_owned();
    move |source| ShipError::Io { what, path, source }
}

/// The GNU build id of an ELF image, from the notes of its PT_NOTE segments (what a loader or
/// a debugger reading a core image sees), or `None` when it has none.
pub fn build_id(image: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|e| e.to_string())?;
    let Some(segments) = file.segments() else {
        return Ok(None);
    };
    for phdr in segments.iter().filter(|p| p.p_type == PT_NOTE) {
        let notes = file
            .segment_data_as_notes(&phdr)
            .map_err(|e| e.to_string())?;
        for note in notes {
            if let Note::GnuBuildId(id) = note {
                return Ok(Some(id.0.to_vec()));
            }
        }
    }
    Ok(None)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// gdb's place for the debug file of build id `id` (hex) under a debug directory:
/// `.build-id/<first byte>/<the other bytes>.debug`.
pub fn build_id_path(id: &str) -> PathBuf {
    let (dir, rest) = id.split_at(2.min(id.len()));
    Path::new(".build-id")
        .join(dir)
        .join(format!("{rest}{DEBUG_SUFFIX}"))
}

/// A shipped binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// The GNU build id (hex) of the shipped file and of its debug file.
    pub build_id: String,
    /// The debug file (the linked ELF, unchanged).
    pub debug_file: PathBuf,
}

/// Ships the linked ELF `linked` as `dst` (stripped) and keeps it as `<debug_dir>/<name>.debug`
/// plus the build-id link, `name` being the file's name on the ISO.
pub fn ship_elf(
    linked: &Path,
    dst: &Path,
    debug_dir: &Path,
    name: &str,
) -> Result<Shipped, ShipError> {
    let image = std::fs::read(linked).map_err(io_err("cannot read", linked))?;
    let id = build_id(&image)
        .map_err(|reason| ShipError::NotElf {
            path: linked.to_owned(),
            reason,
        })?
        .ok_or_else(|| ShipError::NoBuildId {
            path: linked.to_owned(),
        })?;

    let output = Command::new("objcopy")
        .arg("--strip-all")
        .arg(linked)
        .arg(dst)
        .stdin(Stdio::null())
        .output()
        .map_err(ShipError::Objcopy)?;
    if !output.status.success() {
        return Err(ShipError::Strip {
            path: linked.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let shipped = std::fs::read(dst).map_err(io_err("cannot read", dst))?;
    let shipped_id = build_id(&shipped).map_err(|reason| ShipError::NotElf {
        path: dst.to_owned(),
        reason,
    })?;
    if shipped_id.as_deref() != Some(id.as_slice()) {
        return Err(ShipError::BuildIdChanged {
            path: dst.to_owned(),
            before: hex(&id),
            after: shipped_id.map_or_else(|| "none".to_owned(), |i| hex(&i)),
        });
    }

    let debug_file = debug_dir.join(format!("{name}{DEBUG_SUFFIX}"));
    std::fs::copy(linked, &debug_file).map_err(io_err("cannot copy", linked))?;
    let link = debug_dir.join(build_id_path(&hex(&id)));
    let link_dir = link.parent().expect("a build-id path has a directory");
    std::fs::create_dir_all(link_dir).map_err(io_err("cannot create", link_dir))?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(io_err("cannot replace", &link))?;
    }
    // `.build-id/xx/rest.debug` -> `../../<name>.debug`.
    let target = Path::new("../..").join(format!("{name}{DEBUG_SUFFIX}"));
    std::os::unix::fs::symlink(&target, &link).map_err(io_err("cannot link", &link))?;
    Ok(Shipped {
        build_id: hex(&id),
        debug_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 64 + 56];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        out[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        out[ph + 4..ph + 8].copy_from_slice(&4u32.to_le_bytes());
        let offset = out.len() as u64;
        out[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
        out[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        out[ph + 40..ph + 48].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        out[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        out.extend_from_slice(notes);
        out
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn the_build_id_is_found_among_other_notes() {
        let mut notes = note(b"Xen\0", 18, &0x0010_0000u32.to_le_bytes());
        notes.extend(note(b"GNU\0", 3, &[0xab, 0xcd, 0xef, 0x01]));
        let id = build_id(&elf_with_notes(&notes)).unwrap();
        assert_eq!(id.as_deref(), Some(&[0xab, 0xcd, 0xef, 0x01][..]));
    }

    #[test]
    fn an_image_without_a_build_id_says_so() {
        let notes = note(b"Xen\0", 18, &0x0010_0000u32.to_le_bytes());
        assert_eq!(build_id(&elf_with_notes(&notes)).unwrap(), None);
        assert!(build_id(b"not an elf").is_err());
    }

    #[test]
    fn debug_files_are_found_where_gdb_looks() {
        assert_eq!(
            build_id_path("123456"),
            Path::new(".build-id/12/3456.debug")
        );
    }
}
