//! Guest RAM the harness can read and write while QEMU runs: QEMU's RAM is a shared file
//! (`-object memory-backend-file,share=on,mem-path=FILE` with `-machine memory-backend=`), here
//! accessed with positioned reads and writes (the page cache is the one copy QEMU maps). Used
//! by the simulated SENTER, with the guest paused, to play CPU and SINIT.
//!
//! Guest-physical address = file offset: true for the RAM below QEMU's PCI hole on q35, the only
//! RAM the simulation touches (the run's RAM is at most 2 GiB; above that QEMU splits it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use slipway_hv_core::addr::PhysAddr;
use slipway_hv_core::memory::{MemoryError, PhysMemory};

use crate::procs::TempDir;

/// Most guest RAM the file mapping covers one to one (q35 puts RAM above 2 GiB elsewhere).
pub const MAX_DIRECT_RAM_MIB: u32 = 2048;

/// The QEMU memory-backend id of the shared RAM.
pub const BACKEND_ID: &str = "slipway-ram";

/// The RAM file of one run (in /dev/shm when it exists, so guest RAM never reaches a disk),
/// removed with its directory.
pub struct GuestRamFile {
    dir: TempDir,
    path: PathBuf,
    mib: u32,
}

impl GuestRamFile {
    /// A place for `mib` MiB of guest RAM (QEMU creates the file).
    pub fn new(mib: u32) -> std::io::Result<GuestRamFile> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            TempDir::new_in(shm, "ram")?
        } else {
            TempDir::new("ram")?
        };
        let path = dir.path().join("guest-ram");
        Ok(GuestRamFile { dir, path, mib })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// QEMU's arguments besides `-machine ...,memory-backend=` ([`BACKEND_ID`]).
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-object".into(),
            format!(
                "memory-backend-file,id={BACKEND_ID},size={}M,mem-path={},share=on",
                self.mib,
                self.path.display()
            ),
        ]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Guest-physical memory over the RAM file.
pub struct GuestRam {
    file: File,
    size: u64,
}

impl GuestRam {
    /// Opens the RAM file QEMU created.
    pub fn open(path: &Path) -> std::io::Result<GuestRam> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let size = file
            .metadata()?
            .len()
            .min(u64::from(MAX_DIRECT_RAM_MIB) << 20);
        Ok(GuestRam { file, size })
    }

    /// Bytes of RAM reachable here.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, addr: PhysAddr, len: u64) -> Result<(), MemoryError> {
        match addr.0.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemoryError::OutOfRange { addr, len }),
        }
    }
}

impl PhysMemory for GuestRam {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(addr, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, addr.0)
            .map_err(|_| MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        self.check(addr, data.len() as u64)?;
        self.file
            .write_all_at(data, addr.0)
            .map_err(|_| MemoryError::OutOfRange {
                addr,
                len: data.len() as u64,
            })
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, addr: PhysAddr, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ram_reads_and_writes_the_file_at_the_physical_address_and_stays_inside_it() {
        let place = GuestRamFile::new(1).unwrap();
        std::fs::write(place.path(), vec![0u8; 1 << 20]).unwrap();
        let mut ram = GuestRam::open(place.path()).unwrap();
        assert_eq!(ram.size(), 1 << 20);
        ram.write(PhysAddr(0x1234), b"slipway").unwrap();
        ram.write_u64(PhysAddr(0x2000), 0x1122_3344_5566_7788)
            .unwrap();
        let bytes = std::fs::read(place.path()).unwrap();
        assert_eq!(&bytes[0x1234..0x123b], b"slipway");
        assert_eq!(
            ram.read_u64(PhysAddr(0x2000)).unwrap(),
            0x1122_3344_5566_7788
        );
        assert!(ram.write(PhysAddr((1 << 20) - 2), b"abc").is_err());
        assert!(ram.read(PhysAddr(u64::MAX - 1), &mut [0u8; 4]).is_err());
        let args = place.qemu_args().join(" ");
        assert!(
            args.contains("memory-backend-file,id=slipway-ram,size=1M"),
            "{args}"
        );
        assert!(args.ends_with("share=on"), "{args}");
        let dir = place.dir().to_owned();
        drop(ram);
        drop(place);
        assert!(!dir.exists(), "the RAM file's directory is removed");
    }
}
