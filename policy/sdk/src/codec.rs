//! The encodings of [`Input`] and [`Output`]: little-endian integers, strings and byte strings
//! as `u16 length, bytes`, lists as `u16 count, items`, options as `u8 0|1, value`. Each
//! starts with `u32` [`API_VERSION`]; nothing may follow the last field.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::types::*;
use crate::{API_VERSION, MAX_DECISIONS, MAX_STRING_LEN};

/// Why an encoding does not decode (or a value cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

type Result<T> = core::result::Result<T, DecodeError>;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8], what: &'static str) -> Result<()> {
        let len = u16::try_from(v.len()).map_err(|_| DecodeError(what))?;
        self.u16(len);
        self.0.extend_from_slice(v);
        Ok(())
    }
    fn string(&mut self, v: &str, what: &'static str) -> Result<()> {
        if v.len() > MAX_STRING_LEN {
            return Err(DecodeError(what));
        }
        self.bytes(v.as_bytes(), what)
    }
    fn count(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.u16(u16::try_from(n).map_err(|_| DecodeError(what))?);
        Ok(())
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError(what))?;
        let bytes = self.data.get(self.pos..end).ok_or(DecodeError(what))?;
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError(what)),
        }
    }
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let len = self.u16(what)?;
        self.take(len.into(), what)
    }
    fn string(&mut self, what: &'static str) -> Result<String> {
        let bytes = self.bytes(what)?;
        if bytes.len() > MAX_STRING_LEN {
            return Err(DecodeError(what));
        }
        core::str::from_utf8(bytes)
            .map(String::from)
            .map_err(|_| DecodeError(what))
    }
    fn version(&mut self) -> Result<()> {
        match self.u32("the API version is cut off")? {
            API_VERSION => Ok(()),
            _ => Err(DecodeError("the API version is not 1")),
        }
    }
    fn end(&self) -> Result<()> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(DecodeError("bytes follow the last field"))
        }
    }
}

fn action_code(code: u8, what: &'static str) -> Result<Action> {
    Ok(match code {
        0 => Action::StartAll,
        1 => Action::RecoveryOnly,
        2 => Action::Halt,
        _ => return Err(DecodeError(what)),
    })
}

