# moed-cuda %preun: nothing to do before its files go (%postun restarts moed without them). This file
# stands in for moed's own %preun (stop and disable the service), which the variant would inherit.
:
