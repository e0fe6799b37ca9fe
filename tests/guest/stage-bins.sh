# Sourced by the host scripts in tests/guest/: puts the host-built udrbd + drbdadm (+ drbdsetup,
# which the OCF agent reads the state with) on a small read-only ext4 disk (label 'udrbdbin')
# for the guests, as $GUESTLAB/udrbd-pair.sh does (factored out here so the shared lab stays
# untouched).  Needs $LAB and lab_check_built from $GUESTLAB/lib.sh.
#
# stage_bins BIN_DIR WORK_DIR TAG
#   BIN_DIR  holds 'udrbd', 'drbdadm' and 'drbdsetup' (host-built, e.g. <repo>/target/release)
#   WORK_DIR where the staging directory and the image go (e.g. $LAB/blockdev)
#   TAG      unique suffix (timestamp-pid)
# Sets BIN_IMG (the image) and BIN_STAGE (the staging dir; stage_bins_cleanup removes both
# unless KEEP_BIN_IMG=1).  Prints 'host: ...' lines.  Returns 2 when the binaries cannot run in
# the guest: the ELF interpreter and every NEEDED library must exist in the guest rootfs
# (Debian 12, glibc 2.36); a library it lacks is copied from the host into the disk's lib/
# (the guest then sets LD_LIBRARY_PATH); a too-new GLIBC_x.y symbol version is a hard error.
# $UDRBD_CONF, if set, is copied onto the disk as udrbd.conf (the guest then uses it verbatim).
# The Pacemaker agents go to ocf/ on the disk, laid out as an OCF_ROOT (the guest image has no
# Pacemaker and no resource-agents): ocf/resource.d/udrbd/udrbd (the repository's ocf/udrbd,
# where scripts/install-ocf.sh puts it), ocf/resource.d/heartbeat/Filesystem and
# ocf/lib/heartbeat/* (ocf-shellfuncs and what it sources) from the host's resource-agents in
# $HOST_OCF_ROOT (default /usr/lib/ocf).  A host without resource-agents gets a WARNING and a
# disk without them (the guest then fails its ocf-* checks).

stage_bins() {
  local bin=$1 work=$2 tag=$3 b f interp KB MB
  BIN_STAGE=$work/bin-$tag.d BIN_IMG=$work/bin-$tag.img
  for b in udrbd drbdadm drbdsetup; do
    [[ -f $bin/$b && -x $bin/$b ]] || { echo "host: ERROR missing executable $bin/$b"; return 2; }
  done
  rm -rf "$BIN_STAGE"; mkdir -p "$BIN_STAGE/lib"
  cp -L "$bin/udrbd" "$bin/drbdadm" "$bin/drbdsetup" "$BIN_STAGE/"
  [[ -n ${UDRBD_CONF:-} ]] && cp "$UDRBD_CONF" "$BIN_STAGE/udrbd.conf"

  _SB_R=$LAB/rootfs
  _SB_GLIBC=$(sed -n '/^Package: libc6$/,/^$/s/^Version: \([0-9.]*\).*/\1/p' "$_SB_R/var/lib/dpkg/status" | head -1)
  _SB_OK=1
  _sb_stage_ocf || _SB_OK=0
  for b in udrbd drbdadm drbdsetup $_SB_OCF_SCRIPTS; do
    f=$BIN_STAGE/$b
    if [[ $(head -c 4 "$f" | tail -c 3) == ELF ]]; then
      echo "host: $b: $(file -b "$f" | cut -c1-110)"
      readelf -h "$f" | grep -q 'Machine:.*X86-64' || { echo "host: ERROR $b is not an x86-64 ELF"; _SB_OK=0; }
      _sb_check_elf "$f"
    else
      interp=$(head -1 "$f" | sed -n 's/^#! *\([^ ]*\).*/\1/p')
      echo "host: $b: script for ${interp:-?} ($(stat -c %s "$f") bytes)"
      [[ -n $interp && -x $_SB_R$interp ]] || { echo "host: ERROR $b: interpreter '${interp:-none}' missing in the guest"; _SB_OK=0; }
    fi
  done
  rmdir "$BIN_STAGE/lib" 2>/dev/null
  ((_SB_OK)) || return 2
  (cd "$BIN_STAGE" && find . -type f | sed 's|^\./||' | sort | xargs sha256sum) > "$work/SHA256SUMS.$tag" \
    && mv "$work/SHA256SUMS.$tag" "$BIN_STAGE/SHA256SUMS"
  KB=$(du -sk --apparent-size "$BIN_STAGE" | cut -f1)
  MB=$(( KB * 5 / 4 / 1024 + 16 ))
  rm -f "$BIN_IMG"; truncate -s "${MB}M" "$BIN_IMG"
  mkfs.ext4 -q -F -L udrbdbin -O ^has_journal -E root_owner=0:0 -d "$BIN_STAGE" "$BIN_IMG" \
    || { echo "host: ERROR mkfs.ext4 -d failed"; return 2; }
  echo "host: binaries disk $BIN_IMG (${MB} MiB, ro ext4 'udrbdbin'): $(cd "$BIN_STAGE" && find . -type f -not -path './ocf/*' | sed 's|^\./||' | sort | tr '\n' ' ')ocf/ ($(find "$BIN_STAGE/ocf" -type f | wc -l) files)"
}

