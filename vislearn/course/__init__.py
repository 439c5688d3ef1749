"""The course itself: figures and widgets (``viz``), the batch runner and its report, the ``vislearn`` command."""
