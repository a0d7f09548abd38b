//! TIS driver against a fake TPM: a register-level state machine (PTP FIFO states idle, ready,
//! reception, execution, completion) that also polices burst counts.

use std::{vec, vec::Vec};

use crate::tis::{Clock, Tis, TisError, TisRegisters, TisTimeouts, WaitFor, access, reg, sts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Ready,
    Reception,
    Execution,
    Completion,
}

struct FakeTpm {
    absent: bool,
    active: Option<u8>,
    grantable: [bool; 5],
    state: State,
    command: Vec<u8>,
    response: Vec<u8>,
    read_pos: usize,
    /// Largest burst count advertised.
    burst: usize,
    /// The next N burst-count reads return 0.
    zero_bursts: u32,
    /// FIFO bytes since the last burst-count read, and that count.
    since_burst: usize,
    last_burst: usize,
    burst_violations: u32,
    /// STS reads during execution before the response is ready (`u32::MAX`: never).
    exec_polls: u32,
    polls_left: u32,
    /// commandReady writes are ignored.
    never_ready: bool,
    /// Expect drops after this many command bytes.
    expect_drops_after: Option<usize>,
    /// The response has this many extra bytes beyond its size field.
    response_overrun: usize,
    handler: fn(&[u8]) -> Vec<u8>,
    commands: Vec<Vec<u8>>,
}

fn startup_ok(_: &[u8]) -> Vec<u8> {
    vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]
}

impl FakeTpm {
    fn new() -> Self {
        FakeTpm {
            absent: false,
            active: None,
            grantable: [true, true, true, true, false],
            state: State::Idle,
            command: Vec::new(),
            response: Vec::new(),
            read_pos: 0,
            burst: 4,
            zero_bursts: 0,
            since_burst: 0,
            last_burst: 0,
            burst_violations: 0,
            exec_polls: 3,
            polls_left: 0,
            never_ready: false,
            expect_drops_after: None,
            response_overrun: 0,
            handler: startup_ok,
            commands: Vec::new(),
        }
    }

    fn command_complete(&self) -> bool {
        if let Some(n) = self.expect_drops_after
            && self.command.len() >= n
        {
            return true;
        }
        self.command.len() >= 6
            && self.command.len()
                >= u32::from_be_bytes([
                    self.command[2],
                    self.command[3],
                    self.command[4],
                    self.command[5],
                ]) as usize
    }

    fn burst_field(&mut self) -> u32 {
        if self.zero_bursts > 0 {
            self.zero_bursts -= 1;
            self.last_burst = 0;
        } else {
            self.last_burst = self.burst;
        }
        self.since_burst = 0;
        (self.last_burst as u32) << sts::BURST_SHIFT
    }

    fn fifo_access(&mut self) {
        self.since_burst += 1;
        if self.since_burst > self.last_burst {
            self.burst_violations += 1;
        }
    }
}

impl TisRegisters for FakeTpm {
    fn read8(&mut self, locality: u8, offset: u16) -> u8 {
        if self.absent {
            return 0xff;
        }
        match offset {
            reg::ACCESS => {
                let mut value = access::VALID | access::ESTABLISHMENT;
                if self.active == Some(locality) {
                    value |= access::ACTIVE_LOCALITY;
                }
                value
            }
            reg::DATA_FIFO if self.active == Some(locality) => {
                self.fifo_access();
                if self.state == State::Completion && self.read_pos < self.response.len() {
                    self.read_pos += 1;
                    self.response[self.read_pos - 1]
                } else {
                    0xff
                }
            }
            reg::RID => 1,
            _ => 0xff,
        }
    }

