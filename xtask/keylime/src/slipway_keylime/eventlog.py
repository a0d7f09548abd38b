"""Slipway's TCG crypto-agile event log, parsed and decoded in Python.

Why a second decoder exists at all: a Keylime verifier is a Python process on a fleet's
verifier host, where neither cargo nor Slipway's Rust tools run, and Keylime's own parser
(``tpm2_eventlog``) prints every Slipway event as "Unknown event type". So the policy needs a
parser that keeps Slipway's numeric event types and decodes their data, in Python.

The definition stays the Rust one: ``SlipwayEvent::decode`` in ``measure/src/events.rs``
(``slipway-measure``) decodes, and ``xtask/src/refstate.rs`` renders the result as JSON
(``docs/fleet.md``, "Decoded event data"). This module mirrors both exactly, error texts
included, and the QEMU test ``tests/tests/fleet_keylime.rs`` pins it to them: it runs this
parser and the Rust one over the same logs (real runs' Slipway and firmware logs and a log that
exercises every rendering rule) and requires identical JSON, and requires both to refuse the
same malformed logs. A change to the Rust decoder that is not made here fails that test.

Only the standard library is used, so the module works with any Keylime installation.
"""

import hashlib
import struct
from typing import Any, Dict, List, Optional, Tuple

LOG_JSON_FORMAT = "slipway-log/1"
HEX_LINE_BYTES = 32

EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_SLIPWAY_BASE = 0x600
EV_SLIPWAY_LAUNCH_KIND = 0x601
EV_SLIPWAY_HYPERVISOR_CMDLINE = 0x602
EV_SLIPWAY_DOMB_IMAGE = 0x603
EV_SLIPWAY_LAUNCH_CONFIG = 0x604
EV_SLIPWAY_POLICY = 0x605
EV_SLIPWAY_BOOT_MODULE = 0x606
EV_SLIPWAY_DOMAIN_BUILD = 0x607
EV_SLIPWAY_POLICY_DECISION = 0x608
EV_SLIPWAY_BANKS_CAPPED = 0x609
EV_SLIPWAY_EMULATED_LAUNCH = 0x60A
EV_SLIPWAY_RECOVERY_IMAGE = 0x60B
EV_SLIPWAY_BOOT_STATE = 0x60C
EV_SLIPWAY_SLOT_CHOICE = 0x60D

SLIPWAY_TYPE_NAMES = {
    EV_SLIPWAY_LAUNCH_KIND: "EV_SLIPWAY_LAUNCH_KIND",
    EV_SLIPWAY_HYPERVISOR_CMDLINE: "EV_SLIPWAY_HYPERVISOR_CMDLINE",
    EV_SLIPWAY_DOMB_IMAGE: "EV_SLIPWAY_DOMB_IMAGE",
    EV_SLIPWAY_LAUNCH_CONFIG: "EV_SLIPWAY_LAUNCH_CONFIG",
    EV_SLIPWAY_POLICY: "EV_SLIPWAY_POLICY",
    EV_SLIPWAY_BOOT_MODULE: "EV_SLIPWAY_BOOT_MODULE",
    EV_SLIPWAY_DOMAIN_BUILD: "EV_SLIPWAY_DOMAIN_BUILD",
    EV_SLIPWAY_POLICY_DECISION: "EV_SLIPWAY_POLICY_DECISION",
    EV_SLIPWAY_BANKS_CAPPED: "EV_SLIPWAY_BANKS_CAPPED",
    EV_SLIPWAY_EMULATED_LAUNCH: "EV_SLIPWAY_EMULATED_LAUNCH",
    EV_SLIPWAY_RECOVERY_IMAGE: "EV_SLIPWAY_RECOVERY_IMAGE",
    EV_SLIPWAY_BOOT_STATE: "EV_SLIPWAY_BOOT_STATE",
    EV_SLIPWAY_SLOT_CHOICE: "EV_SLIPWAY_SLOT_CHOICE",
}

BOOT_RECORD_STATUS = {0: "created", 1: "counted", 2: "replaced-corrupt", 3: "unavailable"}
SLOT_NAMES = {0: "a", 1: "b", 2: "c", 3: "d"}
NO_SLOT = 0xFF

TCG_TYPE_NAMES = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
}

# TPM_ALG_ID -> (tpm2-tools name, digest size); hashlib name for the banks Slipway replays.
ALGORITHMS = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
    0x0027: ("sha3_256", 32),
    0x0028: ("sha3_384", 48),
    0x0029: ("sha3_512", 64),
}
REPLAYED = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
MAX_BANKS = 8
MAX_DIGEST_SIZE = 64
MAX_NAME_LEN = 255
PCR_COUNT = 24

LAUNCH_KINDS = {0: "unmeasured", 1: "emulated", 2: "txt", 3: "skinit"}
DECISION_REASONS = {
    0: "all-checks-passed",
    1: "unmeasured-launch",
    2: "tpm-unavailable",
    3: "module-not-allowed",
    4: "policy-failed",
    5: "policy-rule",
    # 6-12: the hypervisor's recovery decisions (docs/measurement.md).
    6: "config-malformed",
    7: "module-missing",
    8: "policy-halted",
    9: "plan-refused",
    10: "boot-domain-failed",
    11: "boot-domain-crashed",
    12: "boot-domain-hung",
}
DECISION_ACTIONS = {0: "start-all", 1: "start-recovery-only", 2: "halt", 3: "start-listed"}

SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\0"


class LogError(ValueError):
    """The log is malformed or truncated (never accepted)."""


class BadEventData(Exception):
    """A Slipway event type whose data the decoder refuses."""


def type_name(event_type: int) -> str:
    name = SLIPWAY_TYPE_NAMES.get(event_type) or TCG_TYPE_NAMES.get(event_type)
    return name if name else hex(event_type)


def alg_name(alg: int) -> str:
    known = ALGORITHMS.get(alg)
    return known[0] if known else f"{alg:#06x}"


def hex_lines(data: bytes) -> List[str]:
    return [data[i : i + HEX_LINE_BYTES].hex() for i in range(0, len(data), HEX_LINE_BYTES)]


def text(data: bytes) -> Any:
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, length: int) -> Optional[bytes]:
        if self.pos + length > len(self.data):
            return None
        out = self.data[self.pos : self.pos + length]
        self.pos += length
        return out

    def uint(self, size: int) -> Optional[int]:
        raw = self.take(size)
        return None if raw is None else int.from_bytes(raw, "little")

    def name(self) -> Optional[bytes]:
        length = self.uint(2)
        if length is None or length > MAX_NAME_LEN:
            return None
        return self.take(length)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def _bank_size_ok(alg: int, size: int) -> bool:
    known = ALGORITHMS.get(alg)
    if known and known[1] != size:
        return False
    return 0 < size <= MAX_DIGEST_SIZE


def is_slipway_event(pcr: int, event_type: int) -> bool:
    """Slipway's to decode: its block 0x600-0x6FF, or EV_SEPARATOR in PCR17-21."""
    return EV_SLIPWAY_BASE <= event_type < EV_SLIPWAY_BASE + 0x100 or (
        event_type == EV_SEPARATOR and 17 <= pcr <= 21
    )


