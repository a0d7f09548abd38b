//! A boot module's identity: the one definition the hypervisor's two boot stages, domB and
//! `xtask` share.
//!
//! GRUB passes each `module2` with a command line. A module's **name** is the command line's
//! first word, where words are separated by the byte 0x20 (space) only: no other byte (tab,
//! U+00A0, ...) separates words, and a command line that starts with a space has an empty, so
//! invalid, first word. The name must be a valid [`ModuleName`] (`[A-Za-z0-9._-]{1,63}`), and the
//! names of one boot must be unique. A boot that breaks either rule is refused as a whole: a
//! lookup by name must never have two answers, and the bytes measured under a name must be the
//! bytes used under it.

use core::fmt;

use crate::v1::{ModuleName, NameError};

/// Most boot modules a boot may carry (the hypervisor's hand-off record and domB's view hold
/// this many; bundles are checked against it when they are built).
pub const MAX_BOOT_MODULES: usize = 32;

/// The boot domain's module.
pub const DOMB_MODULE: &str = "domb";
/// The launch configuration's module (a device tree, read by domB).
pub const CONFIG_MODULE: &str = "config";
/// The launch-policy program's module (a WebAssembly module run by domB,
/// `docs/launch-policy.md`); without it domB runs its built-in default program.
pub const POLICY_MODULE: &str = "policy";
/// The Intel SINIT ACM's module (`launch=txt` and `launch=txt-simulated`): the hypervisor's
/// pre-launch stage copies it to the SINIT region. domB measures it into PCR20 like any module.
pub const SINIT_MODULE: &str = "sinit";

/// Configuration slots: a bundle may carry up to [`MAX_SLOTS`] launch configurations, one per
/// slot, so that a boot can fall back to the last configuration known to be good
/// (`docs/launch-config.md`, "Configuration slots"). Slot `n` is named by a letter (`a`, `b`,
/// `c`, `d`) on the hypervisor command line (`slot=b`) and in messages; its configuration is the
/// module [`CONFIG_MODULE`] for slot `a` (so a bundle with one configuration has exactly slot
/// `a`) and `config.<letter>` for the others.
pub mod slots {
    use super::CONFIG_MODULE;

    /// Most configuration slots a bundle may carry.
    pub const MAX_SLOTS: u8 = 4;
    /// The slot a boot uses when the hypervisor command line names none.
    pub const DEFAULT_SLOT: u8 = 0;
    /// The hypervisor command-line word that names the requested slot (`slot=<letter>`).
    pub const SLOT_OPTION: &str = "slot=";
    const NAMES: [&str; MAX_SLOTS as usize] = ["a", "b", "c", "d"];
    const MODULES: [&str; MAX_SLOTS as usize] = [CONFIG_MODULE, "config.b", "config.c", "config.d"];

    /// The slot's name (`a`..`d`), `None` beyond [`MAX_SLOTS`].
    pub const fn name(slot: u8) -> Option<&'static str> {
        if slot < MAX_SLOTS {
            Some(NAMES[slot as usize])
        } else {
            None
        }
    }

    /// The slot named `name`.
    pub fn from_name(name: &str) -> Option<u8> {
        NAMES.iter().position(|n| *n == name).map(|i| i as u8)
    }

    /// The module holding the slot's launch configuration.
    pub const fn config_module(slot: u8) -> Option<&'static str> {
        if slot < MAX_SLOTS {
            Some(MODULES[slot as usize])
        } else {
            None
        }
    }

    /// The slot whose configuration module is `module`, `None` for any other module.
    pub fn of_config_module(module: &str) -> Option<u8> {
        MODULES.iter().position(|m| *m == module).map(|i| i as u8)
    }

    /// Why the command line's slot is refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SlotOptionError {
        /// `slot=` names no slot `a`..`d`
        Unknown,
        /// `slot=` is given twice
        Repeated,
    }

    impl core::fmt::Display for SlotOptionError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(match self {
                SlotOptionError::Unknown => "slot= names no configuration slot (a, b, c or d)",
                SlotOptionError::Repeated => "slot= is given more than once",
            })
        }
    }

    /// The slot the hypervisor command line requests ([`DEFAULT_SLOT`] without `slot=`).
    pub fn requested(cmdline: &str) -> Result<u8, SlotOptionError> {
        let mut found = None;
        for word in cmdline.split(' ') {
            if let Some(value) = word.strip_prefix(SLOT_OPTION) {
                if found.is_some() {
                    return Err(SlotOptionError::Repeated);
                }
                found = Some(from_name(value).ok_or(SlotOptionError::Unknown)?);
            }
        }
        Ok(found.unwrap_or(DEFAULT_SLOT))
    }
}

/// The separator of words in a module command line.
pub const WORD_SEPARATOR: u8 = b' ';

/// Longest first word kept for an error message.
const SHOWN_MAX: usize = 48;