    fn read32(&mut self, locality: u8, offset: u16) -> u32 {
        if self.absent || self.active != Some(locality) && offset == reg::STS {
            return u32::MAX;
        }
        match offset {
            reg::STS => match self.state {
                State::Idle => sts::VALID,
                State::Ready => sts::VALID | sts::COMMAND_READY | self.burst_field(),
                State::Reception => {
                    let expect = if self.command_complete() {
                        0
                    } else {
                        sts::EXPECT
                    };
                    sts::VALID | expect | self.burst_field()
                }
                State::Execution => {
                    if self.polls_left == 0 {
                        self.response = (self.handler)(&self.command);
                        self.response
                            .extend(core::iter::repeat_n(0, self.response_overrun));
                        self.read_pos = 0;
                        self.state = State::Completion;
                    } else if self.polls_left != u32::MAX {
                        self.polls_left -= 1;
                    }
                    sts::VALID
                }
                State::Completion => {
                    if self.read_pos < self.response.len() {
                        sts::VALID | sts::DATA_AVAIL | self.burst_field()
                    } else {
                        sts::VALID
                    }
                }
            },
            reg::DID_VID => 0x0001_1014,
            reg::INTERFACE_ID => 0x0000_0000,
            reg::INTF_CAPABILITY => 0x3000_0000,
            _ => 0,
        }
    }

    fn write8(&mut self, locality: u8, offset: u16, value: u8) {
        match offset {
            reg::ACCESS => {
                if value & access::REQUEST_USE != 0
                    && self.active.is_none()
                    && self.grantable[usize::from(locality)]
                {
                    self.active = Some(locality);
                }
                if value & access::ACTIVE_LOCALITY != 0 && self.active == Some(locality) {
                    self.active = None;
                }
            }
            reg::DATA_FIFO if self.active == Some(locality) => {
                self.fifo_access();
                if self.state == State::Ready {
                    self.state = State::Reception;
                }
                if self.state == State::Reception && !self.command_complete() {
                    self.command.push(value);
                }
            }
            _ => {}
        }
    }

    fn write32(&mut self, locality: u8, offset: u16, value: u32) {
        if offset != reg::STS || self.active != Some(locality) {
            return;
        }
        if value & sts::COMMAND_READY != 0 && !self.never_ready {
            if self.state == State::Reception && !self.command.is_empty() {
                self.commands.push(core::mem::take(&mut self.command));
            }
            self.command.clear();
            self.response.clear();
            self.state = State::Ready;
        }
        if value & sts::GO != 0 && self.state == State::Reception && self.command_complete() {
            self.commands.push(self.command.clone());
            self.polls_left = self.exec_polls;
            self.state = State::Execution;
        }
    }
}

/// Time passes only when the driver waits.
#[derive(Default)]
struct FakeClock {
    now: u64,
}

impl Clock for FakeClock {
    fn now_micros(&mut self) -> u64 {
        self.now
    }
    fn delay_micros(&mut self, micros: u32) {
        self.now += u64::from(micros.max(1));
    }
}

const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];

/// Sends [`STARTUP`] to `fake` at locality 0 (granted first) with a 64-byte response buffer.
fn transmit_startup(fake: &mut FakeTpm) -> Result<usize, TisError> {
    let mut tis = driver(fake, 0);
    tis.request_locality().unwrap();
    let mut response = [0u8; 64];
    tis.transmit(&STARTUP, &mut response)
}

fn driver(fake: &mut FakeTpm, locality: u8) -> Tis<&mut FakeTpm, FakeClock> {
    Tis::with_timeouts(
        fake,
        FakeClock::default(),
        locality,
        TisTimeouts {
            poll_us: 100,
            ..TisTimeouts::default()
        },
    )
    .unwrap()
}

#[test]
fn command_round_trip_honors_burst_count() {
    for burst in [1, 3, 4, 64] {
        let mut fake = FakeTpm::new();
        fake.burst = burst;
        fake.zero_bursts = 2;
        let mut tis = driver(&mut fake, 2);
        tis.request_locality().unwrap();
        let mut response = [0u8; 64];
        let len = tis.transmit(&STARTUP, &mut response).unwrap();
        assert_eq!(&response[..len], &startup_ok(&[])[..]);
        let _ = tis.into_parts();
        assert_eq!(fake.commands, vec![STARTUP.to_vec()], "burst {burst}");
        assert_eq!(fake.burst_violations, 0, "burst {burst}");
        assert_eq!(fake.state, State::Ready, "left ready for the next command");
        assert_eq!(fake.active, Some(2));
    }
}

