# moed %preun ($1: 0 = erase, 1 = upgrade). On erase: disable and stop the service.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable moed.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop moed.service >/dev/null 2>&1 || :
    fi
fi
