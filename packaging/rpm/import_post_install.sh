# moed-import %post: nothing to do. This file stands in for moed's own %post (enable and start the
# service), which the variant would inherit.
:
