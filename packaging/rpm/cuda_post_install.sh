# moed-cuda: the drop-in takes effect, or stops taking effect, when moed.service starts again.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  systemctl try-restart moed.service >/dev/null 2>&1 || :
fi