#[test]
fn probe_reads_identification() {
    let mut fake = FakeTpm::new();
    let mut tis = driver(&mut fake, 0);
    let info = tis.probe().unwrap();
    assert_eq!(info.vendor_id, 0x1014);
    assert_eq!(info.device_id, 0x0001);
    assert_eq!(info.revision_id, 1);
    assert!(info.established);
}

#[test]
fn absent_tpm_is_reported() {
    let mut fake = FakeTpm::new();
    fake.absent = true;
    let mut tis = driver(&mut fake, 0);
    assert_eq!(tis.probe(), Err(TisError::NoDevice { locality: 0 }));
    assert_eq!(
        tis.request_locality(),
        Err(TisError::NoDevice { locality: 0 })
    );
}

#[test]
fn locality_denied_after_timeout_a() {
    let mut fake = FakeTpm::new();
    let mut tis = driver(&mut fake, 4);
    let error = tis.request_locality().unwrap_err();
    assert!(matches!(
        error,
        TisError::LocalityNotGranted { locality: 4, access } if access & access::ACTIVE_LOCALITY == 0
    ));
    let (_, clock) = tis.into_parts();
    assert!((750_000..760_000).contains(&clock.now), "{}", clock.now);
}

#[test]
fn busy_tpm_denies_a_second_locality_until_released() {
    let mut fake = FakeTpm::new();
    driver(&mut fake, 0).request_locality().unwrap();
    assert!(matches!(
        driver(&mut fake, 2).request_locality(),
        Err(TisError::LocalityNotGranted { locality: 2, .. })
    ));
    let mut zero = driver(&mut fake, 0);
    zero.relinquish_locality().unwrap();
    assert!(!zero.is_active().unwrap());
    let mut two = driver(&mut fake, 2);
    two.request_locality().unwrap();
    assert!(two.is_active().unwrap());
}

#[test]
fn transmit_needs_the_locality() {
    let mut fake = FakeTpm::new();
    let mut tis = driver(&mut fake, 2);
    let mut response = [0u8; 64];
    assert!(matches!(
        tis.transmit(&STARTUP, &mut response),
        Err(TisError::LocalityNotActive { locality: 2, .. })
    ));
}

#[test]
fn invalid_locality_and_malformed_command_are_refused() {
    let mut fake = FakeTpm::new();
    assert!(matches!(
        Tis::new(&mut fake, FakeClock::default(), 5),
        Err(TisError::InvalidLocality(5))
    ));
    let mut tis = driver(&mut fake, 0);
    tis.request_locality().unwrap();
    let mut response = [0u8; 64];
    assert_eq!(
        tis.transmit(&STARTUP[..11], &mut response),
        Err(TisError::MalformedCommand { len: 11 })
    );
}

#[test]
fn command_that_never_completes_times_out_and_is_aborted() {
    let mut fake = FakeTpm::new();
    fake.exec_polls = u32::MAX;
    let error = transmit_startup(&mut fake).unwrap_err();
    assert!(matches!(
        error,
        TisError::Timeout {
            waiting_for: WaitFor::CommandCompletion,
            waited_us: 2_000_000..=2_001_000,
            ..
        }
    ));
    assert_eq!(fake.state, State::Ready, "aborted with commandReady");
}

#[test]
fn tpm_that_never_gets_ready_times_out_after_timeout_b() {
    let mut fake = FakeTpm::new();
    fake.never_ready = true;
    assert!(matches!(
        transmit_startup(&mut fake),
        Err(TisError::Timeout {
            waiting_for: WaitFor::CommandReady,
            waited_us: 2_000_000..=2_001_000,
            ..
        })
    ));
}

#[test]
fn stuck_burst_count_times_out_after_timeout_d() {
    let mut fake = FakeTpm::new();
    fake.zero_bursts = u32::MAX;
    assert!(matches!(
        transmit_startup(&mut fake),
        Err(TisError::Timeout {
            waiting_for: WaitFor::BurstCount,
            waited_us: 30_000..=31_000,
            ..
        })
    ));
}

