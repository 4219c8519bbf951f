# moed %post ($1: 1 = install, 2 = upgrade). Creates the moed user, enables the unit on install and
# starts it when systemd runs (not in a chroot or image build). Upgrades restart it in %postun.
systemd-sysusers /usr/lib/sysusers.d/moed.conf || :
if [ "$1" -eq 1 ]; then
    # Works without a running systemd: only creates the [Install] links.
    systemctl --no-reload enable moed.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # dbus-daemon notices the new bus policy only later by itself; the service must own its name.
    busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl start moed.service >/dev/null 2>&1 || :
    fi
fi