/// The first word of a module command line, shown in messages with every byte outside
/// printable ASCII escaped (so a U+00A0 or a tab is visible).
#[derive(Clone, PartialEq, Eq)]
pub struct ShownWord {
    bytes: [u8; SHOWN_MAX],
    len: usize,
    truncated: bool,
}

impl ShownWord {
    fn new(word: &[u8]) -> Self {
        let len = word.len().min(SHOWN_MAX);
        let mut bytes = [0; SHOWN_MAX];
        bytes[..len].copy_from_slice(&word[..len]);
        Self {
            bytes,
            len,
            truncated: word.len() > SHOWN_MAX,
        }
    }
}

impl fmt::Display for ShownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &byte in &self.bytes[..self.len] {
            for c in core::ascii::escape_default(byte) {
                fmt::Write::write_char(f, char::from(c))?;
            }
        }
        f.write_str(if self.truncated { "...\"" } else { "\"" })
    }
}

impl fmt::Debug for ShownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a boot's modules were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleIdentityError {
    /// A module's first command-line word is not a valid module name.
    InvalidName {
        /// The module's position in boot (multiboot2) order.
        index: usize,
        /// Its first word as given.
        word: ShownWord,
        /// What is wrong with it.
        error: NameError,
    },
    /// Two modules have the same name.
    Duplicate {
        /// The earlier module's position.
        first: usize,
        /// The later module's position.
        second: usize,
        /// The name they share.
        name: ModuleName,
    },
    /// More modules than [`MAX_BOOT_MODULES`].
    TooMany {
        /// How many were given.
        count: usize,
    },
}

impl fmt::Display for ModuleIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { index, word, error } => write!(
                f,
                "module {index}: name {word} is invalid ({error}); a module name is the first word of its command line (words separated by spaces only), [A-Za-z0-9._-]{{1,63}}"
            ),
            Self::Duplicate {
                first,
                second,
                name,
            } => write!(
                f,
                "modules {first} and {second} are both named \"{name}\"; module names must be unique"
            ),
            Self::TooMany { count } => write!(
                f,
                "{count} boot modules, at most {MAX_BOOT_MODULES} are supported"
            ),
        }
    }
}

impl core::error::Error for ModuleIdentityError {}

/// The first word of a module command line (bytes before the first 0x20, or all of it).
pub fn first_word(cmdline: &[u8]) -> &[u8] {
    match cmdline.iter().position(|&b| b == WORD_SEPARATOR) {
        Some(end) => &cmdline[..end],
        None => cmdline,
    }
}

/// The name of the module with command line `cmdline` at position `index`.
pub fn module_name(index: usize, cmdline: &[u8]) -> Result<ModuleName, ModuleIdentityError> {
    let word = first_word(cmdline);
    let invalid = |error| ModuleIdentityError::InvalidName {
        index,
        word: ShownWord::new(word),
        error,
    };
    // A non-UTF-8 word has a byte above 0x7f, which no module name allows: report its position.
    let text = core::str::from_utf8(word).map_err(|e| {
        invalid(NameError::InvalidCharacter {
            position: e.valid_up_to(),
        })
    })?;
    ModuleName::new(text).map_err(invalid)
}

/// Names every module of a boot, in boot order, after checking the whole boot: every name valid,
/// no name twice, at most [`MAX_BOOT_MODULES`] modules. `names` receives them (it must hold
/// [`MAX_BOOT_MODULES`]); nothing is returned for a refused boot.
pub fn name_boot_modules<'a>(
    cmdlines: impl IntoIterator<Item = &'a [u8]>,
    names: &mut heapless::Vec<ModuleName, MAX_BOOT_MODULES>,
) -> Result<(), ModuleIdentityError> {
    names.clear();
    let mut count = 0;
    let mut first_error = None;
    for (index, cmdline) in cmdlines.into_iter().enumerate() {
        count += 1;
        if first_error.is_some() || count > MAX_BOOT_MODULES {
            continue;
        }
        match module_name(index, cmdline) {
            Ok(name) => {
                if let Some(first) = names.iter().position(|n| *n == name) {
                    first_error = Some(ModuleIdentityError::Duplicate {
                        first,
                        second: index,
                        name,
                    });
                } else if names.push(name).is_err() {
                    // Cannot happen: count <= MAX_BOOT_MODULES was checked above.
                    first_error = Some(ModuleIdentityError::TooMany { count });
                }
            }
            Err(error) => first_error = Some(error),
        }
    }
    let refused = if count > MAX_BOOT_MODULES {
        Some(ModuleIdentityError::TooMany { count })
    } else {
        first_error
    };
    match refused {
        Some(error) => {
            names.clear();
            Err(error)
        }
        None => Ok(()),
    }
}

/// The position of the module named `name` (names are unique once [`name_boot_modules`]
/// accepted the boot, so there is at most one).
pub fn find_module(names: &[ModuleName], name: &str) -> Option<usize> {
    names.iter().position(|n| n.as_str() == name)
}

#[cfg(test)]
mod tests {

