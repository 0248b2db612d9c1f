#!/bin/sh
# The README's two commands on a fresh Debian, as a newcomer's machine has it: a minimal
# bookworm root (debootstrap --variant=minbase, plus the README's prerequisites python3, make
# and git), a clone of this repository in it, then `make demo` and `make test` inside, as root,
# with nothing else installed by hand. Run as root: `make clean-room` (network needed; some
# minutes). Not part of `make test`.
#
# The root is a container-like private mount namespace (pivot_root, not chroot: the kernel
# refuses user namespaces in a chroot, and the jail needs them). CLEAN_ROOM_CA names a CA
# bundle to trust for the network (a proxy's), when the machine needs one.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
work=${CLEAN_ROOM_DIR:-/var/tmp/fioca-clean-room}
root=$work/root
targets=${CLEAN_ROOM_TARGETS:-demo test}

if [ "$(id -u)" != 0 ]; then
	echo "clean-room needs root (debootstrap, mount namespaces)" >&2
	exit 2
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if [ ! -x "$root/usr/bin/python3" ]; then
	mkdir -p "$work"
	debootstrap --variant=minbase --include=python3,make,git,ca-certificates bookworm "$root" http://deb.debian.org/debian
fi
rm -rf "$root/src"
git clone -q "$here" "$root/src"
if [ -n "${CLEAN_ROOM_CA:-}" ]; then
	cp "$CLEAN_ROOM_CA" "$root/etc/ssl/certs/clean-room-extra.crt"
	cert=/etc/ssl/certs/clean-room-extra.crt
else
	cert=
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What an installed system has and debootstrap leaves out: localhost by name.
[ -s "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
mkdir -p "$root/.oldroot"

# Inside: a fresh private mount tree rooted at $root; then the README's commands.
unshare --mount --fork sh -s "$root" "$cert" "$targets" <<'INSIDE'
set -eu
root=$1 cert=$2 targets=$3
mount --make-rprivate /
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
chmod 1777 "$root/tmp"
cd "$root"
pivot_root . .oldroot
umount -l /.oldroot
exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root ${cert:+PIP_CERT=$cert} \
	/bin/sh -c "cd /src && echo \"Debian packages before: \$(dpkg -l | grep -c '^ii')\" && for t in $targets; do make \$t || exit \$?; done"
INSIDE