impl Input {
    /// The encoding the host hands the program.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer(Vec::new());
        w.u32(API_VERSION);
        w.u8(self.launch_kind as u8);
        w.u8(self.tpm.available.into());
        w.count(self.tpm.banks.len(), "too many banks")?;
        for &bank in &self.tpm.banks {
            w.u16(bank);
        }
        match self.boot_state.boot_attempts {
            None => w.u8(0),
            Some(n) => {
                w.u8(1);
                w.u32(n);
            }
        }
        match self.boot_state.last_known_good_slot {
            None => w.u8(0),
            Some(slot) => {
                w.u8(1);
                w.u8(slot);
            }
        }
        w.u8(self.boot_state.requested_slot);
        w.u8(self.boot_state.config_slot);
        w.u8(self.boot_state.slots);
        w.count(self.modules.len(), "too many modules")?;
        for module in &self.modules {
            w.string(&module.name, "a module name is too long")?;
            w.u64(module.size);
            w.count(module.digests.len(), "too many digests")?;
            for digest in &module.digests {
                w.u16(digest.alg);
                w.bytes(&digest.digest, "a digest is too long")?;
            }
        }
        let policy = &self.config.policy;
        w.u8(policy.present.into());
        w.u8(policy.unmeasured_launch as u8);
        w.u8(policy.tpm_unavailable as u8);
        w.u8(policy.digest_not_allowed as u8);
        w.count(self.config.domains.len(), "too many domains")?;
        for domain in &self.config.domains {
            w.string(&domain.name, "a domain name is too long")?;
            w.string(&domain.kernel, "a kernel name is too long")?;
            match &domain.ramdisk {
                None => w.u8(0),
                Some(name) => {
                    w.u8(1);
                    w.string(name, "a ramdisk name is too long")?;
                }
            }
            w.u32(domain.capabilities);
            w.u64(domain.memory_bytes);
            w.u32(domain.vcpus);
            w.count(domain.allowed_sha256.len(), "too many allowed digests")?;
            for digest in &domain.allowed_sha256 {
                w.0.extend_from_slice(digest);
            }
        }
        Ok(w.0)
    }

    /// Decodes what [`Input::encode`] wrote.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader { data, pos: 0 };
        r.version()?;
        let launch_kind = match r.u8("launch kind")? {
            0 => LaunchKind::Unmeasured,
            1 => LaunchKind::Emulated,
            2 => LaunchKind::Txt,
            3 => LaunchKind::Skinit,
            4 => LaunchKind::TxtSimulated,
            _ => return Err(DecodeError("unknown launch kind")),
        };
        let available = r.bool("TPM availability")?;
        let mut banks = Vec::new();
        for _ in 0..r.u16("bank count")? {
            banks.push(r.u16("bank")?);
        }
        let boot_attempts = match r.bool("boot attempts")? {
            false => None,
            true => Some(r.u32("boot attempts")?),
        };
        let last_known_good_slot = match r.bool("last known-good slot")? {
            false => None,
            true => Some(r.u8("last known-good slot")?),
        };
        let requested_slot = r.u8("requested slot")?;
        let config_slot = r.u8("configuration slot")?;
        let slots = r.u8("slots")?;
        let mut modules = Vec::new();
        for _ in 0..r.u16("module count")? {
            let name = r.string("module name")?;
            let size = r.u64("module size")?;
            let mut digests = Vec::new();
            for _ in 0..r.u16("digest count")? {
                let alg = r.u16("digest algorithm")?;
                digests.push(ModuleDigest {
                    alg,
                    digest: r.bytes("digest")?.into(),
                });
            }
            modules.push(Module {
                name,
                size,
                digests,
            });
        }
        let policy = ConfigPolicy {
            present: r.bool("policy node presence")?,
            unmeasured_launch: action_code(r.u8("action")?, "unknown action")?,
            tpm_unavailable: action_code(r.u8("action")?, "unknown action")?,
            digest_not_allowed: action_code(r.u8("action")?, "unknown action")?,
        };
        let mut domains = Vec::new();
        for _ in 0..r.u16("domain count")? {
            let name = r.string("domain name")?;
            let kernel = r.string("kernel name")?;
            let ramdisk = match r.bool("ramdisk presence")? {
                false => None,
                true => Some(r.string("ramdisk name")?),
            };
            let capabilities = r.u32("capabilities")?;
            let memory_bytes = r.u64("memory")?;
            let vcpus = r.u32("vcpus")?;
            let mut allowed_sha256 = Vec::new();
            for _ in 0..r.u16("allowed digest count")? {
                let mut digest = [0; 32];
                digest.copy_from_slice(r.take(32, "allowed digest")?);
                allowed_sha256.push(digest);
            }
            domains.push(Domain {
                name,
                kernel,
                ramdisk,
                capabilities,
                memory_bytes,
                vcpus,
                allowed_sha256,
            });
        }
        r.end()?;
        Ok(Self {
            launch_kind,
            tpm: TpmState { available, banks },
            boot_state: BootState {
                boot_attempts,
                last_known_good_slot,
                requested_slot,
                config_slot,
                slots,
            },
            modules,
            config: Config { policy, domains },
        })
    }
}

impl Output {
    /// The encoding the program hands the host.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer(Vec::new());
        w.u32(API_VERSION);
        w.u8(self.verdict.action() as u8);
        if let Verdict::StartListed(names) = &self.verdict {
            w.count(names.len(), "too many domains to start")?;
            for name in names {
                w.string(name, "a domain name is too long")?;
            }
        }
        w.u8(self.slot);
        w.string(&self.reason, "the reason is longer than 255 bytes")?;
        w.count(self.decisions.len(), "too many decisions")?;
        for decision in &self.decisions {
            w.u8(decision.reason as u8);
            w.u8(decision.action as u8);
            w.string(
                &decision.subject,
                "a decision subject is longer than 255 bytes",
            )?;
        }
        Ok(w.0)
    }

    /// Decodes what [`Output::encode`] wrote, refusing anything malformed: an unknown verdict,
    /// reason or action code, a string that is not UTF-8 or longer than 255 bytes, no decision
    /// or more than [`MAX_DECISIONS`], trailing bytes.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader { data, pos: 0 };
        r.version()?;
        let verdict = match r.u8("the verdict is missing")? {
            0 => Verdict::StartAll,
            1 => Verdict::RecoveryOnly,
            2 => Verdict::Halt,
            3 => {
                let mut names = Vec::new();
                for _ in 0..r.u16("the list of domains to start is cut off")? {
                    names.push(r.string("a domain name to start is malformed")?);
                }
                Verdict::StartListed(names)
            }
            _ => return Err(DecodeError("unknown verdict")),
        };
        let slot = r.u8("the slot is missing")?;
        let reason = r.string("the reason is malformed (cut off, not UTF-8 or too long)")?;
        let count = usize::from(r.u16("the decision count is missing")?);
        if count == 0 || count > MAX_DECISIONS {
            return Err(DecodeError("an answer carries 1 to 32 decisions"));
        }
        let mut decisions = Vec::new();
        for _ in 0..count {
            let reason = match r.u8("a decision is cut off")? {
                0 => Reason::AllChecksPassed,
                1 => Reason::UnmeasuredLaunch,
                2 => Reason::TpmUnavailable,
                3 => Reason::ModuleNotAllowed,
                5 => Reason::PolicyRule,
                crate::REASON_POLICY_FAILED => {
                    return Err(DecodeError("reason 4 (policy failed) is the host's alone"));
                }
                _ => return Err(DecodeError("unknown decision reason")),
            };
            let action = match r.u8("a decision is cut off")? {
                0 => DecisionAction::StartAll,
                1 => DecisionAction::RecoveryOnly,
                2 => DecisionAction::Halt,
                3 => DecisionAction::StartListed,
                _ => return Err(DecodeError("unknown decision action")),
            };
            let subject = r.string("a decision subject is malformed")?;
            decisions.push(Decision {
                reason,
                action,
                subject,
            });
        }
        r.end()?;
        Ok(Self {
            verdict,
            slot,
            reason,
            decisions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn input() -> Input {
        Input {
            launch_kind: LaunchKind::Emulated,
            tpm: TpmState {
                available: true,
                banks: vec![0x4, 0xB],
            },
            boot_state: BootState {
                boot_attempts: Some(3),
                last_known_good_slot: Some(0),
                requested_slot: 1,
                config_slot: 0,
                slots: 0b11,
            },
            modules: vec![Module {
                name: "hello".into(),
                size: 42,
                digests: vec![ModuleDigest {
                    alg: ALG_SHA256,
                    digest: vec![7; 32],
                }],
            }],
            config: Config {
                policy: ConfigPolicy {
                    present: true,
                    unmeasured_launch: Action::StartAll,
                    tpm_unavailable: Action::RecoveryOnly,
                    digest_not_allowed: Action::Halt,
                },
                domains: vec![Domain {
                    name: "web".into(),
                    kernel: "hello".into(),
                    ramdisk: Some("initrd".into()),
                    capabilities: capability::RECOVERY,
                    memory_bytes: 1 << 24,
                    vcpus: 2,
                    allowed_sha256: vec![[7; 32]],
                }],
            },
        }
    }

    #[test]
    fn input_round_trips() {
        let input = input();
        assert_eq!(Input::decode(&input.encode().unwrap()).unwrap(), input);
    }

    #[test]
    fn output_round_trips() {
        let output = Output {
            verdict: Verdict::StartListed(vec!["web".into()]),
            slot: 0,
            reason: "class a".into(),
            decisions: vec![Decision {
                reason: Reason::PolicyRule,
                action: DecisionAction::StartListed,
                subject: "machine-class".into(),
            }],
        };
        assert_eq!(Output::decode(&output.encode().unwrap()).unwrap(), output);
    }

    #[test]
    fn malformed_outputs_are_refused_with_the_cause() {
        let good = Output {
            verdict: Verdict::StartAll,
            slot: 0,
            reason: String::new(),
            decisions: vec![Decision {
                reason: Reason::AllChecksPassed,
                action: DecisionAction::StartAll,
                subject: String::new(),
            }],
        }
        .encode()
        .unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Output::decode(&trailing),
            Err(DecodeError("bytes follow the last field"))
        );
        let mut version = good.clone();
        version[0] = 2;
        assert_eq!(
            Output::decode(&version),
            Err(DecodeError("the API version is not 1"))
        );
        let mut failed = good.clone();
        let reason_at = good.len() - 4;
        failed[reason_at] = REASON_POLICY_FAILED;
        assert_eq!(
            Output::decode(&failed),
            Err(DecodeError("reason 4 (policy failed) is the host's alone"))
        );
        assert!(Output::decode(&good[..good.len() - 1]).is_err());
        let none = Output {
            decisions: vec![],
            ..Output::decode(&good).unwrap()
        };
        assert_eq!(
            Output::decode(&none.encode().unwrap()),
            Err(DecodeError("an answer carries 1 to 32 decisions"))
        );
    }
}
