"""Slipway for Keylime: a measured-boot policy and event-log parser for Slipway machines.

- :mod:`slipway_keylime.eventlog`: Slipway's crypto-agile log, parsed and decoded (standard
  library only; pinned to the Rust decoder by Slipway's tests).
- :mod:`slipway_keylime.refstate`: a parsed log checked against `cargo xtask refstate`'s
  reference state; Keylime TPM policies from it.
- :mod:`slipway_keylime.keylime_policy`: the Keylime plug-in (`measured_boot_imports`).
- `python -m slipway_keylime`: decode, evaluate, tpm-policy, check (with Keylime's own code).
"""
