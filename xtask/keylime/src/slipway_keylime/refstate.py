"""A Slipway event log checked against `cargo xtask refstate`'s reference state.

Both sides are JSON in the forms `docs/fleet.md` defines: the reference state
(`slipway-refstate/1`, written by Rust from `predict`'s code) and the parsed log
(`slipway-log/1`, from :func:`slipway_keylime.eventlog.log_json`). Nothing is decoded here:
the comparison is of those values, event by event, as `cargo xtask verify` compares a log with
the prediction (`slipway_measure::log::first_difference`): PCR, event type, data, and the
digests of every bank both sides have.
"""

from typing import Any, Dict, List, Mapping, Optional

REFSTATE_FORMAT = "slipway-refstate/1"
LOG_JSON_FORMAT = "slipway-log/1"
# PCR17-21, the PCRs a reference state can fix.
SLIPWAY_PCRS = frozenset(range(17, 22))


class RefstateError(ValueError):
    """The reference state is not one this package understands."""


def check_refstate(refstate: Any) -> None:
    """Raises RefstateError unless `refstate` has the shape of a `slipway-refstate/1`."""
    if not isinstance(refstate, dict) or refstate.get("format") != REFSTATE_FORMAT:
        got = refstate.get("format") if isinstance(refstate, dict) else type(refstate).__name__
        raise RefstateError(f"not a Slipway reference state (format {got!r}, expected {REFSTATE_FORMAT!r})")
    launches = refstate.get("launches")
    if not isinstance(launches, dict) or not launches:
        raise RefstateError("the reference state lists no launch kind")
    for kind, entry in launches.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("events"), list):
            raise RefstateError(f"launch {kind!r} has no event list")
        pcrs = entry.get("pcrs")
        if not isinstance(pcrs, dict) or not pcrs:
            raise RefstateError(f"launch {kind!r} has no PCR values")
        for bank, values in pcrs.items():
            if not isinstance(values, dict) or not values:
                raise RefstateError(f"launch {kind!r} bank {bank!r} has no PCR values")
            for pcr in values:
                if not pcr.isdigit() or int(pcr) not in SLIPWAY_PCRS:
                    raise RefstateError(f"launch {kind!r} fixes PCR {pcr!r}, outside PCR17-21")


def launch_kind(log: Mapping[str, Any]) -> Optional[str]:
    """The launch kind of the first PCR19 launch-kind event (0x601), if it decodes."""
    for event in log.get("events", []):
        if event.get("pcr") == 19 and event.get("type") == 0x601:
            kind = event.get("data", {}).get("launch_kind")
            if isinstance(kind, str):
                return kind
    return None


def _text(value: Any) -> str:
    if isinstance(value, dict) and "hex" in value:
        return f"hex:{value['hex']}"
    return str(value)


def describe(event: Optional[Mapping[str, Any]], banks: List[str]) -> str:
    """`PCR20 EV_SLIPWAY_BOOT_MODULE module `hello` (sha256 ab12...)`, or the log's end."""
    if event is None:
        return "nothing (the log ends)"
    data = event.get("data", {})
    subject = ""
    if event.get("type") in (0x603, 0x606, 0x60B):
        subject = f" module `{_text(data.get('name'))}`"
    elif event.get("type") == 0x607:
        subject = f" domain `{_text(data.get('name'))}`"
    elif event.get("type") == 0x601:
        subject = f" `{data.get('launch_kind')}`"
    elif event.get("type") == 0x608:
        subject = f" decision {data.get('reason')} -> {data.get('action')} `{_text(data.get('subject'))}`"
    elif "undecodable" in data:
        subject = f" (undecodable: {data['undecodable']})"
    digests = event.get("digests", {})
    shown = next((bank for bank in banks if bank in digests and bank != "sha1"), None)
    digest = f" ({shown} {digests[shown][:16]}...)" if shown else ""
    return f"PCR{event.get('pcr')} {event.get('type_name')} (type {event.get('type', 0):#x}){subject}{digest}"


