# moed-import %postun: nothing to do. This file stands in for moed's own %postun (restart the
# service), which the variant would inherit.
:
