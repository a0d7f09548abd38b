//! A bundle's ISO, byte for byte the same from the same files and the same Debian packages.
//!
//! One ISO boots under SeaBIOS (El Torito, no emulation, GRUB's i386-pc core image) and under
//! UEFI (El Torito EFI image: a FAT image holding GRUB's x86_64-efi core as
//! `/efi/boot/bootx64.efi`), and is also a hybrid disk image (GRUB's hybrid MBR, a protective
//! MBR partition and a GPT partition for the EFI image) for a USB stick. This is what
//! `grub-mkrescue` makes, without what makes its output differ from run to run: it stamps the
//! ISO with the current time, which also becomes the filesystem UUID its core images search
//! for, and its FAT image gets a random serial number and current file times.
//!
//! Here every date is [`ISO_DATE_EPOCH`]: the ISO's volume dates (so the ISO 9660 UUID GRUB
//! searches for is fixed), every file's dates (`--set_all_file_dates`), the GPT GUIDs derived
//! from the volume date, and the FAT image's file times (`mcopy -m` from files dated so, mtools
//! reading `SOURCE_DATE_EPOCH`), whose serial number is fixed too. Both core images carry every
//! GRUB module the boot uses ([`GRUB_MODULES`]), so the ISO holds no module directory, and an
//! early configuration that finds the ISO by that UUID and reads `/boot/grub/grub.cfg`.
//!
//! The ISO's bytes still depend on the build machine's GRUB, xorriso and mtools packages
//! (Debian bookworm's, `xtask::setup`); nothing measured does (README "Reproducible bundles").

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Every date of the ISO and its EFI image: 2000-01-01 00:00:00 UTC.
pub const ISO_DATE_EPOCH: u64 = 946_684_800;
/// The ISO 9660 volume identifier.
pub const VOLUME_ID: &str = "SLIPWAY";
/// GRUB modules built into both core images: reading the ISO and finding it by UUID, the
/// normal mode that runs `grub.cfg`, and what `grub.cfg` uses (`xtask::grub`).
pub const GRUB_MODULES: &[&str] = &[
    "iso9660",
    "search",
    "normal",
    "serial",
    "terminal",
    "multiboot2",
    "echo",
    "iorw",
    "test",
];
/// Modules only the BIOS core image needs: the firmware's disk (and CD) access.
const GRUB_BIOS_MODULES: &[&str] = &["biosdisk"];
/// GRUB's BIOS and UEFI module directories (Debian's grub-pc-bin and grub-efi-amd64-bin).
const GRUB_BIOS_DIR: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// GRUB's MBR for a hybrid ISO (BIOS boot from a USB stick).
const GRUB_HYBRID_MBR: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";
/// Where the BIOS core image and the EFI FAT image lie in the ISO tree.
pub const BIOS_IMAGE_ISO_PATH: &str = "boot/grub/bios.img";
pub const EFI_IMAGE_ISO_PATH: &str = "efi.img";
/// The EFI FAT image: mformat's 2.88 MB floppy format, room for the EFI core image.
const EFI_IMAGE_FORMAT: &[&str] = &["-C", "-f", "2880", "-L", "16"];
/// The FAT image's volume serial number.
const EFI_IMAGE_SERIAL: &str = "0";

