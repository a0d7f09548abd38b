"""`python -m slipway_keylime COMMAND ...` (also the `slipway-keylime` script).

  decode LOG                       the log as JSON (slipway-log/1), as `cargo xtask log --json`
  evaluate REFSTATE LOG            the Slipway policy's decision on a binary log (exit 0 accepted,
                                   1 rejected, 2 bad input)
  tpm-policy REFSTATE [--launch emulated] [--bank sha256] [--pcr N=HEX]...
                                   Keylime's TPM policy pinning the reference PCR17-21 values
  check --refstate R --log L [--bank sha256]
        [--quote Q --ak AK.pub --nonce HEX [--tpm-policy P]]
                                   run Keylime's own verifier code on the evidence, configured
                                   as docs/fleet.md says: its measured-boot engine
                                   (mba.bootlog_parse + bootlog_evaluate with this policy) and,
                                   with a quote, Tpm.check_quote (signature, nonce, PCR values
                                   against the TPM policy, then the measured-boot engine); prints
                                   JSON, exit 0 only if every layer accepts
"""

import argparse
import base64
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from . import eventlog, refstate

VERIFIER_CONFIG = """[verifier]
measured_boot_imports = ['slipway_keylime.keylime_policy']
measured_boot_policy_name = slipway
measured_boot_evaluate = always
"""


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def cmd_decode(args: argparse.Namespace) -> int:
    print(json.dumps(eventlog.log_json(_read(args.log)), indent=2, sort_keys=True))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    reason = refstate.evaluate(_read_json(args.refstate), eventlog.log_json(_read(args.log)))
    if reason:
        print(f"REJECTED: {reason}")
        return 1
    print("ACCEPTED: the log is the reference state's predicted launch")
    return 0


def cmd_tpm_policy(args: argparse.Namespace) -> int:
    extra: Dict[int, str] = {}
    for item in args.pcr or []:
        pcr, _, value = item.partition("=")
        if not pcr.isdigit() or not value:
            raise refstate.RefstateError(f"--pcr {item!r}: expected N=HEX")
        extra[int(pcr)] = value
    policy = refstate.tpm_policy(_read_json(args.refstate), args.launch, args.bank, extra)
    print(json.dumps(policy, indent=2, sort_keys=True))
    return 0


def _events(failure: Any) -> List[Dict[str, Any]]:
    return [
        {"event_id": e.event_id, "context": json.loads(e.context), "recoverable": e.recoverable}
        for e in failure.events
    ]


def cmd_check(args: argparse.Namespace) -> int:
    # Keylime reads its configuration when first asked; give it the verifier settings of
    # docs/fleet.md before importing it.
    config_dir = tempfile.mkdtemp(prefix="slipway-keylime-")
    config_path = os.path.join(config_dir, "verifier.conf")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(VERIFIER_CONFIG)
    os.environ["KEYLIME_VERIFIER_CONFIG"] = config_path
    # pylint: disable=import-outside-toplevel
    from keylime.common.algorithms import Hash
    from keylime.mba import mba

    mba.load_imports()
    reference = _read_json(args.refstate)
    reference_text = json.dumps(reference)
    log = _read(args.log)
    result: Dict[str, Any] = {}

    # The measured-boot engine alone, as the verifier calls it.
    pcrs, _, parsed, parse_failure = mba.bootlog_parse(base64.b64encode(log).decode(), Hash(args.bank))
    if parse_failure:
        result["measured_boot"] = {"accepted": False, "events": _events(parse_failure)}
    else:
        failure = mba.bootlog_evaluate(reference_text, parsed, set(refstate.SLIPWAY_PCRS), "slipway-check")
        result["measured_boot"] = {"accepted": not failure, "events": _events(failure)}
    result["measured_boot"]["parser"] = parsed.get("format") if isinstance(parsed, dict) else None
    result["measured_boot"]["pcrs"] = {pcr: f"{value:x}" for pcr, value in pcrs.items()}

    if args.quote:
        from keylime.tpm.tpm_main import Tpm

        policy: Optional[Any] = _read_json(args.tpm_policy) if args.tpm_policy else None
        failure = Tpm().check_quote(
            None,
            bytes.fromhex(args.nonce),
            None,
            _read(args.quote).decode().strip(),
            _read(args.ak),
            tpm_policy=policy,
            hash_alg=Hash(args.bank),
            mb_measurement_list=log,
            mb_policy=reference_text,
            mb_policy_name="slipway",
            count=0,
        )
        result["quote"] = {"accepted": not failure, "events": _events(failure)}
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if all(layer["accepted"] for layer in result.values()) else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway-keylime", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("decode", help="a binary log as JSON (slipway-log/1)")
    p.add_argument("log")
    p.set_defaults(run=cmd_decode)
    p = sub.add_parser("evaluate", help="the Slipway policy's decision on a log")
    p.add_argument("refstate")
    p.add_argument("log")
    p.set_defaults(run=cmd_evaluate)
    p = sub.add_parser("tpm-policy", help="Keylime's TPM policy pinning PCR17-21")
    p.add_argument("refstate")
    p.add_argument("--launch", default="emulated")
    p.add_argument("--bank", default="sha256")
    p.add_argument("--pcr", action="append", help="N=HEX: a golden value the bundle cannot predict")
    p.set_defaults(run=cmd_tpm_policy)
    p = sub.add_parser("check", help="Keylime's own verifier code on the evidence")
    p.add_argument("--refstate", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--bank", default="sha256")
    p.add_argument("--quote", help="file with Keylime's quote string (r<attest>:<sig>:<pcrs>)")
    p.add_argument("--ak", help="the attestation key as TPM2B_PUBLIC (cargo xtask export: ak.pub)")
    p.add_argument("--nonce", help="the nonce sent, hex")
    p.add_argument("--tpm-policy", help="Keylime TPM policy JSON (tpm-policy's output)")
    p.set_defaults(run=cmd_check)
    args = parser.parse_args(argv)
    if args.command == "check" and args.quote and not (args.ak and args.nonce):
        parser.error("check --quote needs --ak and --nonce")
    try:
        return int(args.run(args))
    except (OSError, ValueError) as e:
        print(f"slipway-keylime: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
