#!/bin/sh
# A real systemd as PID 1 of private PID, mount, cgroup, UTS and IPC namespaces, for the
# systemd lane (tests/acceptance/test_systemd.py). Network and the file system are shared
# with the host: the embedded PostgreSQL clusters answer on 127.0.0.1 as usual.
#
#   systemd-lane.sh STATE_DIR CONSOLE_TTY CHECKOUT SITE_PACKAGES
#
# STATE_DIR holds units/ (bound on /etc/systemd/system), etc-syncd/ (bound on /etc/syncd),
# passwd and group (lines added to /etc/passwd and /etc/group inside only) and cgroups (written
# here: the cgroup directories made for the namespace, for the caller to remove) and venv/, a
# virtual environment skeleton bound on /opt/syncd/.venv: its python is the host's, its
# site-packages adds /opt/syncd (CHECKOUT, bound there) and venv/deps (SITE_PACKAGES, the
# dependencies of the test's own environment, bound there).
# Nothing is written to the host's /etc, /opt, /run, /dev or /proc/sys; in /sys only the
# cgroups below, in /tmp only systemd's PrivateTmp= directories (removed at each stop).
set -eu

if [ "${1:-}" != --inside ]; then
    state=$1
    # Our own cgroup, one level down in every hierarchy: it becomes the root of the new cgroup
    # namespace, so systemd sorts its units into it and never touches the host's tree (as PID 1
    # it moves every process it finds in its root cgroup into init.scope).
    name=syncd-lane-$$
    : > "$state/cgroups"
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then  # the unified hierarchy alone
        path=$(sed -n 's/^0:://p' /proc/self/cgroup)
        new="/sys/fs/cgroup${path%/}/$name"
        mkdir "$new"
        echo "$new" >> "$state/cgroups"
        echo $$ > "$new/cgroup.procs"
    else  # v1 controllers, name=systemd, and perhaps the unified one beside them (hybrid)
        while IFS=: read -r _ controllers path; do
            case $controllers in
                "") dir=/sys/fs/cgroup/unified ;;
                name=systemd) dir=/sys/fs/cgroup/systemd ;;
                *) dir=/sys/fs/cgroup/${controllers#name=} ;;
            esac
            [ -d "$dir" ] || continue
            new="$dir${path%/}/$name"
            mkdir "$new"
            echo "$new" >> "$state/cgroups"
            for f in cpuset.cpus cpuset.mems; do
                [ -f "$new/$f" ] && cat "$dir${path%/}/$f" > "$new/$f"
            done
            echo $$ > "$new/cgroup.procs"
        done < /proc/self/cgroup
    fi
    exec unshare --pid --fork --mount-proc --mount --propagation private --cgroup --uts --ipc \
        /bin/sh "$0" --inside "$@"
fi

shift
state=$1 console=$2 checkout=$3 deps=$4

# /run, /dev: our own
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p "$state/dev"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$state/dev"
for node in null zero full random urandom tty; do
    touch "$state/dev/$node"
    mount --bind "/dev/$node" "$state/dev/$node"
done
touch "$state/dev/console"
mount --bind "$console" "$state/dev/console"   # systemd's own log lines: a pty the test reads
mkdir "$state/dev/pts" "$state/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$state/dev/pts"
ln -s pts/ptmx "$state/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$state/dev/shm"
ln -s /proc/self/fd "$state/dev/fd"
mount --move "$state/dev" /dev

# the kernel's knobs read-only, as in any container: systemd raises some sysctls at start
cgroup_fs=$(stat -fc %T /sys/fs/cgroup)
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi
mount --bind /sys /sys
mount -o remount,bind,ro /sys
# cgroups: mounted afresh, so their roots are the namespace's (see above)
if [ "$cgroup_fs" = cgroup2fs ]; then
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
else
    mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
    while IFS=: read -r _ controllers _; do
        case $controllers in
            "") mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified ;;
            name=systemd) mkdir /sys/fs/cgroup/systemd
                mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd ;;
            *) mkdir "/sys/fs/cgroup/$controllers"
                mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers" ;;
        esac
    done < /proc/self/cgroup
fi

# /etc: the host's, under a tmpfs overlay; the syncd user and /etc/syncd exist only in here
mkdir -p "$state/etc-overlay"
mount -t tmpfs -o mode=0700 tmpfs "$state/etc-overlay"
mkdir "$state/etc-overlay/upper" "$state/etc-overlay/work"
mount -t overlay overlay \
    -o "lowerdir=/etc,upperdir=$state/etc-overlay/upper,workdir=$state/etc-overlay/work" /etc
# A host where syncd is installed has a syncd user of its own: the first entry of a name wins,
# so the lane's (whose uid owns the lane's files) replaces it here, in the overlay only
for db in passwd group shadow gshadow; do
    if [ -e "/etc/$db" ]; then sed -i '/^syncd:/d' "/etc/$db"; fi
done
cat "$state/passwd" >> /etc/passwd
cat "$state/group" >> /etc/group
mkdir -p /etc/syncd /etc/systemd/system
mount --bind "$state/etc-syncd" /etc/syncd
mount --bind "$state/units" /etc/systemd/system
# the installation, where the unit expects it (README: a clone in /opt/syncd, its .venv)
mount -t tmpfs -o mode=0755 tmpfs /opt
mkdir -p /opt/syncd
mount --bind "$checkout" /opt/syncd
[ -d /opt/syncd/.venv ] || { echo "$checkout/.venv: no such directory (run make)" >&2; exit 1; }
mount --bind "$state/venv" /opt/syncd/.venv
mount --bind "$deps" /opt/syncd/.venv/deps

# A container to systemd (no clock, console or SELinux set-up), with only the units in
# /etc/systemd/system (SYSTEMD_UNIT_PATH: none of the distribution's sysinit units, which
# would set sysctls, register binfmts, or clean /tmp: the host's), and without the capability
# to load kernel modules or set the clock (systemd would load autofs4 and friends).
# Shared propagation inside (peers of nothing outside: the tree was made private first), as
# systemd sets it up on a host: LoadCredential= builds the credentials in a child mount
# namespace and mounts them on /run/credentials/<unit>, which reaches the manager's namespace
# only by propagation. With private mounts the service saw an empty directory, root's, 0700.
mount --make-rshared /
mkdir -p /run/systemd
echo syncd-lane > /run/systemd/container
exec setpriv --bounding-set=-sys_module,-sys_time \
    env -i container=syncd-lane PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    SYSTEMD_UNIT_PATH=/etc/systemd/system \
    /lib/systemd/systemd --system --unit=syncd-lane.target --show-status=no \
    --log-target=console --log-color=no