def _decode(event_type: int, data: bytes) -> Optional[Dict[str, Any]]:
    """Mirrors SlipwayEvent::decode and its JSON rendering; None for a type it does not know."""

    def bad(what: str) -> BadEventData:
        return BadEventData(f"bad event data for event type {event_type:#x}: {what}")

    r = _Reader(data)

    def versioned() -> None:
        version = r.uint(1)
        if version is None:
            raise bad("empty")
        if version != 1:
            raise bad("unknown format version")

    if event_type == EV_SLIPWAY_LAUNCH_KIND:
        versioned()
        code = r.uint(1)
        if code is None:
            raise bad("launch kind missing")
        if code not in LAUNCH_KINDS:
            raise bad("unknown launch kind")
        out: Dict[str, Any] = {"launch_kind": LAUNCH_KINDS[code]}
    elif event_type == EV_SLIPWAY_BANKS_CAPPED:
        versioned()
        count = r.uint(1)
        if count is None:
            raise bad("bank count missing")
        banks: List[Dict[str, Any]] = []
        seen = set()
        for _ in range(count):
            alg = r.uint(2)
            if alg is None:
                raise bad("bank cut off")
            size = r.uint(2)
            if size is None:
                raise bad("bank cut off")
            if not _bank_size_ok(alg, size):
                raise bad("bank digest size wrong")
            if alg in seen or len(seen) >= MAX_BANKS:
                raise bad("bank repeated or too many")
            seen.add(alg)
            banks.append({"alg": alg_name(alg), "digest_size": size})
        out = {"banks": banks}
    elif event_type == EV_SLIPWAY_HYPERVISOR_CMDLINE:
        out = {"cmdline": text(r.rest())}
    elif event_type == EV_SLIPWAY_LAUNCH_CONFIG:
        out = {"device_tree": hex_lines(r.rest())}
    elif event_type == EV_SLIPWAY_POLICY:
        out = {"policy": hex_lines(r.rest())}
    elif event_type in (EV_SLIPWAY_DOMB_IMAGE, EV_SLIPWAY_RECOVERY_IMAGE, EV_SLIPWAY_BOOT_MODULE):
        versioned()
        name = r.name()
        if name is None:
            raise bad("module name cut off")
        size = r.uint(8)
        if size is None:
            raise bad("module size cut off")
        out = {"name": text(name), "size": size}
    elif event_type == EV_SLIPWAY_POLICY_DECISION:
        versioned()
        reason = r.uint(1)
        if reason is None:
            raise bad("reason missing")
        if reason not in DECISION_REASONS:
            raise bad("unknown decision reason")
        action = r.uint(1)
        if action is None:
            raise bad("action missing")
        if action not in DECISION_ACTIONS:
            raise bad("unknown decision action")
        subject = r.name()
        if subject is None:
            raise bad("subject cut off")
        out = {
            "reason": DECISION_REASONS[reason],
            "action": DECISION_ACTIONS[action],
            "subject": text(subject),
        }
    elif event_type == EV_SLIPWAY_DOMAIN_BUILD:
        versioned()
        name = r.name()
        if name is None:
            raise bad("domain name cut off")
        payload_format = r.uint(2)
        if payload_format is None:
            raise bad("payload format cut off")
        length = r.uint(4)
        if length is None:
            raise bad("payload length cut off")
        payload = r.take(length)
        if payload is None:
            raise bad("payload cut off")
        out = {"name": text(name), "payload_format": payload_format, "payload": hex_lines(payload)}
    elif event_type == EV_SEPARATOR:
        if data != b"\0\0\0\0":
            raise bad("separator data is not 4 zero bytes")
        r.rest()
        out = {"separator": data.hex()}
    elif event_type == EV_SLIPWAY_EMULATED_LAUNCH:
        versioned()
        start = r.uint(8)
        if start is None:
            raise bad("region start cut off")
        size = r.uint(8)
        if size is None:
            raise bad("region size cut off")
        out = {"region_start": start, "region_size": size}
    elif event_type == EV_SLIPWAY_BOOT_STATE:
        versioned()
        status = r.uint(1)
        if status is None:
            raise bad("status missing")
        if status not in BOOT_RECORD_STATUS:
            raise bad("unknown boot record status")
        requested = r.uint(1)
        if requested is None:
            raise bad("requested slot missing")
        attempts = r.uint(4)
        if attempts is None:
            raise bad("attempts cut off")
        good = r.uint(1)
        if good is None:
            raise bad("known-good slot missing")
        if status == 3 and (attempts != 0 or good != NO_SLOT):
            raise bad("an unavailable boot record with attempts or a slot")
        out = {
            "status": BOOT_RECORD_STATUS[status],
            "requested_slot": SLOT_NAMES.get(requested, requested),
            "attempts": attempts,
            "last_known_good_slot": None if good == NO_SLOT else SLOT_NAMES.get(good, good),
        }
    elif event_type == EV_SLIPWAY_SLOT_CHOICE:
        versioned()
        start = r.uint(1)
        to = r.uint(1)
        if start is None or to is None:
            raise bad("slot cut off")
        if start == to:
            raise bad("a slot choice names one slot twice")
        out = {"from_slot": SLOT_NAMES.get(start, start), "to_slot": SLOT_NAMES.get(to, to)}
    else:
        return None
    if r.pos != len(data):
        raise bad("trailing bytes")
    return out


