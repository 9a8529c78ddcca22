"""Sandboxes the REPL runs in, behind one interface (``base.Sandbox``): ``local``
(bubblewrap) and ``docker``."""
