# moed-import %preun: on erase, the bytecode caches python3 leaves when run by hand as root on
# /usr/lib/moed/export (moectl runs it with -B). Stands in for moed's own %preun (stop the service).
if [ "$1" -eq 0 ]; then
  rm -rf /usr/lib/moed/export/moe_export/__pycache__ /usr/lib/moed/export/moe_export/graphs/__pycache__
fi
