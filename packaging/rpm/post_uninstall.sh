# moed %postun ($1: 0 = erase, 1 = upgrade). Reloads systemd; after an upgrade restarts a running
# service on the new files. RPM has no purge: /var/lib/moed, /var/cache/moed and the moed user stay
# (Fedora's packaging guidelines never remove users); remove them by hand if wanted.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart moed.service >/dev/null 2>&1 || :
    fi
fi
