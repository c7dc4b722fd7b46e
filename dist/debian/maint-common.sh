# Shared by bpfkill's maintainer scripts (installed as /usr/share/bpfkill/maint-common.sh).

# The host's init system: systemd, sysvinit (also OpenRC on Debian, which runs the same
# /etc/init.d script), or none (a container, a chroot: the package installs without starting).
bpfkill_init() {
    if [ -d /run/systemd/system ]; then
        echo systemd
    elif [ "$(cat /proc/1/comm 2>/dev/null)" = init ] && [ -x /etc/init.d/bpfkill ]; then
        echo sysvinit
    else
        echo none
    fi
}

# Set by the old version's prerm when an upgrade stopped a daemon that no init system
# restarts (a container): the new version's postinst starts it again.
BPFKILL_RESTART_MARK=/run/bpfkill.restart-after-upgrade

# Whether the daemon runs (started by the LSB script).
bpfkill_running() {
    [ -f /run/bpfkill.pid ] && kill -0 "$(cat /run/bpfkill.pid)" 2>/dev/null
}

# Stops the daemon however it was started; tracking stays loaded.
bpfkill_stop() {
    case "$(bpfkill_init)" in
        systemd) systemctl stop bpfkill.service || true ;;
        *) [ -x /etc/init.d/bpfkill ] && /etc/init.d/bpfkill stop || true ;;
    esac
}
