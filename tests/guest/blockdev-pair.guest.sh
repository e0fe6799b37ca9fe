# Guest scenario for tests/guest/blockdev-pair.sh (runs in both guests; ROLE=a drives).
# udrbd's kernel block device: 'drbdadm up' makes /dev/drbd0 (a kernel NBD device the daemon
# connects to its own export over netlink), /dev/drbd/by-res/r0 and /dev/drbd/by-disk/vdb
# (the links drbdadm sh-udev names for a volume without a 'volume' section); on top of it the
# Proxmox how-to stack (fdisk -> kpartx -> LVM -> ext4); 'secondary'/'down' refused with
# "(-12) Device is held open by someone" (exit 11) while anything holds it; a Secondary reads
# its local disk and fails writes with EIO; fio through /dev/drbd0; the daemon killed (-9) and
# restarted finds its kernel device again; 'down' removes the links and disconnects it.
# In between, the Pacemaker agents run as Pacemaker would run them for a promotable udrbd clone
# with a Filesystem on top (there is no Pacemaker in the guest): ocf/udrbd monitor/promote/
# demote and ocf:heartbeat:Filesystem start/monitor/stop, 'demote' failing while mounted.
# Env: ROLE(a|b) MY_IP PEER_IP FIO_RUNTIME FIO_DEPTHS FIO_SIZE DRBD_PROTOCOL RESYNC_RATE
#      ADM_TIMEOUT DLOG_LINES LVM_FILTER(default|backing|none)
# LVM filter (devices/global_filter in /etc/lvm/lvm.conf, as the DRBD/Proxmox how-tos set one):
#   backing = reject the backing disk /dev/vdb* (the how-to's filter: after a reboot the kernel
#             shows the backing disk's partition, a duplicate of the PV on /dev/mapper/drbd0p1)
#   default = backing + reject kernel partitions of nbd devices (/dev/nbdNpM): the guest's 6.1
#             kernel scans partitions on an nbd device even with 'modprobe nbd max_part=0', and
#             /dev/nbd0p1 next to /dev/mapper/drbd0p1 makes vgcreate/vgchange refuse (duplicate
#             PVs); the README tells operators to add that rule.  The INFO line after kpartx
#             says whether the kernel made partitions.
#   none    = no filter
# Disks: /dev/vdb = udrbd backing disk (both); /dev/vdc = raw baseline disk (a, if staged);
#        the disk labelled 'udrbdbin' (read-only ext4) = the host-built udrbd + drbdadm +
#        drbdsetup, and ocf/ = an OCF_ROOT with ocf/udrbd and the host's resource-agents
#        (lib/heartbeat/*, resource.d/heartbeat/Filesystem), see stage-bins.sh.
# Every wait is bounded; the two guests meet at barriers (msg_send/msg_recv over nc, as the
# lab's guest/udrbd-pair.sh) and run the same barrier sequence whatever fails in between.
. /lab/run/lib
FIO_RUNTIME=${FIO_RUNTIME:-20}
FIO_DEPTHS=${FIO_DEPTHS:-"1 32"}
DRBD_PROTOCOL=${DRBD_PROTOCOL:-C}
RESYNC_RATE=${RESYNC_RATE:-400M}
ME=$(hostname)
if [ "$ROLE" = a ]; then PEER_NAME=drbdb; else PEER_NAME=drbda; fi
CTL_PORT=9000
UB=/opt/udrbd                     # mount point of the read-only binaries disk
CONF=/etc/udrbd.conf
export UDRBD_RUN_DIR=/run/udrbd
RUN=$UDRBD_RUN_DIR
DLOG=/tmp/udrbd.log
UPID=
KDEV=/dev/drbd0                   # the kernel device, as the config's 'device' names it
BYRES=/dev/drbd/by-res/r0         # sh-udev's SYMLINK_BY_RES for an implicit volume
BYDISK=/dev/drbd/by-disk/vdb
PART=/dev/mapper/drbd0p1          # kpartx's name for partition 1 of /dev/drbd0
LV=/dev/drbdvg/lv0
MNT=/mnt/r0
NBD=                              # nbdX behind /dev/drbd0 after 'up' (e.g. nbd0)

# ---------------- coordination over the guest<->guest link (netcat) -------------------
# (same protocol as the lab's guest/drbd-pair.sh and guest/udrbd-pair.sh)
msg_send() {
  local i=0
  until echo "$*" | nc -N -w 10 "$PEER_IP" $CTL_PORT 2>/dev/null; do
    i=$((i+1)); [ $i -gt 3000 ] && { echo "msg_send '$*' gave up"; return 1; }
    sleep 0.2
  done
}
msg_recv() {
  local line
  line=$(timeout ${2:-900} nc -l $CTL_PORT < /dev/null)
  case $line in
    "$1"|"$1 "*) MSG=${line#"$1"}; MSG=${MSG# }; return 0;;
    *) echo "msg_recv: expected '$1', got '$line'"; MSG=; return 1;;
  esac
}
barrier() {
  if [ "$ROLE" = a ]; then msg_recv "$1" && msg_send "$1"; else msg_send "$1" && msg_recv "$1"; fi
}