    #[test]
    fn slots_map_to_names_and_configuration_modules() {
        use super::slots::*;
        assert_eq!(config_module(0), Some(CONFIG_MODULE));
        assert_eq!(config_module(1), Some("config.b"));
        assert_eq!(config_module(3), Some("config.d"));
        assert_eq!(config_module(4), None);
        for slot in 0..MAX_SLOTS {
            let module = config_module(slot).unwrap();
            assert_eq!(of_config_module(module), Some(slot));
            assert!(crate::v1::ModuleName::new(module).is_ok(), "{module}");
            assert_eq!(from_name(name(slot).unwrap()), Some(slot));
        }
        assert_eq!(
            of_config_module("config.a"),
            None,
            "slot a has one module name"
        );
        assert_eq!(of_config_module("config.e"), None);
        assert_eq!(from_name("A"), None);
        assert_eq!(requested("console=com1"), Ok(DEFAULT_SLOT));
        assert_eq!(requested("console=com1 slot=b"), Ok(1));
        assert_eq!(requested("slot=e"), Err(SlotOptionError::Unknown));
        assert_eq!(requested("slot="), Err(SlotOptionError::Unknown));
        assert_eq!(requested("slot=a slot=b"), Err(SlotOptionError::Repeated));
        assert_eq!(requested("xslot=b"), Ok(DEFAULT_SLOT));
    }
    use super::*;
    use std::string::ToString;

    fn names_of(
        lines: &[&[u8]],
    ) -> Result<std::vec::Vec<std::string::String>, ModuleIdentityError> {
        let mut names = heapless::Vec::new();
        name_boot_modules(lines.iter().copied(), &mut names)?;
        Ok(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn the_name_is_the_first_word_separated_by_space_only() {
        assert_eq!(
            names_of(&[b"domb", b"config", b"hello extra words", b"a.b_c-9"]).unwrap(),
            ["domb", "config", "hello", "a.b_c-9"]
        );
    }

    #[test]
    fn a_non_breaking_space_does_not_separate_words_and_makes_the_name_invalid() {
        let error = names_of(&["domb\u{a0}x".as_bytes(), b"domb"]).unwrap_err();
        assert_eq!(
            error,
            ModuleIdentityError::InvalidName {
                index: 0,
                word: ShownWord::new("domb\u{a0}x".as_bytes()),
                error: NameError::InvalidCharacter { position: 4 },
            }
        );
        let message = error.to_string();
        assert!(message.contains("module 0"), "{message}");
        assert!(message.contains(r#""domb\xc2\xa0x""#), "{message}");
    }

    #[test]
    fn a_tab_does_not_separate_words() {
        assert!(matches!(
            names_of(&[b"domb\tdecoy", b"config"]),
            Err(ModuleIdentityError::InvalidName { index: 0, .. })
        ));
    }

    #[test]
    fn a_leading_space_gives_an_empty_name() {
        assert_eq!(
            names_of(&[b"config", b" domb"]).unwrap_err(),
            ModuleIdentityError::InvalidName {
                index: 1,
                word: ShownWord::new(b""),
                error: NameError::Empty,
            }
        );
        assert!(matches!(
            names_of(&[b""]),
            Err(ModuleIdentityError::InvalidName { index: 0, .. })
        ));
    }

    #[test]
    fn duplicate_names_are_refused_naming_both_modules() {
        let error = names_of(&[b"domb", b"config", b"domb second"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "modules 0 and 2 are both named \"domb\"; module names must be unique"
        );
    }

    #[test]
    fn characters_outside_the_set_are_refused() {
        for bad in [&b"do/mb"[..], b"domb\x00", b"caf\xc3\xa9", b"a:b", b"\xff"] {
            assert!(
                matches!(
                    names_of(&[bad]),
                    Err(ModuleIdentityError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_name_length_limit_is_63_bytes() {
        let ok = [b'a'; 63];
        let long = [b'a'; 64];
        assert!(names_of(&[&ok]).is_ok());
        let error = names_of(&[&long]).unwrap_err();
        assert!(error.to_string().contains("...\""), "{error}");
    }

    #[test]
    fn more_than_the_module_limit_is_refused() {
        let lines: std::vec::Vec<std::string::String> =
            (0..=MAX_BOOT_MODULES).map(|i| format!("m{i}")).collect();
        let refs: std::vec::Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        assert_eq!(
            names_of(&refs).unwrap_err(),
            ModuleIdentityError::TooMany {
                count: MAX_BOOT_MODULES + 1
            }
        );
        assert!(names_of(&refs[..MAX_BOOT_MODULES]).is_ok());
    }

    #[test]
    fn find_module_answers_the_one_position() {
        let mut names = heapless::Vec::new();
        name_boot_modules([&b"config"[..], b"domb x"], &mut names).unwrap();
        assert_eq!(find_module(&names, DOMB_MODULE), Some(1));
        assert_eq!(find_module(&names, "hello"), None);
    }
}