#[test]
fn expect_dropping_early_is_an_error() {
    let mut fake = FakeTpm::new();
    fake.expect_drops_after = Some(8);
    assert!(matches!(
        transmit_startup(&mut fake),
        Err(TisError::ExpectClearedEarly {
            written: 8,
            len: 12,
            ..
        })
    ));
}

#[test]
fn response_larger_than_the_buffer_is_refused_and_aborted() {
    let mut fake = FakeTpm::new();
    fake.handler = |_| {
        let mut r = vec![0x80, 0x01, 0, 0, 0, 40, 0, 0, 0, 0];
        r.resize(40, 0xab);
        r
    };
    let mut tis = driver(&mut fake, 0);
    tis.request_locality().unwrap();
    let mut response = [0u8; 32];
    assert_eq!(
        tis.transmit(&STARTUP, &mut response),
        Err(TisError::ResponseTooLong {
            size: 40,
            capacity: 32
        })
    );
    let _ = tis.into_parts();
    assert_eq!(fake.state, State::Ready);
}

#[test]
fn response_with_extra_bytes_or_bad_size_is_refused() {
    let mut fake = FakeTpm::new();
    fake.response_overrun = 3;
    assert!(matches!(
        transmit_startup(&mut fake),
        Err(TisError::ResponseOverrun { .. })
    ));

    let mut fake = FakeTpm::new();
    fake.handler = |_| vec![0x80, 0x01, 0, 0, 0, 4, 0, 0, 0, 0];
    assert_eq!(
        transmit_startup(&mut fake),
        Err(TisError::ResponseTooShort { size: 4 })
    );

    let mut fake = FakeTpm::new();
    fake.handler = |_| vec![0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0];
    assert!(matches!(
        transmit_startup(&mut fake),
        Err(TisError::ResponseUnderrun {
            read: 10,
            size: 20,
            ..
        })
    ));
}

#[test]
fn seized_locality_mid_session_is_reported() {
    let mut fake = FakeTpm::new();
    let mut tis = driver(&mut fake, 0);
    tis.request_locality().unwrap();
    let _ = tis.into_parts();
    fake.active = Some(3);
    let mut tis = driver(&mut fake, 0);
    let mut response = [0u8; 64];
    assert!(matches!(
        tis.transmit(&STARTUP, &mut response),
        Err(TisError::LocalityNotActive { locality: 0, .. })
    ));
}

#[test]
fn errors_name_their_cause() {
    let text = std::format!(
        "{}",
        TisError::Timeout {
            locality: 2,
            waiting_for: WaitFor::StsValid,
            waited_us: 200_000,
            last_value: 0x40
        }
    );
    assert_eq!(
        text,
        "TIS locality 2: timed out after 200000 us waiting for TPM_STS.stsValid (TIMEOUT_C) (last register value 0x00000040)"
    );
}

/// The whole stack: command helpers over the TIS driver over the fake registers.
#[test]
fn command_helpers_run_over_the_tis_driver() {
    let mut fake = FakeTpm::new();
    fake.burst = 5;
    fake.handler = |command| {
        assert_eq!(&command[6..10], &[0, 0, 1, 0x7a], "GetCapability");
        let mut r = vec![
            0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2,
        ];
        r.extend([0, 0x0b, 3, 0xff, 0xff, 0xff, 0, 0x0c, 3, 0, 0, 0]);
        let len = r.len() as u8;
        r[5] = len;
        r
    };
    let mut tis = driver(&mut fake, 2);
    tis.request_locality().unwrap();
    let mut tpm = crate::Tpm::new(tis);
    let banks = tpm.active_banks().unwrap();
    assert_eq!(banks, crate::BankSet::single(crate::HashAlg::Sha256));
    assert_eq!(tpm.counts().total(), 1);
}

#[test]
fn retry_backoff_doubles_on_the_clock() {
    use crate::TpmTransport;
    let mut fake = FakeTpm::new();
    let mut tis = driver(&mut fake, 0);
    tis.before_retry(0);
    tis.before_retry(1);
    let (_, clock) = tis.into_parts();
    assert!((60_000..61_000).contains(&clock.now), "{}", clock.now);
}