# ---------------- udrbd admin + status parsing (as guest/udrbd-pair.sh) ---------------------
# adm ARGS...: the udrbd drbdadm (NOT the guest's /usr/sbin/drbdadm of drbd-utils)
adm() { timeout "${ADM_TIMEOUT:-120}" "$UB/drbdadm" -c "$CONF" --node "$ME" "$@"; }
# ust: parse 'drbdadm status r0' (DRBD 9 layout) into
#   ST_ROLE ST_PROLE ST_CONN(8.4-like cstate) ST_DISK ST_PDISK ST_DONE ST_OOS
ust() {
  local out
  out=$(timeout 20 "$UB/drbdadm" -c "$CONF" --node "$ME" status r0 2>/dev/null)
  if [ -z "$out" ]; then ST_ROLE=Unknown ST_PROLE=Unknown ST_CONN=NoStatus ST_DISK=DUnknown ST_PDISK=DUnknown ST_DONE= ST_OOS=; return 1; fi
  eval "$(printf '%s\n' "$out" | awk '
    function kv(line, i, n, f, p) { delete V; n = split(line, f, /[ \t]+/)
      for (i = 1; i <= n; i++) { p = index(f[i], ":"); if (p > 1) V[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) } }
    { match($0, /^ */); ind = RLENGTH; kv($0)
      if (("out-of-sync" in V) && V["out-of-sync"] ~ /^[0-9]+$/) oos = V["out-of-sync"]
      if (ind == 0 && NR == 1) { role = V["role"]; next }
      if (ind == 2) {
        if ($1 ~ /^(disk|volume):/) { if ("disk" in V) disk = V["disk"] }
        else if ($1 !~ /:/) { peer = $1; if ("connection" in V) conn = V["connection"]; if ("role" in V) prole = V["role"] }
      } else if (ind == 4) {
        if ("replication" in V) repl = V["replication"]
        if ("peer-disk" in V) pdisk = V["peer-disk"]
        if ("done" in V) done = V["done"]
      } }
    END {
      if (conn == "") {
        if (peer == "") conn = "StandAlone"
        else if (repl == "" || repl == "Established" || repl == "Off") conn = "Connected"
        else conn = repl
      }
      if (conn != "Connected" && conn !~ /^(Sync|PausedSync|Verify|WFBitMap|StartingSync)/) { if (prole == "") prole = "Unknown"; if (pdisk == "") pdisk = "DUnknown" }
      printf "ST_ROLE=%s ST_PROLE=%s ST_CONN=%s ST_DISK=%s ST_PDISK=%s ST_DONE=%s ST_OOS=%s\n",
        role == "" ? "Unknown" : role, prole == "" ? "Unknown" : prole, conn,
        disk == "" ? "DUnknown" : disk, pdisk == "" ? "DUnknown" : pdisk, done, oos }')"
}
cstate() { ust; echo "$ST_CONN"; }
dstate() { ust; echo "$ST_DISK/$ST_PDISK"; }
role()   { ust; echo "$ST_ROLE/$ST_PROLE"; }
daemon_alive() { [ -n "$UPID" ] && kill -0 "$UPID" 2>/dev/null; }
# wait_for DESC TIMEOUT_S CMD...: poll CMD every 0.2 s; gives up at once when the daemon died
wait_for() {
  local desc=$1 tmo=$2 t0; shift 2; t0=$(now_ms)
  while ! "$@" >/dev/null 2>&1; do
    if [ -n "$UPID" ] && ! daemon_alive; then
      fail "$desc (the udrbd daemon died; log tail below)"; tail -20 $DLOG | sed 's/^/    | /'; return 1
    fi
    if [ $(( $(now_ms) - t0 )) -gt $((tmo*1000)) ]; then
      fail "$desc (timeout ${tmo}s; cstate=$(cstate) dstate=$(dstate) role=$(role))"; return 1
    fi
    sleep 0.2
  done
  WAITED_MS=$(( $(now_ms) - t0 ))
  pass "$desc (${WAITED_MS} ms)"
}
is_cstate() { ust; [ "$ST_CONN" = "$1" ]; }
is_linked() { ust; case $ST_CONN in Connected|Sync*|PausedSync*|WFBitMap*|WFSync*|StartingSync*|Verify*) return 0;; esac; return 1; }
is_dstate() { ust; [ "$ST_DISK/$ST_PDISK" = "$1" ]; }
is_role() { ust; [ "$ST_ROLE" = "$1" ]; }
is_peer_role() { ust; [ "$ST_PROLE" = "$1" ]; }

# run_fio LABEL DEV DEPTH: 4k randwrite direct, prints one RESULT-FIO line
# (byte-identical to the lab's guest/drbd-pair.sh; blockdev-pair.sh checks that on the host)
run_fio() {
  local label=$1 dev=$2 qd=$3
  fio --name="$label" --filename="$dev" --rw=randwrite --bs=4k --direct=1 \
      --ioengine=libaio --iodepth="$qd" --runtime="$FIO_RUNTIME" --time_based \
      --size="${FIO_SIZE:-256M}" --randrepeat=0 --norandommap --group_reporting \
      --output-format=json --output=/tmp/fio-$label-$qd.json > /tmp/fio.err 2>&1 \
    || { fail "fio $label qd=$qd"; cat /tmp/fio.err; return 1; }
  python3 - "$label" "$qd" /tmp/fio-$label-$qd.json <<'PY'
import json, sys
label, qd, path = sys.argv[1:4]
w = json.load(open(path))["jobs"][0]["write"]
pc = w["clat_ns"].get("percentile", {})
print("RESULT-FIO %-18s qd=%-3s iops=%8.0f bw=%7.1fMiB/s lat_mean=%8.1fus clat_p50=%8.1fus clat_p99=%8.1fus clat_p99.9=%8.1fus"
      % (label, qd, w["iops"], w["bw"] / 1024.0, w["lat_ns"]["mean"] / 1000.0,
         pc.get("50.000000", 0) / 1000.0, pc.get("99.000000", 0) / 1000.0, pc.get("99.900000", 0) / 1000.0))
PY
}

