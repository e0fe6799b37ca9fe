#!/bin/sh
#
# fence-peer / unfence-peer handler for udrbd under Pacemaker: the two-node subset of DRBD's
# crm-fence-peer.9.sh and crm-unfence-peer.9.sh.
#
#   handlers {
#       fence-peer          "/usr/lib/udrbd/fence-peer.sh";
#       unfence-peer        "/usr/lib/udrbd/unfence-peer.sh";   # or after-resync-target
#   }
#
# fence (this script's name does not contain "unfence", and no --unfence): places a location
# constraint on the promotable clone of DRBD_RESOURCE that forbids the Master (Promoted) role on
# every node but this one, so Pacemaker cannot promote the peer whose data may now be stale:
#
#   <rsc_location rsc="CLONE" id="drbd-fence-by-handler-RES-CLONE">
#     <rule role="Promoted" score="-INFINITY" id="drbd-fence-by-handler-RES-rule-CLONE">
#       <expression attribute="#uname" operation="ne" value="THIS-NODE"
#                   id="drbd-fence-by-handler-RES-expr-MYID-CLONE"/>
#     </rule>
#   </rsc_location>
#
# Exit codes (DRBD's fence-peer convention, as the udrbd daemon reads them):
# (role Master where the CIB's schema is older than pacemaker-3.7).
#
#   4  constraint placed, or a suitable one was already there: the peer counts as Outdated
#   5  this node's disk is not UpToDate (UP_TO_DATE_NODES): nothing placed
#   6  a constraint from the peer already keeps the Master role off this node: the peer has
#      the better data (or is Primary); outdate myself
#   1  anything else (no CIB, clone not found, no quorum, cibadmin failed): "helper broken"
# unfence (unfence-peer.sh, or --unfence): removes that constraint; exit 0 (also when there was
# none), 1 if the CIB cannot be read or written.
#
# Reads DRBD_RESOURCE, DRBD_PEER_NODE_ID, DRBD_MY_NODE_ID, DRBD_NODE_ID_<n>, UP_TO_DATE_NODES
# (set by the udrbd daemon as DRBD's kernel and drbdadm set them) and UDRBD_NODE. Every
# Pacemaker tool honours CIB_file, so it works against a CIB XML file as well.
#
# Options (as crm-fence-peer.9.sh spells them): -r|--resource RES, -i|--master-id CLONE (the
# clone's id; default: the clone whose primitive has drbd_resource=RES), -l|--role ROLE
# (Promoted, or Master for an older schema), -p|--id-prefix PREFIX (drbd-fence-by-handler), --unfence, --quiet.
#
# POSIX shell; checked with `sh -n` and `checkbashisms`.
#
# SPDX-License-Identifier: Apache-2.0

PROG=${0##*/}
action=fence
case $PROG in
*unfence*) action=unfence ;;
esac
quiet=false
master_id=""
role=""
id_prefix=""

while [ $# -gt 0 ]; do
	case $1 in
	--resource=*) DRBD_RESOURCE=${1#*=} ;;
	-r | --resource)
		DRBD_RESOURCE=$2
		shift
		;;
	--master-id=* | --clone-id=*) master_id=${1#*=} ;;
	-i | --master-id | --clone-id)
		master_id=$2
		shift
		;;
	--role=*) role=${1#*=} ;;
	-l | --role)
		role=$2
		shift
		;;
	--id-prefix=*) id_prefix=${1#*=} ;;
	-p | --id-prefix)
		id_prefix=$2
		shift
		;;
	--unfence) action=unfence ;;
	--fence) action=fence ;;
	--quiet) quiet=true ;;
	*) echo "$PROG: ignoring unknown argument $1" >&2 ;;
	esac
	shift
done

log() {
	echo "$PROG: $*"
}
warn() {
	echo "$PROG: WARNING $*" >&2
}

if [ -z "$DRBD_RESOURCE" ]; then
	warn "DRBD_RESOURCE is not set (the daemon sets it for a handler)"
	exit 1
fi

: "${id_prefix:=drbd-fence-by-handler}"
# As crm-fence-peer.9.sh: one constraint per DRBD resource, even for a clone holding several.
case $id_prefix in
*"-$DRBD_RESOURCE") : ;;
*) id_prefix=$id_prefix-$DRBD_RESOURCE ;;
esac

# DRBD_NODE_ID_<n>, or empty.
node_name() {
	case $1 in
	'' | *[!0-9]*) return ;;
	esac
	eval "printf '%s' \"\${DRBD_NODE_ID_$1}\""
}

# This node: its DRBD name (the Pacemaker node name, as crm-fence-peer.9.sh assumes).
my_id=$DRBD_MY_NODE_ID
my_name=$(node_name "$my_id")
[ -n "$my_name" ] || my_name=$UDRBD_NODE
[ -n "$my_name" ] || my_name=$(uname -n)
if [ -z "$my_id" ]; then
	# Without DRBD_MY_NODE_ID: the node id whose name is mine.
	for _i in $(env | sed -n 's/^DRBD_NODE_ID_\([0-9][0-9]*\)=.*/\1/p'); do
		[ "$(node_name "$_i")" = "$my_name" ] && my_id=$_i
	done
