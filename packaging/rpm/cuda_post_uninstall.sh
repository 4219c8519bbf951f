# moed-cuda %postun ($1: 0 = erase, 1 = upgrade): once erased, moed runs on the CPU library again
# after a restart (an upgrade's %post has restarted it already).
if [ -d /run/systemd/system ] && [ "$1" -eq 0 ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  systemctl try-restart moed.service >/dev/null 2>&1 || :
fi