# ---------------- the kernel device ---------------------------------------------------------
# on_kdev CMD...: run CMD only if /dev/drbd0 is a block device (never let dd/fio create a
# regular file /dev/drbd0 when the daemon did not make the device)
on_kdev() {
  [ -b $KDEV ] || { echo "$KDEV is not a block device: $(ls -la $KDEV 2>&1)"; return 1; }
  "$@"
}
kdev_links_present() { [ -L $KDEV ] && [ -L $BYRES ] && [ -L $BYDISK ]; }
# kdev_same: all links resolve to the same /dev/nbdN block device
kdev_same() {
  local t1 t2 t3
  t1=$(readlink -f $KDEV 2>/dev/null); t2=$(readlink -f $BYRES 2>/dev/null); t3=$(readlink -f $BYDISK 2>/dev/null)
  echo "$KDEV -> $(readlink $KDEV 2>&1) = $t1; $BYRES -> $(readlink $BYRES 2>&1) = $t2; $BYDISK = $t3"
  [ -n "$t1" ] && [ "$t1" = "$t2" ] && [ "$t1" = "$t3" ] && [ -b "$t1" ] || return 1
  case $t1 in /dev/nbd[0-9]*) return 0;; esac
  echo "not an nbd device: $t1"; return 1
}
kdev_nbd() { local t; t=$(readlink -f $KDEV 2>/dev/null); case $t in /dev/nbd[0-9]*) echo "${t#/dev/}";; *) return 1;; esac; }
# nbd_backend_is ID: /sys/block/nbdX/backend is ID, or ID@RUN_DIR (udrbd adds its run directory
# so that daemons with their own run directories on one host never take each other's devices)
nbd_backend_is() {
  local b; b=$(cat /sys/block/$NBD/backend 2>&1); echo "backend: $b"
  [ "$b" = "$1" ] || [ "$b" = "$1@$RUN" ]
}
nbd_connected() { [ -n "$NBD" ] && [ -e /sys/block/$NBD/pid ] && [ "$(cat /sys/block/$NBD/size)" -gt 0 ]; }
nbd_disconnected() {
  [ -n "$NBD" ] || { echo "no nbd device was recorded at 'up'"; return 1; }
  echo "pid: $(cat /sys/block/$NBD/pid 2>&1); size: $(cat /sys/block/$NBD/size 2>&1)"
  [ ! -e /sys/block/$NBD/pid ] || [ "$(cat /sys/block/$NBD/size)" = 0 ]
}
links_gone() {
  ls -la $KDEV $BYRES 2>&1
  ! [ -e $KDEV ] && ! [ -L $KDEV ] && ! [ -e $BYRES ] && ! [ -L $BYRES ] && ! [ -L $BYDISK ]
}
kdev_info() {
  info "$1: $KDEV -> $(readlink $KDEV 2>&1); $BYRES -> $(readlink $BYRES 2>&1); nbd=${NBD:-?} size=$(cat /sys/block/${NBD:-none}/size 2>/dev/null) ro=$(cat /sys/block/${NBD:-none}/ro 2>/dev/null) pid=$(cat /sys/block/${NBD:-none}/pid 2>/dev/null) backend=$(cat /sys/block/${NBD:-none}/backend 2>/dev/null) nbd.max_part=$(cat /sys/module/nbd/parameters/max_part 2>/dev/null) nbd.nbds_max=$(cat /sys/module/nbd/parameters/nbds_max 2>/dev/null)"
}
# after_up TAG: the checks every 'drbdadm up' must satisfy
after_up() {
  local tag=$1
  wait_for "$tag-kdev-links" 10 kdev_links_present
  check "$tag-kdev-symlinks" sh -c "test -L $KDEV && test -L $BYRES && test -L $BYDISK"
  check "$tag-kdev-same-nbd" kdev_same
  check "$tag-nbd-module-loaded" test -d /sys/module/nbd
  NBD=$(kdev_nbd)
  check "$tag-nbd-max_part-0" sh -c '[ "$(cat /sys/module/nbd/parameters/max_part)" = 0 ]'
  check "$tag-kdev-connected" nbd_connected
  check "$tag-kdev-backend-id" nbd_backend_is udrbd:r0/0
  kdev_info "$tag"
}
# expect_held CMD...: CMD must exit 11 saying "(-12) Device is held open by someone"
expect_held() {
  local out rc
  out=$("$@" 2>&1); rc=$?
  printf '%s\n' "$out"
  [ $rc -eq 11 ] || { echo "exit status $rc, expected 11"; return 1; }
  printf '%s\n' "$out" | grep -qF '(-12) Device is held open by someone' \
    || { echo "output lacks '(-12) Device is held open by someone'"; return 1; }
}
# refused_held ROLE CMD...: expect_held, and the node is still up with role ROLE afterwards
refused_held() {
  local want=$1; shift
  expect_held "$@" || return 1
  ust; echo "role after: $ST_ROLE"; [ "$ST_ROLE" = "$want" ]
}
# expect_eio: a direct 4 KiB write to /dev/drbd0 fails with EIO
expect_eio() {
  local out rc
  out=$(timeout 60 dd if=/dev/zero of=$KDEV bs=4k count=1 oflag=direct 2>&1); rc=$?
  printf '%s\n(rc=%s)\n' "$out" "$rc"
  [ $rc -ne 0 ] && printf '%s\n' "$out" | grep -q 'Input/output error'
}
blkid_pttype_dos() {
  local out
  out=$(timeout 60 blkid -p $KDEV 2>&1); echo "$out"
  printf '%s\n' "$out" | grep -q 'PTTYPE="dos"'
}
# reads_match_backing: the first MiB read through /dev/drbd0 (direct) = the local backing disk's
reads_match_backing() {
  local s1 s2
  s1=$(timeout 60 dd if=$KDEV bs=1M count=1 iflag=direct status=none | md5sum | cut -d' ' -f1)
  s2=$(timeout 60 dd if=/dev/vdb bs=1M count=1 iflag=direct status=none | md5sum | cut -d' ' -f1)
  echo "$KDEV=$s1 /dev/vdb=$s2"
  [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s1" != d41d8cd98f00b204e9800998ecf8427e ]
}
# the fdisk dialogue of the Proxmox how-to: new DOS label, new primary partition 1 over the
# whole disk (default first/last sector), type 8e (Linux LVM), write
FDISK_INPUT='o\nn\np\n1\n\n\nt\n8e\nw\n'
fdisk_table() {
  local rc
  printf "$FDISK_INPUT" | timeout 60 fdisk $KDEV > /tmp/fdisk.out 2>&1; rc=$?
  sed 's/^/fdisk| /' /tmp/fdisk.out
  echo "fdisk rc=$rc"
  FDISK_RC=$rc
  grep -q 'The partition table has been altered' /tmp/fdisk.out || return 1
  timeout 60 sfdisk -d $KDEV > /tmp/sfdisk.out 2>&1; sed 's/^/sfdisk| /' /tmp/sfdisk.out
  grep -q 'label: dos' /tmp/sfdisk.out && grep -qE '1 : .*type=8e' /tmp/sfdisk.out
}
# inflight_ok: the read started while no daemon served the device finished, with the data of
# the backing disk (the kernel queued it until the restarted daemon handed over new sockets)
inflight_ok() {
  local rc s1 s2
  rc=$(cat /tmp/inflight.rc 2>/dev/null); echo "dd rc=${rc:-still running}"
  [ "$rc" = 0 ] || return 1
  s1=$(md5sum < /tmp/inflight.bin | cut -d' ' -f1)
  s2=$(timeout 60 dd if=/dev/vdb bs=64k count=16 skip=16 iflag=direct status=none | md5sum | cut -d' ' -f1)
  echo "in-flight read $s1, /dev/vdb $s2"; [ "$s1" = "$s2" ]
}
# kernel_kept_device: no NBD_DISCONNECT in the kernel log since the daemon was killed
kernel_kept_device() {
  dmesg | sed -n '/lab-mark-restart$/,$p' | grep -E 'nbd|NBD'
  ! dmesg | sed -n '/lab-mark-restart$/,$p' | grep -q 'NBD_DISCONNECT'
}
payload_md5() { md5sum $MNT/payload.bin | cut -d' ' -f1; }
lvmcmd() { timeout 120 "$@" < /dev/null; }   # LVM tools never wait on a prompt

# ---------------- Pacemaker agents without Pacemaker -----------------------------------------
# The agents run with the guest's /bin/sh (dash) and tools, with the environment Pacemaker's
# executor would give them (env -i: nothing of this script leaks in), as tests/ocf.rs runs
# ocf/udrbd on the host: OCF_ROOT, OCF_RESOURCE_INSTANCE, OCF_RESKEY_drbd_resource/drbdconf/
# udrbd_run_dir/udrbd_bin_dir, the clone's meta attributes (the walkthrough CIB's), a timeout.
# crm_attribute is a stand-in (tests/ocf.rs uses the real one against a CIB file): it logs its
# calls and keeps the promotion score in /tmp/ocf-score.NODE.
OCF_DIR=$UB/ocf                                   # OCF_ROOT on the binaries disk
OCF_UDRBD=$OCF_DIR/resource.d/udrbd/udrbd         # the repository's ocf/udrbd
OCF_FS=$OCF_DIR/resource.d/heartbeat/Filesystem   # the host's ocf:heartbeat:Filesystem
OCF_STUB=/tmp/ocf-stub                            # crm_attribute stand-in, first in PATH
OCF_MNT=/mnt/ocf                                  # Filesystem's directory (it creates it)
OCF_FILE=$OCF_MNT/ocf-payload.bin
ocf_stub() {
  mkdir -p $OCF_STUB
  cat > $OCF_STUB/crm_attribute <<'EOS'
#!/bin/sh
# crm_attribute stand-in (no Pacemaker in the guest): what ocf/udrbd calls it with,
#   --help (does it know --promotion?), --promotion -N NODE -q -v SCORE, --promotion -N NODE -q -D
# and -G to read the score back.
echo "crm_attribute $*" >> /tmp/ocf-crm.log
node=local op= v= prev=
for a in "$@"; do
  case $prev in -N) node=$a;; -v) v=$a; op=set;; esac
  case $a in
    --help) echo "  -p, --promotion=RESOURCE   Operate on the promotion score"; exit 0;;
    -D) op=del;; -G) op=get;;
  esac
  prev=$a