fi
peer_name=$(node_name "$DRBD_PEER_NODE_ID")
[ -n "$peer_name" ] || peer_name=$DRBD_PEER

$quiet || log "$action $DRBD_RESOURCE: me=${my_name}(${my_id:-?}) peer=${peer_name:-?}(${DRBD_PEER_NODE_ID:-?}) UP_TO_DATE_NODES=${UP_TO_DATE_NODES:-unset}${CIB_file:+ CIB_file=$CIB_file}"

# The whole CIB once: fails without a reachable CIB.
if ! cib=$(cibadmin -Q 2>&1); then
	warn "cannot read the CIB: $cib"
	exit 1
fi

# The promotable clone (or old-style master) whose primitive manages DRBD_RESOURCE.
find_master_id() {
	_xp="//primitive[instance_attributes/nvpair[@name='drbd_resource' and @value='$DRBD_RESOURCE']]"
	cibadmin -Q --xpath "$_xp" --node-path 2>/dev/null |
		sed -n -e "s/.*\/clone\[@id='\([^']*\)'\]\/primitive.*/\1/p" \
			-e "s/.*\/master\[@id='\([^']*\)'\]\/primitive.*/\1/p" | head -n 1
}
# The role's name: Promoted where the CIB's schema knows it (pacemaker-3.7 and later), else Master.
if [ -z "$role" ]; then
	role=Master
	_schema=$(printf '%s\n' "$cib" | head -n 1 | sed -n 's/.*validate-with="pacemaker-\([0-9]*\)\.\([0-9]*\)".*/\1 \2/p')
	# shellcheck disable=SC2086
	set -- $_schema
	if [ $# -eq 2 ] && { [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 7 ]; }; }; then
		role=Promoted
	fi
fi

[ -n "$master_id" ] || master_id=$(find_master_id)
if [ -z "$master_id" ]; then
	warn "could not find the promotable clone of resource $DRBD_RESOURCE in the CIB (a primitive with drbd_resource=$DRBD_RESOURCE inside a clone); give it with --master-id"
	exit 1
fi
cid=$id_prefix-$master_id

# The constraint as it is in the CIB now, or empty.
existing() {
	cibadmin -Q --xpath "//rsc_location[@id='$cid']" 2>/dev/null
}

if [ "$action" = unfence ]; then
	if [ -z "$(existing)" ]; then
		$quiet || log "no constraint '$cid' in place, nothing to do"
		exit 0
	fi
	if out=$(cibadmin -D -o constraints -X "<rsc_location rsc=\"$master_id\" id=\"$cid\"/>" 2>&1); then
		log "removed constraint '$cid'"
		exit 0
	fi
	warn "could not remove constraint '$cid': $out"
	exit 1
fi

# fence.
if [ -z "$my_id" ]; then
	warn "cannot tell this node's DRBD node id (DRBD_MY_NODE_ID unset, no DRBD_NODE_ID_n is $my_name)"
	exit 1
fi

# This node's bit in UP_TO_DATE_NODES (0x%08X; unset: assume UpToDate, DRBD 8 style).
my_disk_up_to_date() {
	[ -n "$UP_TO_DATE_NODES" ] || return 0
	case $UP_TO_DATE_NODES in
	0x*[!0-9a-fA-F]* | 0x) ;;
	0x*)
		[ $(((UP_TO_DATE_NODES >> my_id) & 1)) -eq 1 ]
		return
		;;
	esac
	warn "unexpected UP_TO_DATE_NODES=$UP_TO_DATE_NODES, expected a 0x... hex mask"
	return 1
}

# A real cluster partition without quorum must not fence (a CIB file has no quorum to check).
if [ -z "$CIB_file" ]; then
	case $(printf '%s\n' "$cib" | head -n 1) in
	*'have-quorum="0"'* | *"have-quorum='0'"*)
		warn "this partition has no quorum: did not place the constraint"
		exit 1
		;;
	esac
fi

have=$(existing)
if [ -n "$have" ]; then
	if printf '%s\n' "$have" | grep -q -F -e "operation=\"ne\"" &&
		printf '%s\n' "$have" | grep -q -F -e "value=\"$my_name\""; then
		log "suitable constraint already placed: '$cid'"
		exit 4
	fi
	warn "constraint '$cid' already exists and keeps the $role role off this node ($my_name): the peer has the better data"
	exit 6
fi

if ! my_disk_up_to_date; then
	warn "my disk is not UpToDate (UP_TO_DATE_NODES=$UP_TO_DATE_NODES, my node id $my_id): did not place the constraint"
	exit 5
fi

xml="<rsc_location rsc=\"$master_id\" id=\"$cid\">\
<rule role=\"$role\" score=\"-INFINITY\" id=\"$id_prefix-rule-$master_id\">\
<expression attribute=\"#uname\" operation=\"ne\" value=\"$my_name\" id=\"$id_prefix-expr-$my_id-$master_id\"/>\
</rule></rsc_location>"
if out=$(cibadmin -C -o constraints -X "$xml" 2>&1); then
	log "placed constraint '$cid': the $role role of $master_id only on $my_name${peer_name:+, not on $peer_name}"
	exit 4
fi
warn "DATA INTEGRITY at RISK: could not place the fencing constraint '$cid': $out"
exit 1