# _sb_stage_ocf: the OCF tree under $BIN_STAGE/ocf; sets _SB_OCF_SCRIPTS (the executables, for
# the interpreter check).  Returns 1 only when the repository's agent is missing.
_sb_stage_ocf() {
  local host=${HOST_OCF_ROOT:-/usr/lib/ocf} agent f
  agent=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ocf/udrbd
  _SB_OCF_SCRIPTS=
  [[ -f $agent ]] || { echo "host: ERROR missing $agent"; return 1; }
  mkdir -p "$BIN_STAGE/ocf/resource.d/udrbd"
  install -m 0755 "$agent" "$BIN_STAGE/ocf/resource.d/udrbd/udrbd"
  _SB_OCF_SCRIPTS="ocf/resource.d/udrbd/udrbd"
  if [[ ! -r $host/lib/heartbeat/ocf-shellfuncs || ! -f $host/resource.d/heartbeat/Filesystem ]]; then
    echo "host: WARNING no resource-agents in $host (ocf-shellfuncs, Filesystem): the guest's ocf-* checks will fail (apt-get install resource-agents)"
    return 0
  fi
  mkdir -p "$BIN_STAGE/ocf/lib/heartbeat" "$BIN_STAGE/ocf/resource.d/heartbeat"
  # the files only (not lib/heartbeat/__pycache__), modes kept
  for f in "$host"/lib/heartbeat/*; do
    [[ -f $f ]] && cp -L -p "$f" "$BIN_STAGE/ocf/lib/heartbeat/"
  done
  cp -L -p "$host/resource.d/heartbeat/Filesystem" "$BIN_STAGE/ocf/resource.d/heartbeat/"
  _SB_OCF_SCRIPTS+=" ocf/resource.d/heartbeat/Filesystem"
  echo "host: OCF_ROOT ocf/ from $agent and $host (resource-agents $(dpkg-query -W -f '${Version}' resource-agents 2>/dev/null || echo '?')): resource.d/udrbd/udrbd resource.d/heartbeat/Filesystem lib/heartbeat/ ($(find "$BIN_STAGE/ocf/lib/heartbeat" -type f | wc -l) files)"
}

_sb_guest_has() {
  local d
  for d in usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu usr/lib64 lib64 usr/lib lib usr/local/lib; do
    [[ -e $_SB_R/$d/$1 ]] && return 0
  done
  return 1
}

# _sb_check_elf FILE: interpreter, GLIBC symbol versions and NEEDED libraries against the guest rootfs
_sb_check_elf() {
  local f=$1 interp maxg need hp
  interp=$(readelf -l "$f" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  if [[ -n $interp && ! -e $_SB_R$interp ]]; then
    echo "host: ERROR $(basename "$f") needs the ELF interpreter $interp, which the guest lacks"; _SB_OK=0
  fi
  maxg=$(objdump -T "$f" 2>/dev/null | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/^GLIBC_//' | sort -uV | tail -1)
  if [[ -n $maxg && -n $_SB_GLIBC && $(printf '%s\n%s\n' "$maxg" "$_SB_GLIBC" | sort -V | tail -1) != "$_SB_GLIBC" ]]; then
    echo "host: ERROR $(basename "$f") needs GLIBC_$maxg, the guest has $_SB_GLIBC (build on Debian 12, or static/musl)"; _SB_OK=0
  fi
  for need in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    _sb_guest_has "$need" && continue
    [[ -e $BIN_STAGE/lib/$need ]] && continue
    hp=$(ldconfig -p | awk -v n="$need" '$1 == n && /x86-64/ { print $NF; exit }')
    if [[ -z $hp ]]; then
      echo "host: ERROR $(basename "$f") needs $need: neither the guest rootfs nor the host has it"; _SB_OK=0; continue
    fi
    cp -L "$hp" "$BIN_STAGE/lib/$need"
    echo "host: bundling $need from $hp (not in the guest rootfs)"
    _sb_check_elf "$BIN_STAGE/lib/$need"
  done
}

stage_bins_cleanup() {
  [[ -n ${BIN_STAGE:-} ]] && rm -rf "$BIN_STAGE"
  [[ ${KEEP_BIN_IMG:-0} == 1 || -z ${BIN_IMG:-} ]] || rm -f "$BIN_IMG"
}