done
case $op in
  set) echo "$v" > /tmp/ocf-score.$node;;
  del) rm -f /tmp/ocf-score.$node;;
  get) cat /tmp/ocf-score.$node 2>/dev/null || exit 6;;
esac
exit 0
EOS
  chmod 755 $OCF_STUB/crm_attribute
}
# ocf_env VAR=VALUE... CMD...: CMD in the environment an agent gets from Pacemaker
ocf_env() {
  env -i PATH=$OCF_STUB:/usr/sbin:/usr/bin:/sbin:/bin ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH=$LD_LIBRARY_PATH} \
    OCF_ROOT=$OCF_DIR OCF_RA_VERSION_MAJOR=1 OCF_RA_VERSION_MINOR=0 OCF_RESKEY_CRM_meta_on_node=$ME "$@"
}
# udrbd_ra ACTION [VAR=VALUE...]: ocf/udrbd as this node's instance of the promotable clone
udrbd_ra() {
  local action=$1; shift
  ocf_env OCF_RESOURCE_INSTANCE=p_drbd_r0 OCF_RESKEY_drbd_resource=r0 OCF_RESKEY_drbdconf=$CONF \
    OCF_RESKEY_udrbd_run_dir=$RUN OCF_RESKEY_udrbd_bin_dir=$UB \
    OCF_RESKEY_CRM_meta_clone_max=2 OCF_RESKEY_CRM_meta_clone_node_max=1 \
    OCF_RESKEY_CRM_meta_promoted_max=1 OCF_RESKEY_CRM_meta_promoted_node_max=1 \
    OCF_RESKEY_CRM_meta_master_max=1 OCF_RESKEY_CRM_meta_master_node_max=1 \
    OCF_RESKEY_CRM_meta_notify=true OCF_RESKEY_CRM_meta_timeout=20000 \
    "$@" timeout 120 "$OCF_UDRBD" "$action"
}
# fs_ra ACTION [VAR=VALUE...]: ocf:heartbeat:Filesystem on the LV, ext4, at /mnt/ocf
fs_ra() {
  local action=$1; shift
  ocf_env OCF_RESOURCE_INSTANCE=p_fs_r0 OCF_RESKEY_device=$LV OCF_RESKEY_directory=$OCF_MNT \
    OCF_RESKEY_fstype=ext4 OCF_RESKEY_CRM_meta_timeout=60000 \
    "$@" timeout 120 "$OCF_FS" "$action"
}
OCF_CODES="0:OCF_SUCCESS 1:OCF_ERR_GENERIC 2:OCF_ERR_ARGS 3:OCF_ERR_UNIMPLEMENTED 4:OCF_ERR_PERM 5:OCF_ERR_INSTALLED 6:OCF_ERR_CONFIGURED 7:OCF_NOT_RUNNING 8:OCF_RUNNING_MASTER 9:OCF_FAILED_MASTER 124:timeout"
ocf_name() { local c; for c in $OCF_CODES; do [ "${c%%:*}" = "$1" ] && { echo "${c#*:}"; return; }; done; echo "?"; }
# ocf_check NAME WANT CMD...: CMD must exit with the OCF code WANT; its output (the agents log
# to stderr when there is no cluster) is kept in /tmp/ocf.out
ocf_check() {
  local name=$1 want=$2 rc t0; shift 2; t0=$(now_ms)
  "$@" > /tmp/ocf.out 2>&1; rc=$?
  if [ $rc -eq "$want" ]; then
    pass "$name (exit $rc $(ocf_name $rc), $(( $(now_ms) - t0 )) ms)"; return 0
  fi
  fail "$name (exit $rc $(ocf_name $rc), expected $want $(ocf_name $want): $*)"
  tail -25 /tmp/ocf.out | sed 's/^/    | /'
  return 1
}
ocf_score_is() { local v; v=$(cat /tmp/ocf-score.$ME 2>/dev/null); echo "promotion score of $ME: ${v:-none}"; [ "$v" = "$1" ]; }
ocf_staged() { ls -la $OCF_UDRBD $OCF_FS $OCF_DIR/lib/heartbeat/ocf-shellfuncs && [ -x $OCF_UDRBD ] && [ -x $OCF_FS ] && [ -r $OCF_DIR/lib/heartbeat/ocf-shellfuncs ]; }
meta_data_ok() { "$@" > /tmp/meta.xml 2>&1 || return 1; head -3 /tmp/meta.xml; grep -q '<resource-agent name=' /tmp/meta.xml && grep -q '</resource-agent>' /tmp/meta.xml; }
# vg_up TAG: what the resources ordered before the Filesystem do (kpartx for the partition,
# then an LVM-activate: vgchange -ay drbdvg; with step 6's fallback, pvscan --cache + vgscan)
vg_up() {
  local tag=$1
  check $tag-kpartx-add on_kdev timeout 60 kpartx -a $KDEV
  check $tag-kpartx-partition test -b $PART
  if lvmcmd vgchange -ay drbdvg > /tmp/vgchange.out 2>&1; then
    pass "$tag-vgchange-ay (no rescan needed)"
  else
    info "vgchange -ay drbdvg failed first: $(tr '\n' ' ' < /tmp/vgchange.out); pvscan --cache + vgscan, then again"
    lvmcmd pvscan --cache > /tmp/pvscan.out 2>&1; info "pvscan --cache rc=$?: $(tr '\n' ' ' < /tmp/pvscan.out)"
    lvmcmd vgscan > /tmp/vgscan.out 2>&1; info "vgscan rc=$?: $(tr '\n' ' ' < /tmp/vgscan.out)"
    check $tag-vgchange-ay lvmcmd vgchange -ay drbdvg
  fi
  check $tag-lv-present test -b $LV
}
vg_down() {
  local tag=$1
  check $tag-vgchange-an lvmcmd vgchange -an drbdvg
  check $tag-kpartx-del on_kdev timeout 60 kpartx -d $KDEV
  check $tag-kpartx-gone sh -c "! test -e $PART"
}
ocf_md5() { md5sum $OCF_FILE | cut -d' ' -f1; }
role_now_is() { ust; echo "role: $ST_ROLE/$ST_PROLE $ST_CONN $ST_DISK/$ST_PDISK"; [ "$ST_ROLE" = "$1" ]; }