def event_data(pcr: int, event_type: int, data: bytes) -> Dict[str, Any]:
    """The decoded data of one event (docs/fleet.md, "Decoded event data")."""
    if not is_slipway_event(pcr, event_type):
        return {"hex": hex_lines(data)}
    try:
        decoded = _decode(event_type, data)
    except BadEventData as e:
        return {"undecodable": str(e), "hex": hex_lines(data)}
    return {"hex": hex_lines(data)} if decoded is None else decoded


class Header:
    def __init__(self, platform_class, minor, major, errata, uintn, banks, vendor_info):
        self.platform_class = platform_class
        self.spec_version = (major, minor, errata)
        self.uintn_size = uintn
        self.banks: List[Tuple[int, int]] = banks  # (alg, digest size), header order
        self.vendor_info: bytes = vendor_info


class Event:
    def __init__(self, offset: int, pcr: int, event_type: int, digests: List[Tuple[int, bytes]], data: bytes):
        self.offset = offset
        self.pcr = pcr
        self.event_type = event_type
        self.digests = digests  # (alg, bytes), log order
        self.data = data

    def digest(self, alg: int) -> Optional[bytes]:
        for a, d in self.digests:
            if a == alg:
                return d
        return None

    def to_json(self) -> Dict[str, Any]:
        return {
            "pcr": self.pcr,
            "type": self.event_type,
            "type_name": type_name(self.event_type),
            "digests": {alg_name(a): d.hex() for a, d in self.digests},
            "size": len(self.data),
            "data": event_data(self.pcr, self.event_type, self.data),
        }


def parse(log: bytes) -> Tuple[Header, List[Event]]:
    """Parses a whole crypto-agile log; LogError names the offset of anything malformed."""
    r = _Reader(log)

    def need(value, offset, what):
        if value is None:
            raise LogError(f"log truncated at offset {offset}: {what} cut off")
        return value

    if need(r.uint(4), 0, "header pcrIndex") != 0:
        raise LogError("offset 0: header event pcrIndex is not 0 (not a crypto-agile log?)")
    if need(r.uint(4), 4, "header eventType") != EV_NO_ACTION:
        raise LogError("offset 4: header event is not EV_NO_ACTION (not a crypto-agile log?)")
    need(r.take(20), 8, "header SHA-1 digest")
    size = need(r.uint(4), 28, "header eventSize")
    spec = need(r.take(size), 32, "Spec ID event data")
    s = _Reader(spec)

    def field(value, what):
        if value is None:
            raise LogError(f"offset {32 + s.pos}: {what} cut off inside the Spec ID event")
        return value

    if field(s.take(16), "Spec ID signature") != SPEC_ID_SIGNATURE:
        raise LogError('offset 32: header signature is not "Spec ID Event03" (not a crypto-agile log)')
    platform_class = field(s.uint(4), "Spec ID platformClass")
    minor = field(s.uint(1), "Spec ID specVersionMinor")
    major = field(s.uint(1), "Spec ID specVersionMajor")
    errata = field(s.uint(1), "Spec ID specErrata")
    uintn = field(s.uint(1), "Spec ID uintnSize")
    count = field(s.uint(4), "Spec ID numberOfAlgorithms")
    if count == 0:
        raise LogError("header lists no algorithms")
    if count > MAX_BANKS:
        raise LogError("header lists more than 8 algorithms")
    banks: List[Tuple[int, int]] = []
    for _ in range(count):
        alg = field(s.uint(2), "Spec ID algorithmId")
        digest_size = field(s.uint(2), "Spec ID digestSize")
        if not _bank_size_ok(alg, digest_size):
            raise LogError("header digest size is wrong for its algorithm, 0, or above 64")
        if any(a == alg for a, _ in banks):
            raise LogError("header lists an algorithm twice")
        banks.append((alg, digest_size))
    vendor_size = field(s.uint(1), "Spec ID vendorInfoSize")
    vendor_info = field(s.take(vendor_size), "Spec ID vendorInfo")
    if s.pos != len(spec):
        raise LogError("header eventSize is larger than the Spec ID event")
    header = Header(platform_class, minor, major, errata, uintn, banks, vendor_info)
    sizes = dict(banks)

    events: List[Event] = []
    while r.pos < len(log):
        offset = r.pos
        pcr = need(r.uint(4), r.pos, "event pcrIndex")
        event_type = need(r.uint(4), r.pos, "event eventType")
        digest_count = need(r.uint(4), r.pos, "event digest count")
        if digest_count > len(banks):
            raise LogError(f"offset {r.pos - 4}: event has more digests than the header has algorithms")
        digests: List[Tuple[int, bytes]] = []
        for _ in range(digest_count):
            alg = need(r.uint(2), r.pos, "event digest algorithm")
            if alg not in sizes:
                raise LogError(f"offset {r.pos - 2}: event digest algorithm is not in the log header")
            value = need(r.take(sizes[alg]), r.pos, "event digest")
            if any(a == alg for a, _ in digests):
                raise LogError(f"offset {offset}: event has two digests of one algorithm")
            digests.append((alg, value))
        data_size = need(r.uint(4), r.pos, "event eventSize")
        data = need(r.take(data_size), r.pos, "event data")
        events.append(Event(offset, pcr, event_type, digests, data))
    return header, events