def evaluate(refstate: Mapping[str, Any], log: Mapping[str, Any]) -> str:
    """The empty string if the log is the predicted launch of one of the reference state's
    launch kinds; otherwise why not, naming the first differing event."""
    check_refstate(refstate)
    if not isinstance(log, Mapping) or log.get("format") != LOG_JSON_FORMAT:
        return (
            "the measured boot log was not parsed by slipway_keylime (list "
            "slipway_keylime.keylime_policy first in measured_boot_imports)"
        )
    kind = launch_kind(log)
    if kind is None:
        return "the log has no launch-kind event in PCR19: not a Slipway launch"
    if kind == "unmeasured":
        return "unmeasured launch: the log's launch kind is `unmeasured` (no dynamic launch happened)"
    entry = refstate["launches"].get(kind)
    if entry is None:
        return (
            f"launch kind `{kind}` is not accepted by the reference state (it has: "
            f"{', '.join(sorted(refstate['launches']))})"
        )
    log_banks = [bank["alg"] for bank in log.get("header", {}).get("banks", [])]
    common = [bank for bank in log_banks if bank in entry["pcrs"]]
    if not [bank for bank in common if bank != "sha1"]:
        return (
            f"the log's banks ({', '.join(log_banks)}) and the reference state's "
            f"({', '.join(entry['pcrs'])}) share no bank but SHA-1 (SHA-1 alone never passes)"
        )
    compared = sorted({int(pcr) for values in entry["pcrs"].values() for pcr in values})
    expected: List[Mapping[str, Any]] = entry["events"]
    actual = [event for event in log.get("events", []) if event.get("pcr") in compared]
    for index in range(max(len(expected), len(actual))):
        want = expected[index] if index < len(expected) else None
        have = actual[index] if index < len(actual) else None
        same = (
            want is not None
            and have is not None
            and all(want.get(key) == have.get(key) for key in ("pcr", "type", "size", "data"))
            and all(
                want.get("digests", {}).get(bank) == have.get("digests", {}).get(bank) for bank in common
            )
        )
        if not same:
            return (
                f"the log differs from the reference state of launch `{kind}` at event #{index} "
                f"(counting events in PCR{','.join(map(str, compared))}): expected "
                f"{describe(want, common)}, the log has {describe(have, common)}"
            )
    # Same events, so the same values; checked all the same, as a guard against an event the
    # comparison above did not see (the reference state's values are what the TPM policy pins).
    for bank in common:
        for pcr, value in entry["pcrs"][bank].items():
            replayed = log.get("pcrs", {}).get(bank, {}).get(pcr, "00" * (len(value) // 2))
            if replayed != value:
                return f"PCR{pcr} {bank} replays to {replayed}, the reference state has {value}"
    return ""


def tpm_policy(
    refstate: Mapping[str, Any], launch: str, bank: str, extra: Optional[Dict[int, str]] = None
) -> Dict[str, Any]:
    """Keylime's TPM policy (`keylime_tenant --tpm_policy`) pinning the reference state's PCR
    values of `launch` in `bank`, plus `extra` values (PCR17/18 of TXT and SKINIT launches are
    the platform's and SINIT's golden values, which no bundle predicts)."""
    check_refstate(refstate)
    entry = refstate["launches"].get(launch)
    if entry is None:
        raise RefstateError(f"the reference state has no launch `{launch}` (it has: {', '.join(refstate['launches'])})")
    values = entry["pcrs"].get(bank)
    if values is None:
        raise RefstateError(f"the reference state has no bank `{bank}` (it has: {', '.join(entry['pcrs'])})")
    policy: Dict[str, Any] = {pcr: [value] for pcr, value in values.items()}
    for pcr, value in (extra or {}).items():
        policy[str(pcr)] = [value.lower()]
    missing = sorted(SLIPWAY_PCRS - {int(pcr) for pcr in policy})
    if missing:
        raise RefstateError(
            f"launch `{launch}` does not fix PCR{','.join(map(str, missing))}: give their golden values (--pcr N=HEX)"
        )
    mask = 0
    for pcr in policy:
        mask |= 1 << int(pcr)
    policy["mask"] = hex(mask)
    return policy