# ---------------- udrbd daemon --------------------------------------------------------------
# udrbd_start: start the daemon; wait until a socket in $RUN is new (a socket file a killed
# daemon left behind does not count)
sock_ids() { find "$RUN" -maxdepth 1 -type s -printf '%i ' 2>/dev/null; }
udrbd_start() {
  mkdir -p "$RUN"
  local t0 i=0 old; t0=$(now_ms); old=$(sock_ids)
  setsid "$UB/udrbd" --run-dir "$RUN" >> $DLOG 2>&1 < /dev/null &
  UPID=$!
  while daemon_alive && { [ -z "$(sock_ids)" ] || [ "$(sock_ids)" = "$old" ]; } && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i+1))
  done
  if ! daemon_alive; then
    wait "$UPID"; fail "$1 (exited rc=$?)"; tail -20 $DLOG | sed 's/^/    | /'; UPID=; return 1
  fi
  pass "$1 (pid $UPID, $(( $(now_ms) - t0 )) ms, sockets: $(cd "$RUN" && find . -maxdepth 1 -type s | sed 's|^\./||' | tr '\n' ' '))"
}

# ---------------- network ------------------------------------------------------------------
modprobe virtio_net
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip addr add "$MY_IP/24" dev eth0
ip link set eth0 up
wait_for "ping-peer" 120 ping -c1 -W1 "$PEER_IP" || finish
barrier boot-done
if [ "$ROLE" = a ]; then
  ping -c 20 -i 0.05 -q "$PEER_IP" 2>&1 | grep -E 'rtt|min/avg' | sed 's/^/INFO link ping /'
fi

# ---------------- udrbd binaries (read-only disk built on the host) -------------------------
BDEV=$(blkid -L udrbdbin 2>/dev/null)
mkdir -p $UB
check udrbd-bin-mount mount -o ro "${BDEV:-/dev/missing-udrbdbin}" $UB || finish
check udrbd-bin-sha256 sh -c "cd $UB && sha256sum -c --quiet SHA256SUMS"
[ -d $UB/lib ] && [ -n "$(ls -A $UB/lib)" ] && { export LD_LIBRARY_PATH=$UB/lib; info "bundled libraries: $(ls $UB/lib | tr '\n' ' ')"; }
info "udrbd --version: $(UDRBD_RUN_DIR=/tmp/udrbd-version timeout 5 $UB/udrbd --version 2>&1 | head -1)"
info "nbd module before 'up': $( [ -d /sys/module/nbd ] && echo loaded || echo 'not loaded')"

# ---------------- baseline: raw virtio disk (a only, when the host staged one) ---------------
RAWDEV=
if [ "$ROLE" = a ] && [ -b /dev/vdc ] && [ "$BDEV" != /dev/vdc ]; then RAWDEV=/dev/vdc; fi
if [ -n "$RAWDEV" ]; then
  info "raw baseline on $RAWDEV ($(blockdev --getsize64 $RAWDEV) bytes)"
  for qd in $FIO_DEPTHS; do run_fio raw-vdc $RAWDEV $qd; done