/// Why the ISO could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// A tool could not be started.
    #[error("cannot run {tool}: {source} (run `cargo xtask setup`, or see README.md)")]
    Tool {
        tool: &'static str,
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{command} failed ({status}):\n{stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_owned();
    move |source| IsoError::Io { what, path, source }
}

/// Civil date and time (UTC) of seconds since 1970: (year, month, day, hour, minute, second).
pub fn utc_date(epoch_seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = epoch_seconds / 86_400;
    let secs = epoch_seconds % 86_400;
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras that
    // start on March 1st (so the leap day ends a year).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// xorriso's `--modification-date=` value for [`ISO_DATE_EPOCH`]: `YYYYMMDDhhmmsscc`.
pub fn modification_date() -> String {
    let (y, mo, d, h, mi, s) = utc_date(ISO_DATE_EPOCH);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00")
}

/// The UUID GRUB gives the ISO's filesystem: its modification date as
/// `YYYY-MM-DD-hh-mm-ss-cc`.
pub fn filesystem_uuid() -> String {
    let (y, mo, d, h, mi, s) = utc_date(ISO_DATE_EPOCH);
    format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}-00")
}

/// The configuration built into both core images: find the ISO, then run its `grub.cfg`.
pub fn early_config() -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {}\nset prefix=($root)/boot/grub\n",
        filesystem_uuid()
    )
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), IsoError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IsoError::Tool { tool, source })?;
    if !output.status.success() {
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(IsoError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn set_date(path: &Path) -> Result<(), IsoError> {
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(ISO_DATE_EPOCH);
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(date))
        .map_err(io_err("cannot set the date of", path))
}

/// `grub-mkimage` for one platform, writing `out`.
fn core_image(
    format: &str,
    dir: &str,
    config: &Path,
    out: &Path,
    extra: &[&str],
) -> Result<(), IsoError> {
    run(
        "grub-mkimage (grub-common, grub-pc-bin, grub-efi-amd64-bin)",
        Command::new("grub-mkimage")
            .args(["-O", format, "-d", dir, "-p", "/boot/grub", "-c"])
            .arg(config)
            .arg("-o")
            .arg(out)
            .args(extra)
            .args(GRUB_MODULES),
    )
}

/// Makes `iso` from the ISO tree `root` (which gets the two GRUB boot images), using `work`
/// (emptied) for intermediate files. Written to a temporary name and renamed, so a reader
/// never sees half an ISO.
pub fn make_iso(root: &Path, work: &Path, iso: &Path) -> Result<(), IsoError> {
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io_err("cannot clear", work))?;
    }
    std::fs::create_dir_all(work).map_err(io_err("cannot create", work))?;
    let config = work.join("early.cfg");
    std::fs::write(&config, early_config()).map_err(io_err("cannot write", &config))?;

    let bios_image = root.join(BIOS_IMAGE_ISO_PATH);
    core_image(
        "i386-pc-eltorito",
        GRUB_BIOS_DIR,
        &config,
        &bios_image,
        GRUB_BIOS_MODULES,
    )?;

    // The EFI system partition's tree: /efi/boot/bootx64.efi, every entry dated.
    let efi_tree = work.join("efi");
    let efi_boot = efi_tree.join("boot");
    std::fs::create_dir_all(&efi_boot).map_err(io_err("cannot create", &efi_boot))?;
    let efi_app = efi_boot.join("bootx64.efi");
    core_image("x86_64-efi", GRUB_EFI_DIR, &config, &efi_app, &[])?;
    for path in [&efi_app, &efi_boot, &efi_tree] {
        set_date(path)?;
    }
    let efi_image = root.join(EFI_IMAGE_ISO_PATH);
    if efi_image.exists() {
        std::fs::remove_file(&efi_image).map_err(io_err("cannot replace", &efi_image))?;
    }
    let epoch = ISO_DATE_EPOCH.to_string();
    run(
        "mformat (mtools)",
        Command::new("mformat")
            .args(EFI_IMAGE_FORMAT)
            .args(["-N", EFI_IMAGE_SERIAL, "-i"])
            .arg(&efi_image)
            .arg("::")
            .env("SOURCE_DATE_EPOCH", &epoch),
    )?;
    run(
        "mcopy (mtools)",
        Command::new("mcopy")
            .args(["-m", "-s", "-i"])
            .arg(&efi_image)
            .arg(&efi_tree)
            .arg("::/")
            .env("SOURCE_DATE_EPOCH", &epoch),
    )?;

    let tmp = iso.with_extension("iso.tmp");
    let result = run(
        "xorriso",
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&tmp)
            .arg(format!("--modification-date={}", modification_date()))
            .args(["--set_all_file_dates", &format!("={ISO_DATE_EPOCH}")])
            .args(["-volid", VOLUME_ID, "-r"])
            // BIOS: El Torito without emulation, plus GRUB's hybrid MBR.
            .args([
                "-b",
                BIOS_IMAGE_ISO_PATH,
                "-no-emul-boot",
                "-boot-load-size",
                "4",
            ])
            .args([
                "-boot-info-table",
                "--grub2-boot-info",
                "--grub2-mbr",
                GRUB_HYBRID_MBR,
            ])
            // UEFI: the FAT image as El Torito EFI image and as GPT partition.
            .args([
                "--efi-boot",
                EFI_IMAGE_ISO_PATH,
                "-efi-boot-part",
                "--efi-boot-image",
            ])
            .arg("--protective-msdos-label")
            .arg(root)
            .env("SOURCE_DATE_EPOCH", &epoch),
    );
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, iso).map_err(io_err("cannot rename to", iso))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc_date(ISO_DATE_EPOCH), (2000, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 (a leap day of a year divisible by 400).
        assert_eq!(utc_date(951_827_696), (2000, 2, 29, 12, 34, 56));
        // 2024-12-31 23:59:59.
        assert_eq!(utc_date(1_735_689_599), (2024, 12, 31, 23, 59, 59));
    }

    #[test]
    fn the_same_tree_gives_the_same_iso_whatever_its_file_times_and_folder() {
        let base = std::env::temp_dir().join(format!("xtask-iso-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let make = |folder: &str, file_time: u64| {
            let dir = base.join(folder);
            let root = dir.join("root");
            std::fs::create_dir_all(root.join("boot/grub")).unwrap();
            std::fs::write(root.join("boot/grub/grub.cfg"), "boot\n").unwrap();
            std::fs::write(root.join("boot/payload.bin"), [7u8; 5000]).unwrap();
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(file_time);
            std::fs::File::open(root.join("boot/payload.bin"))
                .and_then(|f| f.set_modified(time))
                .unwrap();
            let iso = dir.join("x.iso");
            make_iso(&root, &dir.join("work"), &iso).unwrap_or_else(|e| panic!("{e}"));
            std::fs::read(iso).unwrap()
        };
        let first = make("a", 1_000_000_000);
        let second = make("a-longer-folder-name", 1_700_000_000);
        assert!(first == second, "two ISOs of the same tree differ");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn grub_searches_for_the_uuid_xorriso_gives_the_iso() {
        assert_eq!(modification_date(), "2000010100000000");
        assert_eq!(filesystem_uuid(), "2000-01-01-00-00-00-00");
        assert_eq!(
            early_config(),
            "search --no-floppy --fs-uuid --set=root 2000-01-01-00-00-00-00\n\
             set prefix=($root)/boot/grub\n"
        );
    }
}
