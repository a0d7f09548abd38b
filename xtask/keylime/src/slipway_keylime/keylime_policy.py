"""Slipway's plug-in for Keylime's measured-boot attestation (Keylime 7.14, `keylime.mba`).

Configure a verifier (`/etc/keylime/verifier.conf`, section `[verifier]`)::

    measured_boot_imports = ['slipway_keylime.keylime_policy']
    measured_boot_policy_name = slipway

What Keylime does with it (read in keylime/mba/mba.py, keylime/tpm/tpm_main.py,
keylime/mba/elchecking/elchecker.py):

- `mba.load_imports()` imports the modules of `measured_boot_imports` before its own
  defaults, and `mba._find_implementation` takes each function from the first module that
  defines it. This module defines only `bootlog_parse`: Keylime's own `policy_load`,
  `policy_is_valid` and `bootlog_evaluate` (elchecker) stay in charge.
- `bootlog_parse` parses Slipway's log with :mod:`slipway_keylime.eventlog` (numeric event
  types kept, data decoded) and returns the log replayed from 0 for the quote's bank; any other
  log (its header's vendor info is not `slipway`) goes to Keylime's own `tpm2_eventlog`
  parser, so one verifier can serve Slipway machines and others.
- Importing this module registers the policy `slipway` with
  `keylime.mba.elchecking.policies`; elchecker's `bootlog_evaluate` runs it when
  `measured_boot_policy_name = slipway`, with the agent's `mb_policy` (the output of
  `cargo xtask refstate`) as reference state. Its relevant PCRs are 17-21, so elchecker refuses
  to evaluate ("missing_pcrs") unless the quote's PCR17-21 were checked, which Keylime 7.14 does
  only for PCRs pinned in the agent's TPM policy: pin them (`python -m slipway_keylime
  tpm-policy`).
"""

import base64
import typing

from keylime.failure import Component, Failure
from keylime.mba.elchecking import policies, tests

from . import eventlog, refstate

POLICY_NAME = "slipway"
VENDOR_INFO = b"slipway"


def is_slipway_log(log: bytes) -> bool:
    """Whether the log's Spec ID header names Slipway as its vendor."""
    try:
        header, _ = eventlog.parse(log)
    except eventlog.LogError:
        # Not even a crypto-agile log: still Slipway's parser, which names the problem.
        return len(log) >= 8 and log[4:8] == b"\x03\x00\x00\x00"
    return header.vendor_info == VENDOR_INFO


def bootlog_parse(bootlog_b64: typing.Optional[str], hash_alg: typing.Any) -> typing.Tuple[dict, typing.Any, dict, Failure]:
    """Keylime's `mba.bootlog_parse`: (PCR values of bank `hash_alg` by PCR index as decimal
    strings, boot aggregates, the parsed log, failures)."""
    failure = Failure(Component.MEASURED_BOOT, ["parser"])
    if not bootlog_b64:
        return {}, None, {}, failure
    try:
        raw = base64.b64decode(bootlog_b64, validate=True)
    except ValueError as e:
        failure.add_event("log.base64decode", f"Measured boot log could not be decoded: {e}", True)
        return {}, None, {}, failure
    if not is_slipway_log(raw):
        # pylint: disable=import-outside-toplevel
        from keylime.mba.elparsing import tpm2_tools_elparser

        return tpm2_tools_elparser.bootlog_parse(bootlog_b64, hash_alg)
    try:
        parsed = eventlog.log_json(raw)
    except eventlog.LogError as e:
        failure.add_event("slipway_log", {"context": "Slipway event log is malformed", "error": str(e)}, True)
        return {}, None, {}, failure
    bank = str(hash_alg)
    values = parsed["pcrs"].get(bank)
    if not values:
        failure.add_event(
            "invalid_pcrs_hashes",
            {"context": f"the Slipway log has no {bank} digests", "banks": list(parsed["pcrs"])},
            True,
        )
        return {}, None, {}, failure
    # Boot aggregates are IMA's (PCR0-9 of the firmware's log); Slipway's log has none.
    return {pcr: int(value, 16) for pcr, value in values.items()}, {}, parsed, failure


class _SlipwayTest(tests.Test):
    def __init__(self, reference: typing.Mapping[str, typing.Any]):
        refstate.check_refstate(reference)
        self.reference = reference

    def why_not(self, globs: tests.Globals, subject: tests.Data) -> str:
        return refstate.evaluate(self.reference, subject)  # type: ignore[arg-type]


class SlipwayPolicy(policies.Policy):
    """Accepts a Slipway log that is the predicted launch in the reference state."""

    def get_relevant_pcrs(self) -> typing.FrozenSet[int]:
        return refstate.SLIPWAY_PCRS

    def refstate_to_test(self, reference: policies.RefState) -> tests.Test:
        return _SlipwayTest(reference)


policies.register(POLICY_NAME, SlipwayPolicy())
