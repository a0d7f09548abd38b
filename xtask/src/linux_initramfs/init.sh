#!/bin/sh
# /init of Slipway's Linux domains (busybox sh). Rendered by xtask (linux_initramfs.rs): every
# name between at-signs is a constant filled in at build time from its one definition in Rust.
#
# The kernel command line chooses the role:
#   slipway.role=attest  quote PCR17-21 with the nonce typed on the console and print the
#                        transcript `cargo xtask verify` checks (images/guests/attest/README.md)
#   slipway.role=info    print the CPU count and the memory size
#   slipway.interactive  afterwards, a busybox shell on the console instead of powering off
# Every failure prints `<role>: error <step>: <why>` and ends the role (never a silent hang).

export PATH=/bin:/usr/bin
export LD_LIBRARY_PATH=@LIBRARY_PATH@
export TPM2TOOLS_TCTI=@TCTI@
umask 077
# No pathname expansion: words of the command line and tool output are data, never patterns.
set -f
P='slipway-init: '
interactive=

finish() {
	# Offer the shell on the console (`cargo xtask run --interactive` answers `shell`; a plain
	# run answers at once with anything else; nobody answering powers off after the wait).
	if [ -z "$interactive" ]; then
		echo "@SHELL_OFFER@"
		answer=
		read -r -t @SHELL_OFFER_SECONDS@ answer < /dev/console
		[ "$answer" = "@SHELL_ANSWER@" ] && interactive=1
	fi
	if [ -n "$interactive" ]; then
		echo "${P}slipway.interactive: a busybox shell on the console"
		exec setsid cttyhack sh
	fi
	echo "${P}powering off (exit $1)"
	# Let the console drain first: the UART has no interrupt, so Linux sends the tty's queue a
	# FIFO at a time from a timer. stty's TCSADRAIN waits for the queue, the sleep for the
	# last FIFO; a power-off before would cut the transcript short.
	stty -F /dev/console "$(stty -F /dev/console -g)" 2>/dev/null
	sleep 1
	poweroff -f
	# Only if the power-off itself failed: init exits, and the kernel's panic shows it.
	exit "$1"
}

fail() {
	echo "${P}error $1: $2"
	finish 1
}

/bin/busybox --install -s /bin || { echo "${P}error busybox: --install failed"; exit 1; }
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc || fail mount "cannot mount /proc"
mount -t sysfs sysfs /sys || fail mount "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail mount "cannot mount devtmpfs on /dev"
mount -t securityfs securityfs /sys/kernel/security || fail mount "cannot mount securityfs"
# Kernel messages would interleave with the transcript's lines on the same console.
echo 1 > /proc/sys/kernel/printk

role=
for word in $(cat /proc/cmdline); do
	case "$word" in
	slipway.role=*) role=${word#slipway.role=} ;;
	slipway.interactive) interactive=1 ;;
	esac
done

# A blob of the transcript: begin KIND LENGTH, base64 lines of @B64_CHUNK@ bytes, end KIND.
blob() {
	size=$(wc -c < "$2") || fail "$1" "cannot read $2"
	echo "${P}begin $1 $size"
	base64 -w @B64_COLUMNS@ "$2" | sed "s/^/${P}b64 /"
	echo "${P}end $1"
}

# The nonce line: hex digits (optionally 0x-prefixed, blanks ignored), 1-@MAX_NONCE@ bytes.
# Prints the refusal and returns 1 if the line is not one.
check_nonce() {
	n=$(echo "$1" | tr -d ' \t\r')
	n=${n#0x}
	why=
	case "$n" in
	'') why="the nonce line is empty" ;;
	*[!0-9a-fA-F]*) why="the nonce line has a character that is not a hex digit" ;;
	esac
	if [ -z "$why" ] && [ $((${#n} % 2)) -ne 0 ]; then
		why="the nonce has an odd number of hex digits"
	elif [ -z "$why" ] && [ "${#n}" -gt $((2 * @MAX_NONCE@)) ]; then
		why="the nonce is longer than @MAX_NONCE@ bytes"
	fi
	if [ -n "$why" ]; then
		echo "${P}refused nonce: $why"
		return 1
	fi
	nonce=$(echo "$n" | tr A-F a-f)
}

# TPM_ALG_ID of a bank name as tpm2-tools prints it.
alg_id() {
	case "$1" in
	sha1) echo 0x0004 ;;
	sha256) echo 0x000b ;;
	sha384) echo 0x000c ;;
	sha512) echo 0x000d ;;
	sm3_256) echo 0x0012 ;;
	*) return 1 ;;
	esac
}