fi

# ---------------- udrbd setup ---------------------------------------------------------------
if [ -f $UB/udrbd.conf ]; then
  cp $UB/udrbd.conf $CONF; info "config: udrbd.conf from the binaries disk (UDRBD_CONF)"
else
cat > $CONF <<EOC
global { usage-count no; }
common {
  net {
    protocol $DRBD_PROTOCOL;
    verify-alg crc32c;
    after-sb-0pri disconnect;
    after-sb-1pri disconnect;
    after-sb-2pri disconnect;
  }
  disk { resync-rate $RESYNC_RATE; c-plan-ahead 0; }
}
resource r0 {
  meta-disk internal;
  on drbda { node-id 0; device /dev/drbd0 minor 0; address $( [ "$ROLE" = a ] && echo "$MY_IP" || echo "$PEER_IP"):7789; disk /dev/vdb; }
  on drbdb { node-id 1; device /dev/drbd0 minor 0; address $( [ "$ROLE" = b ] && echo "$MY_IP" || echo "$PEER_IP"):7789; disk /dev/vdb; }
}
EOC
fi
case ${LVM_FILTER:-default} in
  default) LVMF='"r|^/dev/vdb|", "r|^/dev/nbd[0-9]+p[0-9]+$|", "a|.*|"';;
  backing) LVMF='"r|^/dev/vdb|", "a|.*|"';;
  *) LVMF=;;
esac
if [ -n "$LVMF" ]; then
  sed -i "0,/^devices {/s#^devices {#devices {\n\tglobal_filter = [ $LVMF ]#" /etc/lvm/lvm.conf
fi
info "LVM filter ${LVM_FILTER:-default}: $(lvmconfig devices/global_filter 2>&1)"
: > $DLOG
udrbd_start udrbd-daemon || finish
check create-md sh -c "yes yes | timeout 120 $UB/drbdadm -c $CONF --node $ME create-md --force r0"
check drbdadm-up adm up r0
after_up up
KDEV_AT_UP=$(readlink -f $KDEV 2>/dev/null)
# b waits while a runs its raw baseline first: allow for 2 x FIO_DEPTHS x FIO_RUNTIME
if [ "$ROLE" = a ]; then
  wait_for "connected" 300 is_cstate Connected
else
  wait_for "connected" $((300 + 4 * FIO_RUNTIME)) is_linked
fi

# ---------------- a: primary --force, initial sync ------------------------------------------
if [ "$ROLE" = a ]; then
  T0=$(now_ms)
  check primary-force adm primary --force r0
fi
wait_for "initial-sync UpToDate/UpToDate" 900 is_dstate UpToDate/UpToDate
[ "$ROLE" = a ] && info "initial full sync of $(blockdev --getsize64 /dev/vdb) bytes (backing disk) took $(( $(now_ms) - T0 )) ms"
barrier synced

# ---------------- a: the Proxmox how-to on /dev/drbd0 ----------------------------------------
MD5_A=
if [ "$ROLE" = a ]; then
  check a-fdisk on_kdev fdisk_table
  sed 's/^/    | /' /tmp/check.out          # the fdisk dialogue, also when it passed
  info "fdisk exit status ${FDISK_RC:-?} (0: the kernel re-read the table, i.e. it scans partitions on this device; 1: BLKRRPART refused, as on a DRBD device)"
  check a-kpartx-add on_kdev timeout 60 kpartx -a $KDEV
  check a-kpartx-partition test -b $PART
  info "dm: $(dmsetup ls 2>&1 | tr '\n' ' ')"
  info "kernel partitions of ${NBD:-nbd?}: $(ls -d /sys/block/${NBD:-none}/${NBD:-none}p* 2>/dev/null | tr '\n' ' ')"
  check a-pvcreate lvmcmd pvcreate $PART
  check a-vgcreate lvmcmd vgcreate drbdvg $PART
  check a-lvcreate lvmcmd lvcreate -L 64M -n lv0 drbdvg
  check a-lv-present test -b $LV
  check a-mkfs-ext4 timeout 120 mkfs.ext4 $LV
  mkdir -p $MNT
  check a-mount timeout 60 mount $LV $MNT
  check a-write-file sh -c "mountpoint -q $MNT && dd if=/dev/urandom of=$MNT/payload.bin bs=1M count=4 status=none && sync"
  MD5_A=$(mountpoint -q $MNT && payload_md5)
  info "payload md5 on a: ${MD5_A:-none}"
  show lsblk
  show timeout 30 pvs
fi
barrier a-stacked

# ---------------- b (Secondary, a is Primary): reads the local disk, writes fail -------------
if [ "$ROLE" = b ]; then
  ust; info "b: role $ST_ROLE/$ST_PROLE $ST_CONN $ST_DISK/$ST_PDISK"
  check b-secondary-flushbufs on_kdev timeout 60 blockdev --flushbufs $KDEV
  check b-secondary-blkid-pttype-dos on_kdev blkid_pttype_dos
  check b-secondary-write-eio on_kdev expect_eio
fi
barrier b-probed

# ---------------- a: 'secondary' refused while held, then released layer by layer ------------
if [ "$ROLE" = a ]; then
  check a-secondary-refused-mounted refused_held Primary adm secondary r0
  check a-umount timeout 60 umount $MNT
  check a-secondary-refused-vg-active refused_held Primary adm secondary r0
  check a-vgchange-an lvmcmd vgchange -an drbdvg
  check a-secondary-refused-kpartx refused_held Primary adm secondary r0
  check a-kpartx-del on_kdev timeout 60 kpartx -d $KDEV
  check a-kpartx-gone sh -c "! test -e $PART"
  check a-secondary adm secondary r0
  ust; info "a: role $ST_ROLE/$ST_PROLE"
  msg_send "a-released ${MD5_A:-none}"
else
  msg_recv a-released; MD5_A=$MSG
fi