def replay(header: Header, events: List[Event]) -> Tuple[Dict[str, Dict[int, bytes]], List[int]]:
    """The log replayed from 0 (the post-launch state of PCR17-22, as tpm2_eventlog replays) in
    the banks Slipway hashes, and the PCRs that have events."""
    values = {
        REPLAYED[alg]: {pcr: bytes(size) for pcr in range(PCR_COUNT)}
        for alg, size in header.banks
        if alg in REPLAYED
    }
    extended: List[int] = []
    for event in events:
        if event.event_type == EV_NO_ACTION:
            if (
                event.pcr == 0
                and len(event.data) == 17
                and event.data.startswith(STARTUP_LOCALITY_SIGNATURE)
            ):
                for name, pcrs in values.items():
                    pcrs[0] = bytes(len(pcrs[0]) - 1) + event.data[16:17]
            continue
        if event.pcr >= PCR_COUNT:
            raise LogError(f"offset {event.offset}: event extends a PCR index above 23")
        if event.pcr not in extended:
            extended.append(event.pcr)
        for alg, digest in event.digests:
            name = REPLAYED.get(alg)
            if name in values:
                pcrs = values[name]
                pcrs[event.pcr] = hashlib.new(name, pcrs[event.pcr] + digest).digest()
    return values, sorted(extended)


def launch_kind(events: List[Event]) -> Optional[str]:
    """The first PCR19 launch-kind event's kind, if it decodes."""
    for event in events:
        if event.pcr == 19 and event.event_type == EV_SLIPWAY_LAUNCH_KIND:
            data = event_data(event.pcr, event.event_type, event.data)
            kind = data.get("launch_kind")
            if isinstance(kind, str):
                return kind
    return None


def log_json(log: bytes) -> Dict[str, Any]:
    """The same JSON as `cargo xtask log --json` (format slipway-log/1)."""
    header, events = parse(log)
    values, extended = replay(header, events)
    major, minor, errata = header.spec_version
    return {
        "format": LOG_JSON_FORMAT,
        "header": {
            "platform_class": header.platform_class,
            "spec_version": f"{major}.{minor}.{errata}",
            "uintn_size": header.uintn_size,
            "banks": [{"alg": alg_name(a), "digest_size": size} for a, size in header.banks],
            "vendor_info": text(header.vendor_info),
        },
        "events": [event.to_json() for event in events],
        "pcrs": {
            name: {str(pcr): pcrs[pcr].hex() for pcr in extended} for name, pcrs in values.items()
        },
    }