# The firmware's log from its window (a reserved region, not RAM, so /dev/mem may read it):
# a 16-byte descriptor (magic SLWYLOG\0, u32 length, u32 0), then the log.
firmware_log() {
	gpa=@FIRMWARE_LOG_GPA@
	if ! dd if=/dev/mem of=/tmp/fw.desc bs=16 count=1 skip=$((gpa / 16)) 2>/dev/null ||
		[ "$(head -c 7 /tmp/fw.desc)" != "SLWYLOG" ] ||
		[ "$(od -An -tu1 -j7 -N1 /tmp/fw.desc | tr -d ' ')" != 0 ]; then
		# Not under Slipway (or no window mapped): the transcript's firmware log is optional.
		echo "${P}firmware log window absent at $(printf '0x%x' "$gpa") (no SLWYLOG descriptor)"
		return 0
	fi
	len=$(od -An -tu4 -j8 -N4 /tmp/fw.desc | tr -d ' ')
	reserved=$(od -An -tu4 -j12 -N4 /tmp/fw.desc | tr -d ' ')
	[ "$reserved" = 0 ] || fail firmware-log "the window descriptor's reserved word is $reserved, not 0"
	if [ "$len" = 0 ]; then
		echo "${P}firmware-log none"
		return 0
	fi
	[ "$len" -le @LOG_WINDOW_CAPACITY@ ] || fail firmware-log "the descriptor's length $len runs past the window"
	dd if=/dev/mem bs=4096 skip=$((gpa / 4096)) count=$(((16 + len + 4095) / 4096)) 2>/dev/null |
		tail -c +17 | head -c "$len" > /tmp/firmware.log
	[ "$(wc -c < /tmp/firmware.log)" = "$len" ] || fail firmware-log "/dev/mem gave fewer than $len bytes of the window"
	blob firmware-log /tmp/firmware.log
}

attest() {
	P='@PREFIX@'
	log=/sys/kernel/security/tpm0/binary_bios_measurements
	[ -c /dev/tpmrm0 ] || fail tpm "no /dev/tpmrm0: the kernel found no TPM"
	[ -r "$log" ] || fail event-log "no $log: the TPM is not an ACPI device with a TPM2 table log area"
	cat "$log" > /tmp/slipway.log || fail event-log "cannot read $log"
	echo "${P}tpm2_eventlog $log:"
	tpm2_eventlog "$log" || fail tpm2_eventlog "tpm2_eventlog cannot parse $log"

	# The active banks: those with PCRs selected in `tpm2_getcap pcrs` (`  - sha256: [ 0, 1, ...`).
	tpm2_getcap pcrs > /tmp/pcrs.yaml || fail getcap "tpm2_getcap pcrs failed"
	banks=$(sed -n 's/^ *- \([a-z0-9_]*\): *\[ *[0-9].*/\1/p' /tmp/pcrs.yaml)
	[ -n "$banks" ] || fail getcap "the TPM has no active PCR bank"
	ids= selection=
	for bank in $banks; do
		id=$(alg_id "$bank") || fail getcap "unknown bank $bank"
		ids="$ids $id"
		selection="${selection:+$selection+}$bank:@QUOTE_PCRS@"
	done

	# The attestation key: slipway-tpm's AkTemplate::EccP256 (measure/tpm/README.md), the key
	# slipway-guest-attest creates: a primary restricted ECDSA-P256-SHA256 signing key of the
	# endorsement hierarchy, nameAlg SHA-256, empty auth and policy.
	tpm2_createprimary -Q -C e -g sha256 -G ecc256:ecdsa-sha256:null \
		-a '@AK_ATTRIBUTES@' -c /tmp/ak.ctx ||
		fail attestation-key "tpm2_createprimary failed"
	tpm2_readpublic -Q -c /tmp/ak.ctx -o /tmp/ak.tpm2b || fail attestation-key "tpm2_readpublic failed"
	# TPM2B_PUBLIC to TPMT_PUBLIC: drop the 2-byte size.
	tail -c +3 /tmp/ak.tpm2b > /tmp/ak.pub
	echo "${P}attestation key created (tpm2_createprimary, endorsement hierarchy, ECC P-256)"

	nonce=
	while [ -z "$nonce" ]; do
		echo "@NONCE_PROMPT@"
		IFS= read -r line || fail nonce "the console closed before a nonce was typed"
		check_nonce "$line" || nonce=
	done
	echo "${P}nonce $nonce"
	echo "${P}banks$ids"

	tpm2_quote -Q -c /tmp/ak.ctx -l "$selection" -q "$nonce" -g sha256 \
		-m /tmp/quote.msg -s /tmp/quote.sig -o /tmp/quote.pcrs ||
		fail quote "tpm2_quote failed"

	blob ak-public /tmp/ak.pub
	blob quote-attest /tmp/quote.msg
	blob quote-signature /tmp/quote.sig
	blob slipway-log /tmp/slipway.log
	firmware_log

	# Diagnostics only (the verifier never trusts them): `pcr <n> <alg> <hex>`.
	tpm2_pcrread "$selection" > /tmp/pcrread.yaml || fail pcrread "tpm2_pcrread failed"
	awk -v p="$P" '
		/^  [a-z0-9_]+:$/ { bank = $1; sub(":", "", bank) }
		/^    *[0-9]+ *: 0x/ { n = $1; sub(":", "", n); v = $NF; sub("0x", "", v); print p "pcr " n " " bank " " tolower(v) }
	' /tmp/pcrread.yaml
	echo "${P}done"
	finish 0
}

info() {
	P='@INFO_PREFIX@'
	cpus=$(nproc) || fail nproc "nproc failed"
	mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
	[ -n "$mem" ] || fail meminfo "no MemTotal in /proc/meminfo"
	echo "${P}nproc $cpus"
	echo "${P}memtotal-kib $mem"
	echo "${P}done"
	finish 0
}

case "$role" in
attest) attest ;;
info) info ;;
*) fail role "the kernel command line has no slipway.role=attest|info (found '${role}')" ;;
esac