# ---------------- b: primary, the same stack, the same data --------------------------------
if [ "$ROLE" = b ]; then
  wait_for "b-peer-secondary" 30 is_peer_role Secondary
  check b-primary adm primary r0
  check b-flushbufs on_kdev timeout 60 blockdev --flushbufs $KDEV
  vg_up b
  mkdir -p $MNT
  check b-mount timeout 60 mount $LV $MNT
  MD5_B=$(mountpoint -q $MNT && payload_md5)
  if [ -n "$MD5_A" ] && [ "$MD5_A" != none ] && [ "$MD5_A" = "$MD5_B" ]; then pass "b-md5-matches-a ($MD5_B)"
  else fail "b-md5-matches-a (a=${MD5_A:-none} b=${MD5_B:-none})"; fi
  check b-down-refused-mounted refused_held Primary adm down r0
  check b-umount timeout 60 umount $MNT
  check b-vgchange-an lvmcmd vgchange -an drbdvg
  check b-kpartx-del on_kdev timeout 60 kpartx -d $KDEV
  check b-secondary adm secondary r0
fi
barrier b-released

# ---------------- the Pacemaker agents: udrbd promotable clone + Filesystem, without Pacemaker --
# Both nodes Secondary, connected, UpToDate.  Pacemaker's order for a Filesystem on a promoted
# udrbd: promote, (partition mapping and LVM activation,) Filesystem start; stop in reverse.
# The LV made in step 3 is reused (its ext4 too); the agents only mount/unmount it.
OCF_OK=0
# ocf_promote_and_mount TAG: what Pacemaker does to make this node the Promoted one with the
# filesystem on it: monitor (Unpromoted, score 10000), promote, the VG up (LVM-activate's part),
# Filesystem start and monitor.
ocf_promote_and_mount() {
  local t=$1
  ocf_check $t-udrbd-monitor-unpromoted 0 udrbd_ra monitor OCF_RESKEY_CRM_meta_interval=20000
  check $t-promotion-score ocf_score_is 10000
  ocf_check $t-udrbd-promote 0 udrbd_ra promote OCF_RESKEY_CRM_meta_timeout=90000
  check $t-primary role_now_is Primary
  ocf_check $t-udrbd-monitor-promoted 8 udrbd_ra monitor OCF_RESKEY_CRM_meta_interval=10000
  vg_up $t
  ocf_check $t-fs-start 0 fs_ra start
  ocf_check $t-fs-monitor 0 fs_ra monitor OCF_RESKEY_CRM_meta_interval=20000
}
# ocf_unmount_and_demote TAG: the reverse: Filesystem stop, the VG down, demote, Unpromoted.
ocf_unmount_and_demote() {
  local t=$1
  ocf_check $t-fs-stop 0 fs_ra stop
  ocf_check $t-fs-monitor-stopped 7 fs_ra monitor OCF_RESKEY_CRM_meta_interval=20000
  vg_down $t
  ocf_check $t-udrbd-demote 0 udrbd_ra demote OCF_RESKEY_CRM_meta_timeout=90000
  check $t-secondary role_now_is Secondary
  ocf_check $t-udrbd-monitor-demoted 0 udrbd_ra monitor OCF_RESKEY_CRM_meta_interval=20000
}
ocf_stub
if check ocf-staged ocf_staged; then
  OCF_OK=1
  check ocf-udrbd-sh-n sh -n $OCF_UDRBD
  check ocf-udrbd-meta-data meta_data_ok udrbd_ra meta-data
  check ocf-fs-meta-data meta_data_ok fs_ra meta-data
  ocf_check ocf-udrbd-validate-all 0 udrbd_ra validate-all
  ocf_check ocf-fs-validate-all 0 fs_ra validate-all
fi
if [ "$ROLE" = a ]; then
  MD5_OCF=
  if [ $OCF_OK = 1 ]; then
    wait_for "a-ocf-peer-secondary" 30 is_peer_role Secondary
    wait_for "a-ocf-uptodate" 30 is_dstate UpToDate/UpToDate
    ocf_promote_and_mount a-ocf
    check a-ocf-write-file sh -c "mountpoint -q $OCF_MNT && dd if=/dev/urandom of=$OCF_FILE bs=1M count=1 status=none && sync"
    MD5_OCF=$(mountpoint -q $OCF_MNT && ocf_md5)
    info "ocf payload md5 on a: ${MD5_OCF:-none}"
    # demote while the Filesystem is mounted: 'drbdadm secondary' is refused (held open), the
    # agent retries until its timeout (10 s here, 90 s in its meta-data) and fails
    ocf_check a-ocf-udrbd-demote-refused-mounted 1 udrbd_ra demote OCF_RESKEY_CRM_meta_timeout=10000
    info "a: the refused demote ran 'drbdadm secondary' $(grep -c 'drbdadm secondary r0 failed (11)' /tmp/ocf.out) times; its last lines:"
    grep -v '^ *$' /tmp/ocf.out | tail -4 | sed 's/^/    | /'
    check a-ocf-demote-refused-held-open grep -qF '(-12) Device is held open by someone' /tmp/ocf.out
    check a-ocf-still-primary role_now_is Primary
    ocf_check a-ocf-udrbd-monitor-still-promoted 8 udrbd_ra monitor OCF_RESKEY_CRM_meta_interval=10000
    ocf_check a-ocf-fs-monitor-still-mounted 0 fs_ra monitor OCF_RESKEY_CRM_meta_interval=20000
    ocf_unmount_and_demote a-ocf
  fi
  msg_send "a-ocf-done ${MD5_OCF:-none}"
else
  msg_recv a-ocf-done 600; MD5_OCF=$MSG
  if [ $OCF_OK = 1 ]; then
    wait_for "b-ocf-uptodate" 30 is_dstate UpToDate/UpToDate
    ocf_promote_and_mount b-ocf
    MD5_OCF_B=$(mountpoint -q $OCF_MNT && [ -f $OCF_FILE ] && ocf_md5)
    if [ -n "$MD5_OCF" ] && [ "$MD5_OCF" != none ] && [ "$MD5_OCF" = "$MD5_OCF_B" ]; then pass "b-ocf-file-matches-a ($MD5_OCF_B)"
    else fail "b-ocf-file-matches-a (a=${MD5_OCF:-none} b=${MD5_OCF_B:-none})"; fi
    ocf_unmount_and_demote b-ocf
  fi
fi
[ -s /tmp/ocf-crm.log ] && info "crm_attribute calls: $(sort /tmp/ocf-crm.log | uniq -c | sed 's/^ *//' | tr '\n' ';')"
barrier ocf-done

# ---------------- fio through /dev/drbd0 on one Primary (a) ---------------------------------
if [ "$ROLE" = a ]; then
  wait_for "a-peer-secondary" 30 is_peer_role Secondary
  check a-primary-for-fio adm primary r0
  ust; info "state: $ST_ROLE/$ST_PROLE $ST_CONN $ST_DISK/$ST_PDISK protocol $DRBD_PROTOCOL, fio on $KDEV -> $(readlink -f $KDEV 2>/dev/null)"
  if [ -b $KDEV ]; then
    for qd in $FIO_DEPTHS; do run_fio udrbd-proto$DRBD_PROTOCOL $KDEV $qd; done
  else
    fail "fio udrbd-proto$DRBD_PROTOCOL ($KDEV is not a block device)"
  fi
  # I/O suspended by the resource waits in the kernel device, past the block layer's default
  # 30 s request timeout (the device is connected with none), and completes on resume-io.
  if [ -b $KDEV ]; then
    check a-suspend-io adm suspend-io r0
    ( dd if=/dev/urandom of=/tmp/susp.blk bs=4k count=1 status=none
      dd if=/tmp/susp.blk of=$KDEV bs=4k seek=100 count=1 oflag=direct conv=notrunc status=none
      echo $? > /tmp/susp.rc ) &
    SUSP=$!
    sleep 40
    check a-suspended-write-still-waiting kill -0 $SUSP
    check a-resume-io adm resume-io r0
    for _ in $(seq 1 100); do [ -s /tmp/susp.rc ] && break; sleep 0.2; done
    check a-suspended-write-completed sh -c "[ \"\$(cat /tmp/susp.rc 2>/dev/null)\" = 0 ]"
    check a-suspended-write-landed bash -c "cmp -s /tmp/susp.blk <(dd if=$KDEV bs=4k skip=100 count=1 iflag=direct status=none)"
    info "kernel log during the suspension: $(dmesg | grep -i 'nbd.*stuck\|nbd.*timed out' | tail -2 | tr '\n' ' ')"
  fi
  check a-secondary-after-fio adm secondary r0
fi
barrier fio-done

# ---------------- b (Secondary): kill -9 the daemon, restart it, 'up' finds the device -------
if [ "$ROLE" = b ]; then
  ust; info "b before kill: role $ST_ROLE/$ST_PROLE $ST_CONN"
  kdev_info "b-before-kill"
  echo "lab-mark-restart" > /dev/kmsg
  OLDPID=$UPID; kill -KILL "$UPID"; wait "$UPID" 2>/dev/null; UPID=
  if kill -0 "$OLDPID" 2>/dev/null; then fail "b-daemon-killed (pid $OLDPID still alive)"; else pass "b-daemon-killed (pid $OLDPID)"; fi
  kdev_info "b-after-kill"
  # a read issued while no daemon serves the device: the kernel should queue it and the
  # restarted daemon's sockets complete it
  rm -f /tmp/inflight.rc /tmp/inflight.bin
  INFL=
  if [ -b $KDEV ]; then
    ( timeout 150 dd if=$KDEV of=/tmp/inflight.bin bs=64k count=16 skip=16 iflag=direct status=none 2>/tmp/inflight.err
      echo $? > /tmp/inflight.rc ) &
    INFL=$!
    sleep 1
    [ -e /tmp/inflight.rc ] && info "the read issued while the daemon was dead returned at once: rc=$(cat /tmp/inflight.rc) $(cat /tmp/inflight.err)"
  fi
  echo "=== udrbd restarted after kill -9 ===" >> $DLOG
  if udrbd_start b-daemon-restart; then
    check b-restart-up adm up r0
    after_up b-restart
    R=$(readlink -f $KDEV 2>/dev/null)
    if [ -n "$KDEV_AT_UP" ] && [ "$R" = "$KDEV_AT_UP" ]; then pass "b-restart-same-nbd ($R)"
    else fail "b-restart-same-nbd (before: ${KDEV_AT_UP:-none}, after: ${R:-none})"; fi
    # handed new sockets (NBD_CMD_RECONFIGURE), not disconnected and connected afresh (which
    # may well get the same nbdX again but fails the I/O queued meanwhile)
    check b-restart-not-disconnected kernel_kept_device
    check b-restart-flushbufs on_kdev timeout 60 blockdev --flushbufs $KDEV
    check b-restart-blkid on_kdev sh -c "timeout 60 blkid -p $KDEV; rc=\$?; echo rc=\$rc; [ \$rc = 0 ] || [ \$rc = 2 ]"
    check b-restart-reads on_kdev reads_match_backing
    if [ -n "$INFL" ]; then
      i=0; while kill -0 "$INFL" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
      check b-restart-inflight-read-resumes inflight_ok
    else
      fail "b-restart-inflight-read-resumes ($KDEV was not a block device)"
    fi
    wait_for "b-restart-reconnected UpToDate/UpToDate" 180 is_dstate UpToDate/UpToDate
  fi
fi
barrier restart-done

# ---------------- both: down removes the links and disconnects the kernel device -------------
ust; info "final: $ST_ROLE/$ST_PROLE $ST_CONN $ST_DISK/$ST_PDISK"
if daemon_alive; then
  check down adm down r0
  check down-links-gone links_gone
  check down-nbd-disconnected nbd_disconnected
  kdev_info "after-down"
else
  fail "down (no udrbd daemon running)"
fi
barrier down-done

if daemon_alive; then
  kill -TERM "$UPID"; i=0
  while daemon_alive && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  daemon_alive && { info "udrbd ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$UPID"; }
  wait "$UPID" 2>/dev/null; info "udrbd exit status after SIGTERM: $?"
fi
n=$(wc -l < $DLOG)
[ "$n" -gt "${DLOG_LINES:-400}" ] && echo "DLOG ... ($n lines, last ${DLOG_LINES:-400} shown)"
tail -n "${DLOG_LINES:-400}" $DLOG | sed 's/^/DLOG /'
dmesg | grep -E 'nbd|device-mapper|dm-|EXT4|lab-mark|I/O error' | sed 's/^/KLOG /'
finish
